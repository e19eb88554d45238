"""`GET /events` (CONTRACT 7): numbered Server-Sent Events, resume with Last-Event-ID, clean disconnects.

The hub is driven with a small request fake we own (it records what is
written and lets a test end the connection); one test goes through a real
listening site on loopback to show the stream as a client sees it.
"""

import json

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chaincore.api.events import MAX_BACKLOG_BYTES, EventHub, HeartbeatService
from chaincore.api.site import make_site
from chaincore.api.routes import NodeAPI
from chaincore.core.params import REGTEST

from ..support.nodes import settled
from ..support.api import funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx
from ..support.waiting import wait_until


class FakeRequest:
    """Records what an SSE answer writes; `disconnect()` is the client going away."""

    def __init__(self):
        self.code = None
        self.headers = {}
        self.written = b""
        self.finished = defer.Deferred()
        self.producer = None
        self.transport = self  # abortConnection() below is the transport's

    def registerProducer(self, producer, streaming):
        self.producer = producer

    def unregisterProducer(self):
        self.producer = None

    def abortConnection(self):
        self.aborted = True
        self.disconnect()

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name.lower()] = value

    def write(self, data):
        self.written += data

    def notifyFinish(self):
        return self.finished

    def disconnect(self):
        self.finished.errback(ConnectionError("gone"))

    def events(self):
        """[(id or None, event, data)] parsed from what was written."""
        out = []
        for block in self.written.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":"))
            if "event" in fields:
                out.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
        return out


