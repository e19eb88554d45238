"""A ProcessProtocol that keeps a child's output and tells when it ended, for tests that run real processes."""

import os

from twisted.internet import defer, protocol


class OutputProcess(protocol.ProcessProtocol):
    """A child process: `output` holds its stdout and stderr; `ended` fires with the exit reason."""

    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)

    def log(self, limit: int = 3000) -> str:
        """The last `limit` characters of the output, as text."""
        return self.output.decode(errors="replace")[-limit:]

    async def stop(self, grace_s: float = 10) -> bool:
        """SIGTERM, then SIGKILL after grace_s; whether it ended on SIGTERM (True if it had ended already)."""
        from .waiting import wait_until  # beside this module; imported here so the module stays dependency-free
        if self.ended.called:
            return True
        self.transport.signalProcess("TERM")
        try:
            await wait_until(lambda: self.ended.called, grace_s)
            return True
        except TimeoutError:
            self.transport.signalProcess("KILL")
            await self.ended
            return False


CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child_env(**extra) -> dict:
    """This process's environment for a child process, with the checkout first on PYTHONPATH."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [CHECKOUT, env.get("PYTHONPATH")]))
    return env


def node_http_client(testcase, connect_timeout_s: float = 2):
    """A treq HTTPClient for a test that talks to real nodes: no kept-alive connections, closed at cleanup."""
    from treq.client import HTTPClient
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool
    pool = HTTPConnectionPool(reactor, persistent=False)
    testcase.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool, connectTimeout=connect_timeout_s))
