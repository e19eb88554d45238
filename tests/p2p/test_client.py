"""PeerClient: headers, JSON errors, deadlines, byte caps, concurrency caps and traffic counters.

Most tests run over FakeNetwork with a Clock; the body cap and the body
deadline are checked over real loopback sockets, where leaking a connection
would leave trial's reactor dirty.
"""

import json

from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from twisted.web._newclient import RequestGenerationFailed
from twisted.python.failure import Failure

from chaincore.core import jsonview, wire
from chaincore.core.errors import Malformed, PeerUnreachable
from chaincore.core.params import REGTEST
from chaincore.p2p.client import (
    BinaryAnswer, PeerClient, answer_height, blocks_from_answer, fetch_blocks, fetch_headers, headers_from_answer,
    pooled_http_client,
)
from tests.support.builders import regtest_chain

from .fakes import FakeNetwork, FakePeer
from tests.support.waiting import wait_until

ME = "http://localhost:5000"
A = "http://localhost:5001"


class FakeNetworkClientTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.network = Clock(), FakeNetwork()
        self.peer = self.network.add(FakePeer(A))
        self.client = PeerClient(self.network.client(), self.clock, ME)

    def test_get_sends_peer_header_and_parses_json(self):
        """A GET carries X-ChainCore-Peer with our URL and fires with (200, the JSON object)."""
        code, status = self.successResultOf(self.client.get_json(A, "/status"))
        self.assertEqual((code, status["node_id"]), (200, "node-5001"))
        self.assertEqual(self.peer.requests, [("GET", "/status", ME, b"")])

    def test_post_sends_json_body_and_headers(self):
        """A POST carries the JSON body, Content-Type application/json and the peer header."""
        self.peer.canned["/submit_block"] = (202, b'{"status": "orphan"}')
        code, answer = self.successResultOf(self.client.post_json(A, "/submit_block", {"block": {"index": 1}}))
        self.assertEqual((code, answer), (202, {"status": "orphan"}))
        method, path, header, body = self.peer.requests[-1]
        self.assertEqual((method, path, header), ("POST", "/submit_block", ME))
        self.assertEqual(json.loads(body), {"block": {"index": 1}})

    def test_post_content_type(self):
        """The POST's Content-Type header is application/json."""
        types = []

        class Recorder(Resource):
            isLeaf = True

            def render_POST(self, request):
                types.append(request.getHeader("Content-Type"))
                return b"{}"

        network = FakeNetwork()
        peer = FakePeer(A)
        peer.resource = Recorder
        network.add(peer)
        client = PeerClient(network.client(), self.clock, ME)
        self.successResultOf(client.post_json(A, "/add_transaction", {"transaction": {}}))
        self.assertEqual(types, ["application/json"])

    def test_error_answers_are_returned_with_their_code(self):
        """A 4xx with a JSON object is an answer, not a failure."""
        code, answer = self.successResultOf(self.client.get_json(A, "/nothing"))
        self.assertEqual(code, 404)
        self.assertIn("error", answer)

    def test_garbage_is_malformed(self):
        """A body that is not JSON, JSON that is not an object, or NaN is Malformed, naming the peer."""
        for raw in [b"<html>hi</html>", b"[1, 2]", b'"text"', b'{"x": NaN}', b"", b"\xff\xfe"]:
            self.peer.canned["/status"] = (200, raw)
            err = self.failureResultOf(self.client.get_json(A, "/status"), Malformed).value
            self.assertIn(A, str(err))

    def test_deep_nesting_is_malformed(self):
        """An answer nested 100,000 deep is Malformed (measured before parsing), not a RecursionError."""
        self.peer.canned["/status"] = (200, b"[" * 100_000 + b"]" * 100_000)
        err = self.failureResultOf(self.client.get_json(A, "/status"), Malformed).value
        self.assertIn("nested", str(err))

    def test_refused_connection_is_unreachable(self):
        """Nobody listening gives PeerUnreachable naming the peer."""
        err = self.failureResultOf(self.client.get_json("http://localhost:5009", "/status"),
                                   PeerUnreachable).value
        self.assertIn("http://localhost:5009", str(err))

    def test_post_whose_body_could_not_be_written_is_unreachable(self):
        """A POST cancelled while its body is written (a peer that stalls the upload past the deadline) fails
        as PeerUnreachable, not as an error nobody handles."""
        class Failing:
            def request(self, *args, **kwargs):
                return defer.fail(RequestGenerationFailed([Failure(defer.CancelledError())]))

        client = PeerClient(Failing(), self.clock, ME)
        err = self.failureResultOf(client.post_binary(A, "/announce", b"x" * 120), PeerUnreachable).value
        self.assertIn(A, str(err))

    def test_bad_peer_url_is_unreachable(self):
        """A URL that is not a base URL fails as PeerUnreachable without a request."""
        self.failureResultOf(self.client.get_json("ftp://x:1", "/status"), PeerUnreachable)

    def test_status_uses_the_health_timeout(self):
        """status() gives up after exactly 2 s when no headers come."""
        self.peer.stalled.add("/status")
        d = self.client.status(A)
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        err = self.failureResultOf(d, PeerUnreachable).value
        self.assertIn("within 2.0 s", str(err))

    def test_data_requests_use_five_seconds(self):
        """get_json waits 5 s by default before giving up."""
        self.peer.stalled.add("/chain")
        d = self.client.get_json(A, "/chain")
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, PeerUnreachable)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_status_other_than_200_is_unreachable(self):
        """status() treats a non-200 answer as no usable answer."""
        self.peer.canned["/status"] = (503, b'{"error": "starting"}')
        self.failureResultOf(self.client.status(A), PeerUnreachable)

    def test_cap_from_content_length(self):
        """An answer longer than max_bytes is refused as PeerUnreachable."""
        self.peer.canned["/chain"] = (200, b'{"chain": "' + b"x" * 5000 + b'"}')
        err = self.failureResultOf(self.client.get_json(A, "/chain", max_bytes=1000), PeerUnreachable).value
        self.assertIn("bytes", str(err))

    def test_concurrency_per_peer_is_capped(self):
        """At most max_per_peer requests to one peer are in flight; the rest wait their turn."""
        client = PeerClient(self.network.client(), self.clock, ME, max_per_peer=2)
        self.peer.stalled.add("/slow")
        ds = [client.get_json(A, "/slow") for _ in range(5)]
        self.assertEqual(len(self.peer.requests), 2)
        self.clock.advance(5)
        self.network.flush()
        self.assertEqual(len(self.peer.requests), 4)
        for d in ds[:2]:
            self.failureResultOf(d, PeerUnreachable)
        self.clock.advance(5)
        self.network.flush()
        self.clock.advance(5)
        self.network.flush()
        self.assertEqual(len(self.peer.requests), 5)
        for d in ds[2:]:
            self.failureResultOf(d, PeerUnreachable)

    def test_concurrency_in_total_is_capped(self):
        """At most max_total requests are in flight over all peers."""
        other = self.network.add(FakePeer("http://localhost:5002"))
        client = PeerClient(self.network.client(), self.clock, ME, max_per_peer=4, max_total=3)
        for peer in (self.peer, other):
            peer.stalled.add("/slow")
        for _ in range(2):
            client.get_json(A, "/slow")
            client.get_json(other.url, "/slow")
        self.assertEqual(len(self.peer.requests) + len(other.requests), 3)

    def test_traffic_counters(self):
        """Bytes sent and received are counted per peer, bodies only."""
        self.successResultOf(self.client.post_json(A, "/x", {"a": 1}))
        self.assertEqual(self.client.bytes_sent(A), len(b'{"a":1}'))
        received = self.client.bytes_received(A)
        self.assertGreater(received, 0)
        self.successResultOf(self.client.get_json(A, "/status"))
        self.assertGreater(self.client.bytes_received(A), received)
        self.assertEqual(self.client.traffic(A).requests, 2)
        self.assertEqual(self.client.traffic("http://localhost:5009").requests, 0)
        self.assertEqual(self.client.total_traffic().requests, 2)