class HubTests(SynchronousTestCase):
    def test_client_that_stops_reading_is_cut(self):
        """A stream whose client stops reading queues at most MAX_BACKLOG_BYTES, then is cut and dropped;
        a client that reads again before that keeps its stream."""
        hub, slow, reader = EventHub(run="r"), FakeRequest(), FakeRequest()
        hub.open(slow, None)
        hub.open(reader, None)
        slow.producer.pauseProducing()
        reader.producer.pauseProducing()
        reader.producer.resumeProducing()
        payload = {"pad": "x" * 1000}
        for _ in range(MAX_BACKLOG_BYTES // 1000 + 10):
            hub.publish("tx", payload)
        self.assertTrue(getattr(slow, "aborted", False))
        self.assertEqual(hub.streams, {s for s in hub.streams if s.request is reader})
        self.assertEqual(len(hub.streams), 1)
        written = len(slow.written)
        hub.publish("tx", payload)
        self.assertEqual(len(slow.written), written)  # nothing more for a cut stream

    def test_stream_gets_new_events_with_ids(self):
        """An open stream is an event-stream answer that receives each event with its id."""
        hub, request = EventHub(run="r"), FakeRequest()
        hub.open(request, None)
        hub.publish("block", {"height": 1})
        hub.publish("tx", {"tx_id": "ab"})
        self.assertEqual(request.code, 200)
        self.assertTrue(request.headers[b"content-type"].startswith(b"text/event-stream"))
        self.assertEqual(request.events(), [("r-1", "block", {"height": 1}), ("r-2", "tx", {"tx_id": "ab"})])

    def test_resume_sends_what_was_missed(self):
        """A client reconnecting with Last-Event-ID gets the events after it, and no others."""
        hub = EventHub(run="r")
        for n in range(1, 6):
            hub.publish("block", {"height": n})
        request = FakeRequest()
        hub.open(request, "r-3")
        self.assertEqual([e[0] for e in request.events()], ["r-4", "r-5"])

    def test_resume_past_the_ring_reports_a_gap(self):
        """An id older than the ring holds gives a `gap` event, then everything the ring still has."""
        hub = EventHub(ring_size=3, run="r")
        for n in range(1, 8):
            hub.publish("block", {"height": n})
        request = FakeRequest()
        hub.open(request, "r-2")
        events = request.events()
        self.assertEqual(events[0][:2], (None, "gap"))
        self.assertIn("2 events", events[0][2]["reason"])
        self.assertEqual([e[0] for e in events[1:]], ["r-5", "r-6", "r-7"])

    def test_id_from_another_run_reports_a_gap(self):
        """An id from before a restart (another run) is never taken for a recent one."""
        hub = EventHub(run="new")
        hub.publish("block", {"height": 1})
        request = FakeRequest()
        hub.open(request, "old-1")
        self.assertEqual([e[1] for e in request.events()], ["gap", "block"])

    def test_junk_event_id_reports_a_gap(self):
        """A Last-Event-ID whose number is not plain digits (a superscript digit, which Python calls a digit
        but cannot convert, or more digits than int() takes) is an id the node does not know: a `gap` then
        the ring, never an error inside the stream."""
        hub = EventHub(run="r")
        hub.publish("block", {"height": 1})
        for last_id in ("r-\u00b2", "\u00b2", "r-" + "9" * 5000, "r-1\u00b2"):
            request = FakeRequest()
            hub.open(request, last_id)
            self.assertEqual(request.code, 200)
            self.assertEqual([e[1] for e in request.events()], ["gap", "block"], last_id[:10])

    def test_disconnect_removes_the_stream(self):
        """A client that goes away is forgotten: later events are not written to it."""
        hub, request = EventHub(), FakeRequest()
        hub.open(request, None)
        request.disconnect()
        hub.publish("block", {"height": 1})
        self.assertEqual((hub.streams, request.events()), (set(), []))

    def test_heartbeat_and_stop(self):
        """The heartbeat service writes a comment every interval and ends the open streams when it stops."""
        from twisted.internet.task import Clock
        clock, hub, request = Clock(), EventHub(), FakeRequest()
        done = hub.open(request, None)
        service = HeartbeatService(hub, clock, interval_s=15)
        service.startService()
        clock.advance(15)
        self.assertIn(b": keep-alive\n\n", request.written)
        service.stopService()
        self.assertEqual((self.successResultOf(done), hub.streams), (None, set()))

    def test_too_many_streams_are_refused(self):
        """Past max_streams a new stream is refused with Unavailable (a 503), not queued."""
        from chaincore.core.errors import Unavailable
        hub = EventHub(max_streams=1)
        hub.open(FakeRequest(), None)
        self.assertRaises(Unavailable, hub.open, FakeRequest(), None)


class NodeEventTests(SynchronousTestCase):
    def setUp(self):
        self.node = funded_node().node
        self.hub = EventHub(run="r")
        self.hub.attach(self.node)
        self.request = FakeRequest()
        self.hub.open(self.request, None)

    def test_new_tip_and_mempool_entry(self):
        """A transaction entering the mempool is a `tx` event; a block on the tip is a `block` event."""
        coin = REGTEST.block_reward(1)
        tx = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 10_000), (ALICE, coin - 11_000)])
        settled(self.node.submit_tx(tx))
        block = make_block(funded_chain()[-1], pay_to=BOB)
        settled(self.node.submit_block(block))
        events = self.request.events()
        self.assertEqual([e[1] for e in events], ["tx", "block"])
        self.assertEqual((events[0][2]["tx_id"], events[0][2]["fee"]), (tx.tx_id.hex(), 1_000))
        self.assertEqual((events[1][2]["hash"], events[1][2]["height"]), (block.hash.hex(), block.height))

    def test_reorganisation(self):
        """Switching to a heavier branch is a `reorg` event naming the old and new tips and the blocks off and on."""
        a = make_block(funded_chain()[-1], pay_to=BOB)
        settled(self.node.submit_block(a))
        fork1 = make_block(funded_chain()[-1], pay_to=BOB, extra=b"x")
        fork2 = make_block(fork1, pay_to=BOB, extra=b"x")
        for block in (fork1, fork2):  # the second makes the branch heavier
            settled(self.node.submit_block(block))
        reorgs = [e[2] for e in self.request.events() if e[1] == "reorg"]
        self.assertEqual(len(reorgs), 1)
        self.assertEqual((reorgs[0]["old_tip"], reorgs[0]["new_tip"]), (a.hash.hex(), fork2.hash.hex()))
        self.assertEqual(reorgs[0]["off"], [a.hash.hex()])
        self.assertEqual(reorgs[0]["on"], [fork1.hash.hex(), fork2.hash.hex()])


class _Collect(protocol.Protocol):
    def __init__(self):
        self.data = b""

    def dataReceived(self, data):
        self.data += data


class LoopbackStreamTests(TestCase):
    @defer.inlineCallbacks
    def test_stream_over_loopback(self):
        """Over a real socket /events answers text/event-stream at once and delivers a block while open."""
        service = funded_node()
        node = service.node
        hub = EventHub(run="r")
        hub.attach(node)
        site = make_site(NodeAPI(node, service.peers, events=hub).resource())
        port = yield serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(site.close_connections)
        client = _Collect()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        yield connectProtocol(endpoint, client)
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: r-0\r\n\r\n")
        yield wait_until(lambda: b"retry:" in client.data, timeout_s=5)
        self.assertIn(b"text/event-stream", client.data)
        block = make_block(funded_chain()[-1], pay_to=BOB)
        settled(node.submit_block(block))
        yield wait_until(lambda: block.hash.hex().encode() in client.data, timeout_s=5)
        client.transport.loseConnection()
        yield wait_until(lambda: not hub.streams, timeout_s=5)
