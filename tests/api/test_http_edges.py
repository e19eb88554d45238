"""Requests that go wrong before any route runs: every answer is still a JSON error (CONTRACT 2).

A path or Host header that is not UTF-8, or a Host that cannot be a host
name, is refused by the resource in front of the routes; HTTP that
twisted.web's parser refuses (a broken request line, bad framing, a line
over its limit) is refused by the node's channel.  The node keeps answering
the next request as before.
"""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from chaincore.api.budgets import LOOPBACK, PEER, STRANGER, ConnectionTable
from chaincore.api.errors import render_error
from chaincore.api.guard import guard
from chaincore.api.site import make_site
from chaincore.core.errors import RateLimited

from ..support.api import APIClient, assert_error, funded_node


class BeforeRoutesTests(SynchronousTestCase):
    def setUp(self):
        self.client = APIClient(self, funded_node())

    def test_path_not_utf8(self):
        """A path whose percent escapes are not UTF-8 answers 400 JSON (malformed), as any bad parameter."""
        for path in ("/block/%ff%fe", "/balance/%ff", "/%c3"):
            assert_error(self, self.client.get(path), 400, "malformed")
        self.assertEqual(self.client.get("/status").status, 200)

    def test_host_not_utf8(self):
        """A Host header that is not UTF-8 answers 400 JSON (malformed)."""
        assert_error(self, self.client.get("/status", headers={b"Host": [b"\xff\xfe"]}), 400, "malformed")

    def test_host_not_a_host_name(self):
        """A Host header no host could have (a label over 63 characters) answers 400 JSON, not a 500 page."""
        for host in (b"a" * 64, b"a" * 5000 + b":5000"):
            assert_error(self, self.client.get("/status", headers={b"Host": [host]}), 400, "malformed")
        self.assertEqual(self.client.get("/status").status, 200)


def answer_to(data: bytes) -> tuple:
    """(status, headers, body) of what the node's Site writes back to data sent on a fresh connection."""
    site = make_site(Echo())
    site.reactor = Clock()
    address = IPv4Address("TCP", "127.0.0.1", 40000)
    proto = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    proto.makeConnection(transport)
    proto.dataReceived(data)
    if not transport.value():
        return None, {}, b""  # nothing written back
    head, _, body = transport.value().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


class Echo(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return b'{"ok": true}'


class FramingTests(SynchronousTestCase):
    """HTTP that twisted.web's parser refuses, answered as every other error: a JSON body, then the close."""

    def assert_json_refusal(self, data: bytes, status: int):
        code, headers, body = answer_to(data)
        self.assertEqual(code, status, body)
        self.assertEqual(headers.get(b"content-type"), b"application/json")
        self.assertEqual(headers.get(b"content-length"), b"%d" % len(body))
        self.assertIsInstance(json.loads(body)["error"], str)

    def test_bad_request_lines_and_headers(self):
        """A request line that is not HTTP, an unknown version, a bad Content-Length, two lengths, an unknown
        Transfer-Encoding or a broken chunk answer 400 JSON."""
        for data in (b"HELLO\r\n\r\n",
                     b"GET /status HTTP/9.9\r\nHost: x\r\n\r\n",
                     b"POST /add_transaction HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                     b"POST /add_transaction HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                     b"POST /add_transaction HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                     b"POST /add_transaction HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
            self.assert_json_refusal(data, 400)

    def test_request_line_too_long(self):
        """A request line over twisted.web's 16 kB line limit answers 414 JSON (it was cut off unanswered)."""
        self.assert_json_refusal(b"GET /block/" + b"a" * 17_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414)

    def test_header_too_long(self):
        """A header line over the line limit answers 431 JSON (it was cut off unanswered)."""
        self.assert_json_refusal(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 17_000 + b"\r\n\r\n", 431)

    def test_good_request_is_served(self):
        """A well-formed request on the same kind of connection is answered by the resource."""
        code, _, body = answer_to(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertEqual(code, 200)


def parsed(raw: bytes) -> tuple:
    """(status line, headers, JSON body) of one whole answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return lines[0], dict(line.lower().split(b": ", 1) for line in lines[1:]), json.loads(body)


class Throttled(Resource):
    isLeaf = True

    def render_GET(self, request):
        return render_error(request, RateLimited("too many bulk requests", 2.5))


class ErrorShapeTests(SynchronousTestCase):
    """Errors written outside the routes have the shape of the routes' own: {"error", "code"} (the OpenAPI
    document's description), and a 429 has its reason phrase."""

    def test_body_over_the_limit(self):
        """The site's 413 for a body over the limit carries the code too-large."""
        site = make_site(Echo(), max_body_bytes=10)
        site.reactor = Clock()
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        proto, transport = site.buildProtocol(address), StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        proto.dataReceived(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n")
        line, _, body = parsed(transport.value())
        self.assertEqual(line, b"HTTP/1.1 413 Payload Too Large")
        self.assertEqual(body["code"], "too-large")

    def test_connection_guard_answers(self):
        """The guard's 429 (connections of one address), 503 (all connections) and 408 (headers too slow)
        carry the codes rate-limited, unavailable and header-timeout."""
        clock = Clock()
        caps = {LOOPBACK: 1, PEER: 1, STRANGER: 1}
        site = make_site(Echo())
        site.reactor = clock  # the connections' idle timeouts too: none may be left on the real reactor
        factory = guard(site, clock, connections=ConnectionTable(max_total=2, per_address=caps, reserved=0))

        def connect(host):
            address = IPv4Address("TCP", host, 40000)
            proto, transport = factory.buildProtocol(address), StringTransport(peerAddress=address)
            proto.makeConnection(transport)
            return proto, transport

        slow, slow_transport = connect("198.18.0.1")
        connect("198.18.0.2")
        codes = {}
        for host in ("198.18.0.1", "198.18.0.3"):
            line, headers, body = parsed(connect(host)[1].value())
            codes[line] = body["code"]
            self.assertIn(b"retry-after", headers)
        slow.dataReceived(b"GET / HTTP/1.1\r\n")
        clock.advance(60)
        line, _, body = parsed(slow_transport.value())
        codes[line] = body["code"]
        self.assertEqual(codes, {b"HTTP/1.1 429 Too Many Requests": "rate-limited",
                                 b"HTTP/1.1 503 Service Unavailable": "unavailable",
                                 b"HTTP/1.1 408 Request Timeout": "header-timeout"})

    def test_rate_limited_reason_phrase(self):
        """A 429 from the routes says Too Many Requests in its status line (twisted.web knows no phrase for it)."""
        site = make_site(Throttled())
        site.reactor = Clock()
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        proto, transport = site.buildProtocol(address), StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        proto.dataReceived(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), transport.value()[:60])
        self.assertIn(b"\r\nRetry-After: 3\r\n", transport.value())