class _Huge(Resource):
    """Answers with exactly `size` bytes of JSON, in 64 kB writes, with or without Content-Length."""

    isLeaf = True

    def __init__(self, size, announce):
        super().__init__()
        self.size, self.announce = size, announce

    def render_GET(self, request):
        if self.announce:
            request.setHeader(b"Content-Length", str(self.size).encode())
        request.write(b'{"x":"')
        left = self.size - 8
        while left > 0:
            request.write(b"x" * min(left, 65536))
            left -= 65536
        request.write(b'"}')
        request.finish()
        return NOT_DONE_YET


class _StallAfterHeaders(Resource):
    """Sends the headers and the first byte of the body, then nothing."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.lost = []

    def render_GET(self, request):
        request.setHeader(b"Content-Length", b"1000")
        request.write(b"{")
        request.notifyFinish().addErrback(self.lost.append)
        return NOT_DONE_YET


class _GzipBomb(Resource):
    """Answers with a gzip body that would inflate to `size` bytes of JSON."""

    isLeaf = True

    def __init__(self, size):
        super().__init__()
        import gzip
        self.body = gzip.compress(b'{"x":"' + b"x" * size + b'"}')
        self.size = size

    def render_GET(self, request):
        request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Connection", b"close")  # the refusal must not depend on keep-alive timing
        return self.body


class LoopbackClientTests(TestCase):
    """Real sockets: the cap and the body deadline abort the connection and leave the reactor clean."""

    @defer.inlineCallbacks
    def serve(self, resource):
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(resource))
        self.addCleanup(port.stopListening)
        http, pool = pooled_http_client(reactor)
        self.addCleanup(pool.closeCachedConnections)
        client = PeerClient(http, reactor, ME)
        return client, "http://127.0.0.1:%d" % port.getHost().port

    @defer.inlineCallbacks
    def test_huge_body_without_length_is_cut_off(self):
        """A 5 MB chunked answer is aborted at the cap: PeerUnreachable, and little more than the cap is read."""
        client, url = yield self.serve(_Huge(5_000_000, announce=False))
        with self.assertRaises(PeerUnreachable) as cm:
            yield client.get_json(url, "/chain", max_bytes=100_000)
        self.assertIn("over 100000 bytes", str(cm.exception))
        self.assertLess(client.bytes_received(url), 1_000_000)

    @defer.inlineCallbacks
    def test_announced_huge_body_is_refused_before_reading(self):
        """A Content-Length over the cap is refused without reading the body."""
        client, url = yield self.serve(_Huge(5_000_000, announce=True))
        with self.assertRaises(PeerUnreachable) as cm:
            yield client.get_json(url, "/chain", max_bytes=100_000)
        self.assertIn("announced", str(cm.exception))
        self.assertLess(client.bytes_received(url), 100_000)

    @defer.inlineCallbacks
    def test_stalled_body_times_out(self):
        """Headers then silence: the deadline covers the body, and the connection is closed."""
        stall = _StallAfterHeaders()
        client, url = yield self.serve(stall)
        started = reactor.seconds()
        with self.assertRaises(PeerUnreachable) as cm:
            yield client.get_json(url, "/chain", timeout_s=0.3)
        self.assertIn("within 0.3 s", str(cm.exception))
        self.assertGreaterEqual(reactor.seconds() - started, 0.29)
        self.assertLess(reactor.seconds() - started, 2)
        yield defer.ensureDeferred(wait_until(lambda: stall.lost, 5, what="the stalled connection to close"))
        self.assertEqual(len(stall.lost), 1)

    @defer.inlineCallbacks
    def test_compressed_answer_is_refused_unread(self):
        """A gzip answer (here one that would inflate to 50 MB) is refused before anything is inflated."""
        bomb = _GzipBomb(50_000_000)
        client, url = yield self.serve(bomb)
        with self.assertRaises(PeerUnreachable) as cm:
            yield client.get_json(url, "/chain", max_bytes=100_000)
        self.assertIn("compressed answers are refused", str(cm.exception))
        self.assertEqual(client.bytes_received(url), 0)

    @defer.inlineCallbacks
    def test_refused_port(self):
        """A closed port gives PeerUnreachable at once."""
        client, url = yield self.serve(Resource())
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(Resource()))
        closed = "http://127.0.0.1:%d" % port.getHost().port
        yield port.stopListening()
        with self.assertRaises(PeerUnreachable):
            yield client.status(closed)

    @defer.inlineCallbacks
    def test_keep_alive_connection_is_reused(self):
        """Two calls in a row succeed over the pool, and the answer is the parsed object."""
        client, url = yield self.serve(_Huge(10, announce=True))
        for _ in range(2):
            code, answer = yield client.get_json(url, "/x")
            self.assertEqual((code, answer), (200, {"x": "xx"}))
        self.assertEqual(client.traffic(url).requests, 2)


class BinaryTransferTests(SynchronousTestCase):
    """get_binary and post_binary: canonical bytes where the peer takes them, JSON where it does not."""

    def setUp(self):
        self.clock, self.network = Clock(), FakeNetwork()
        self.peer = self.network.add(FakePeer(A))
        self.client = PeerClient(self.network.client(), self.clock, ME)
        self.chain = regtest_chain(3)

    def test_binary_answer_is_decoded_from_the_bytes(self):
        """An octet-stream /blocks answer fires as a BinaryAnswer whose blocks hash the bytes received."""
        framed = wire.encode_blocks(self.chain[1:])
        self.peer.canned["/blocks"] = (200, framed, {"Content-Type": wire.MEDIA_TYPE, "X-ChainCore-Height": "3"})
        code, answer = self.successResultOf(self.client.get_binary(A, "/blocks", {"start": "1"}))
        self.assertEqual((code, answer), (200, BinaryAnswer(framed, 3)))
        blocks = blocks_from_answer(answer, REGTEST.max_block_size)
        self.assertEqual([b.hash for b in blocks], [b.hash for b in self.chain[1:]])
        self.assertEqual(answer_height(answer), 3)

    def test_catch_up_reads_binary_headers_and_their_more(self):
        """fetch_headers takes an octet-stream answer, and X-ChainCore-More says whether the peer has more."""
        framed = wire.encode_headers(b.header for b in self.chain[1:])
        for said, more in (("true", True), ("false", False), (None, False)):
            extra = {"X-ChainCore-More": said} if said else {}
            self.peer.canned["/headers"] = (200, framed, {"Content-Type": wire.MEDIA_TYPE, **extra})
            headers, got = self.successResultOf(fetch_headers(self.client, A, [self.chain[0].hash]))
            self.assertEqual([h.hash for h in headers], [b.hash for b in self.chain[1:]])
            self.assertIs(got, more)

    def test_catch_up_refuses_bad_binary_blocks_as_malformed(self):
        """fetch_blocks turns cut-short framed bytes into Malformed naming the peer, so it is penalised."""
        self.peer.canned["/blocks"] = (200, wire.encode_blocks(self.chain[1:])[:-1], {"Content-Type": wire.MEDIA_TYPE})
        err = self.failureResultOf(fetch_blocks(self.client, A, 1, 3, 1_000_000), Malformed).value
        self.assertIn(A, str(err))

    def test_asks_for_bytes_and_still_takes_json(self):
        """get_binary sends Accept octet-stream (JSON at a lower q); a JSON answer fires as its dict."""
        accepts = []

        class Recorder(Resource):
            isLeaf = True

            def render_GET(self, request):
                accepts.append(request.getHeader("Accept"))
                request.setHeader("Content-Type", "application/json")
                return json.dumps({"headers": [jsonview.header_to_json(b.header) for b in chain[1:]],
                                   "height": 3}).encode()

        chain = self.chain
        network = FakeNetwork()
        peer = FakePeer(A)
        peer.resource = Recorder
        network.add(peer)
        client = PeerClient(network.client(), self.clock, ME)
        code, answer = self.successResultOf(client.get_binary(A, "/headers"))
        self.assertEqual(accepts, ["application/octet-stream, application/json;q=0.5"])
        self.assertIsInstance(answer, dict)
        self.assertEqual([h.hash for h in headers_from_answer(answer)], [b.hash for b in chain[1:]])
        self.assertEqual(answer_height(answer), 3)

    def test_json_error_stays_json(self):
        """A 404 JSON error to a binary request fires with (404, the error dict)."""
        code, answer = self.successResultOf(self.client.get_binary(A, "/nowhere"))
        self.assertEqual(code, 404)
        self.assertIn("error", answer)

    def test_bad_bytes_are_malformed(self):
        """Framed bytes that are cut short are Malformed when turned into blocks."""
        framed = wire.encode_blocks(self.chain[1:])[:-1]
        self.peer.canned["/blocks"] = (200, framed, {"Content-Type": wire.MEDIA_TYPE})
        _, answer = self.successResultOf(self.client.get_binary(A, "/blocks"))
        self.assertRaises(Malformed, blocks_from_answer, answer, REGTEST.max_block_size)

    def test_post_binary_sends_the_bytes(self):
        """post_binary sends the bytes unchanged with Content-Type octet-stream and reads the JSON answer."""
        types = []

        class Recorder(Resource):
            isLeaf = True

            def render_POST(self, request):
                types.append((request.getHeader("Content-Type"), request.content.read()))
                request.setHeader("Content-Type", "application/json")
                return b'{"status": "accepted"}'

        network = FakeNetwork()
        peer = FakePeer(A)
        peer.resource = Recorder
        network.add(peer)
        client = PeerClient(network.client(), self.clock, ME)
        block = self.chain[2]
        code, answer = self.successResultOf(client.post_binary(A, "/submit_block", block.raw))
        self.assertEqual((code, answer), (200, {"status": "accepted"}))
        self.assertEqual(types, [(wire.MEDIA_TYPE, block.raw)])
        self.assertEqual(client.traffic(A).bytes_sent, len(block.raw))


class CloseTests(SynchronousTestCase):
    def test_requests_waiting_their_turn_never_start_after_close(self):
        """A request queued behind the per-peer cap when the client closes fails unsent, so nothing is left open."""
        clock, network = Clock(), FakeNetwork()
        peer = network.add(FakePeer(A))
        peer.stalled.add("/slow")
        client = PeerClient(network.client(), clock, ME, max_per_peer=1)
        first = client.get_json(A, "/slow")
        waiting = client.get_binary(A, "/blocks")
        self.assertEqual([path for _, path, _, _ in peer.requests], ["/slow"])
        client.close()
        self.failureResultOf(first, PeerUnreachable)
        self.failureResultOf(waiting, PeerUnreachable)
        self.assertEqual([path for _, path, _, _ in peer.requests], ["/slow"])
