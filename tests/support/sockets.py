"""Raw loopback clients for tests that talk to a real listening port byte by byte (slow clients, caps)."""

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol


class Client(Protocol):
    """A raw client that records what it receives and fires `done` when the connection closes."""

    def __init__(self):
        self.received = b""
        self.done = Deferred()

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(None)


class RawClients:
    """A TestCase mixin: `client()` connects to `self.port` on loopback, `trickle()` sends bytes slowly;
    both clean up after the test."""

    async def client(self) -> Client:
        client = Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), client)
        self.addCleanup(lambda: None if client.done.called else client.transport.abortConnection() or client.done)
        return client

    def trickle(self, client, data: bytes, interval_s: float = 0.05):
        """Write data to client every interval_s until the connection closes."""
        loop = task.LoopingCall(client.transport.write, data)
        loop.start(interval_s)
        client.done.addBoth(lambda _: loop.stop() if loop.running else None)
        self.addCleanup(lambda: loop.stop() if loop.running else None)
