"""The connection guard: caps per address and in total, header deadlines, minimum body rate.

Budgets are driven by a task.Clock over StringTransports; the last tests run
real loopback sockets against the real reactor with short deadlines.
"""

import json

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from chaincore.api.budgets import LOOPBACK, PEER, STRANGER, ConnectionTable
from chaincore.api.guard import guard
from chaincore.api.site import make_site
from tests.support.sockets import RawClients
from tests.support.waiting import wait_until

STRANGER_HOST = "198.18.0.1"
CAPS = {LOOPBACK: 3, PEER: 3, STRANGER: 2}


class Echo(Resource):
    """GET answers JSON at once, or never for /slow (kept in `pending`); POST answers the body's length."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.pending = []

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/slow":
            self.pending.append(request)
            return NOT_DONE_YET
        return b'{"ok": true}'

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"got": len(request.content.read())}).encode()


def guarded(clock, resource=None, **options):
    """A guarded Site on clock: headers within 10 s, bodies 1,000 bytes a second after 5 s, idle 30 s."""
    site = make_site(resource or Echo(), timeout_s=30)
    site.reactor = clock
    options.setdefault("connections", ConnectionTable(max_total=5, per_address=CAPS, reserved=1))
    return guard(site, clock, header_timeout_s=10, body_grace_s=5, body_min_bytes_per_s=1000, **options)


def connect(factory, host=STRANGER_HOST, port=40000):
    address = IPv4Address("TCP", host, port)
    proto = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def closed(proto):
    proto.connectionLost(Failure(ConnectionDone()))


def status_of(transport) -> int:
    return int(transport.value().split(b" ", 2)[1])


class DeadlineTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.refusals = []
        self.factory = guarded(self.clock, on_refusal=self.refusals.append)

    def test_complete_request_is_answered(self):
        """A request sent whole is answered as without the guard, and no deadline fires afterwards."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        self.assertEqual(status_of(transport), 200)
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.refusals, [])

    def test_trickled_headers_are_cut_at_the_deadline(self):
        """Headers trickled a byte a second are answered 408 and closed 10 s after their first byte."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"GET / HTTP/1.1\r\n")
        for _ in range(9):
            self.clock.advance(1)
            proto.dataReceived(b"X")
        self.clock.advance(0.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertEqual(status_of(transport), 408)
        self.assertIn(b'"error"', transport.value())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.refusals, ["header-timeout"])

    def test_idle_keep_alive_is_the_sites_timeout(self):
        """A kept-alive connection that sends nothing is closed by the idle timeout (30 s), not as a late header."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        transport.clear()
        self.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual((transport.value(), self.refusals), (b"", []))

    def test_next_request_on_a_kept_alive_connection_has_its_own_deadline(self):
        """The header deadline of a second request runs from its own first byte."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        self.clock.advance(8)
        proto.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(self.refusals, ["header-timeout"])

    def test_slow_body_is_cut(self):
        """A body sent at 100 bytes a second passes the 5 s grace, then is answered 408 at the next check."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 100000\r\n\r\n")
        for _ in range(5):
            proto.dataReceived(b"x" * 100)
            self.clock.advance(1)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"x" * 100)
        self.clock.advance(1)
        self.assertEqual(status_of(transport), 408)
        self.assertEqual(self.refusals, ["body-too-slow"])

    def test_body_at_the_rate_is_served(self):
        """A 20,000-byte body sent at 2,000 bytes a second is read to the end and answered."""
        proto, transport = connect(self.factory)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 20000\r\n\r\n")
        for _ in range(10):
            self.clock.advance(1)
            proto.dataReceived(b"x" * 2000)
        self.assertEqual(status_of(transport), 200)
        self.assertIn(b'{"got": 20000}', transport.value())
        self.assertEqual(self.refusals, [])

    def test_a_request_being_answered_has_no_deadline(self):
        """While the node works on an answer, neither deadline runs; the answer goes out when ready."""
        echo = Echo()
        factory = guarded(self.clock, echo, on_refusal=self.refusals.append)
        proto, transport = connect(factory)
        proto.dataReceived(b"GET /slow HTTP/1.1\r\nHost: node\r\n\r\n")
        self.clock.advance(120)
        self.assertEqual((transport.value(), transport.disconnecting, self.refusals), (b"", False, []))
        request = echo.pending.pop()
        request.write(b'{"late": true}')
        request.finish()
        self.assertEqual(status_of(transport), 200)


class ConnectionCapTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.refusals = []
        self.factory = guarded(self.clock, on_refusal=self.refusals.append)

    def test_per_address_cap(self):
        """A stranger's third connection is answered 429 with Retry-After and closed; closing one makes room."""
        first, _ = connect(self.factory)
        connect(self.factory)
        _, refused = connect(self.factory)
        self.assertEqual(status_of(refused), 429)
        self.assertIn(b"Retry-After: 5", refused.value())
        self.assertIn(b"too many connections", refused.value())
        self.assertTrue(refused.disconnecting)
        self.assertEqual(self.refusals, ["per-address"])
        closed(first)
        _, admitted = connect(self.factory)
        self.assertEqual((admitted.value(), self.factory.connections.count(STRANGER_HOST)), (b"", 2))

    def test_close_connections(self):
        """close_connections aborts every admitted connection, kept-alive ones included (for a stopping node)."""
        transports = [connect(self.factory, host=f"198.18.0.{n}")[1] for n in range(3)]
        self.factory.close_connections()
        self.assertTrue(all(t.disconnected for t in transports))

    def test_total_cap_with_room_for_the_operator(self):
        """Strangers get 4 of 5 places, then 503; the operator still gets the last place, then 503 too."""
        for n in range(4):
            connect(self.factory, host=f"198.18.0.{n + 10}")
        _, stranger = connect(self.factory, host="198.18.0.99")
        self.assertEqual(status_of(stranger), 503)
        _, operator = connect(self.factory, host="127.0.0.1")
        self.assertEqual(operator.value(), b"")
        _, late = connect(self.factory, host="127.0.0.1")
        self.assertEqual(status_of(late), 503)
        self.assertEqual(self.refusals, ["total", "total"])

    def test_known_peers_have_their_own_cap(self):
        """With a classifier that knows a peer, that address gets the peer cap (3), not the stranger's (2)."""
        factory = guarded(self.clock, classify=lambda host: PEER if host == "198.18.9.9" else STRANGER)
        answers = [connect(factory, host="198.18.9.9")[1] for _ in range(4)]
        self.assertEqual([t.value()[:12] for t in answers], [b"", b"", b"", b"HTTP/1.1 429"])

    def test_refused_connection_is_aborted_if_it_lingers(self):
        """A refused client that never closes is aborted after a second."""
        for _ in range(2):
            connect(self.factory)
        _, refused = connect(self.factory)
        self.assertFalse(refused.disconnected)
        self.clock.advance(1)
        self.assertTrue(refused.disconnected)

    def test_places_come_back_when_connections_close(self):
        """Every admitted connection gives its place back when it closes, also after a deadline closed it."""
        protos = [connect(self.factory)[0] for _ in range(2)]
        protos[0].dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(10)
        for proto in protos:
            closed(proto)
        self.assertEqual((self.factory.connections.total, len(self.factory.connections)), (0, 0))


class SocketTests(RawClients, TestCase):
    """A guarded Site on a loopback port, with deadlines short enough for a test."""

    async def start(self, **options):
        options.setdefault("connections", ConnectionTable(per_address={LOOPBACK: 3, PEER: 3, STRANGER: 3}))
        site = make_site(Echo(), timeout_s=30)
        self.factory = guard(site, reactor, **options)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def test_slow_headers_are_cut(self):
        """Headers trickled over a real socket get 408 and a close at the header deadline."""
        await self.start(header_timeout_s=0.5)
        client = await self.client()
        client.transport.write(b"GET / HTTP/1.1\r\n")
        self.trickle(client, b"X")
        await wait_until(lambda: client.done.called, 5, what="the slow client to be closed")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408"))
        self.assertEqual(self.factory.refusals, {"header-timeout": 1})

    async def test_slow_body_is_cut(self):
        """A body trickled over a real socket below the minimum rate gets 408 and a close after the grace."""
        await self.start(body_grace_s=0.3, body_min_bytes_per_s=5000)
        client = await self.client()
        client.transport.write(b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 1000000\r\n\r\n")
        self.trickle(client, b"x" * 10)
        await wait_until(lambda: client.done.called, 5, what="the slow body to be cut")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408"))
        self.assertEqual(self.factory.refusals, {"body-too-slow": 1})

    async def test_per_address_cap(self):
        """A fourth connection from 127.0.0.1 gets 429 and a close; the three held still serve a request."""
        await self.start()
        held = [await self.client() for _ in range(3)]
        extra = await self.client()
        await wait_until(lambda: extra.done.called, 5, what="the extra connection to be refused")
        self.assertTrue(extra.received.startswith(b"HTTP/1.1 429"))
        held[0].transport.write(b"GET / HTTP/1.1\r\nHost: node\r\n\r\n")
        await wait_until(lambda: b'{"ok": true}' in held[0].received, 5, what="the answer on a held connection")
        self.assertTrue(held[0].received.startswith(b"HTTP/1.1 200"))
        self.assertFalse(any(c.done.called for c in held))
