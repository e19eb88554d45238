"""Relay in canonical bytes: the binary compact form, 120-byte announcements, missing transactions as framed
bytes, JSON kept for peers that take only JSON, and compact forms that claim more than a block holds refused
before any work."""

import json

from hypothesis import given, settings, strategies as st
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import compact as compact_blocks, wire
from chaincore.core.block import HEADER_SIZE
from chaincore.core.encoding import compact_size, var_bytes
from chaincore.core.errors import Malformed
from chaincore.core.params import REGTEST
from chaincore.p2p.client import Uncompressed
from tests.support.api import APIClient, assert_error, funded_chain, funded_node
from tests.support.builders import BOB, make_block
from tests.support.nodes import settled

from .fakes import NodePeer
from .test_compact_relay import payments
from .test_sync import SyncTestCase, url

SENDER = "http://127.0.0.1:5009"
OCTETS = {"Accept": "application/octet-stream"}


def forged_compact(block, n_ids: int, id_bytes: bytes = b"") -> bytes:
    """The header of block, then a compact form claiming n_ids short ids (id_bytes of them given)."""
    return block.header.raw + compact_size(n_ids) + id_bytes


class CompactBytesTests(SynchronousTestCase):
    def test_round_trip_keeps_the_header_ids_and_coinbase(self):
        """The bytes of a compact form parse back to the header, one short id per payment, and the coinbase,
        and cost 6 bytes per transaction beside the header and coinbase."""
        block = make_block(funded_chain()[-1], payments(5), pay_to=BOB)
        raw = compact_blocks.compact_to_bytes(block)
        parsed = compact_blocks.parse_compact_bytes(raw, REGTEST.max_block_size)
        self.assertEqual(parsed, compact_blocks.parse_compact(compact_blocks.compact_to_json(block)))
        self.assertEqual(len(raw), HEADER_SIZE + 1 + 6 * 5 + 1 + 1 + len(var_bytes(block.transactions[0].raw)))

    def test_broken_forms_are_malformed(self):
        """Cut, padded, repeated or misplaced parts and a missing coinbase are each refused as Malformed."""
        block = make_block(funded_chain()[-1], payments(2), pay_to=BOB)
        raw = compact_blocks.compact_to_bytes(block)
        ids = raw[HEADER_SIZE + 1:HEADER_SIZE + 13]
        coinbase = var_bytes(block.transactions[0].raw)
        head = block.header.raw + b"\x02" + ids
        for bad in (raw[:-1], raw + b"\0", raw[:100], head + b"\x02\x00" + coinbase + b"\x00" + coinbase,
                    head + b"\x01\x03" + coinbase, head + b"\x01\x01" + coinbase, block.header.raw + b"\0\0",
                    head + b"\x01\x00" + var_bytes(b"\x01junk")):
            self.assertRaises(Malformed, compact_blocks.parse_compact_bytes, bad, REGTEST.max_block_size)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=400))
    def test_junk_bytes_are_malformed_or_a_form(self, junk):
        """Any bytes after a header either parse or raise Malformed; nothing else escapes."""
        header = funded_chain()[1].header.raw
        try:
            compact_blocks.parse_compact_bytes(header + junk, REGTEST.max_block_size)
        except Malformed:
            pass

    def test_counts_beyond_a_block_are_refused(self):
        """A form claiming more transactions than a block of the size limit can hold is refused on its count,
        whatever bytes follow; so is a prefilled transaction longer than the block size."""
        block = funded_chain()[1]
        limit = compact_blocks.max_block_txs(REGTEST.max_block_size)
        self.assertLess(limit, 100_000)
        with self.assertRaisesRegex(Malformed, "over the limit"):
            compact_blocks.parse_compact_bytes(forged_compact(block, 100_000, b"\0" * 600_000),
                                               REGTEST.max_block_size)
        with self.assertRaisesRegex(Malformed, "short ids in"):
            compact_blocks.parse_compact_bytes(forged_compact(block, limit), REGTEST.max_block_size)
        oversize = forged_compact(block, 0) + b"\x01\x00" + compact_size(REGTEST.max_block_size + 1) + b"\0" * 10
        with self.assertRaisesRegex(Malformed, "over the limit"):
            compact_blocks.parse_compact_bytes(oversize, REGTEST.max_block_size)
        json_form = {"header": compact_blocks.compact_to_json(block)["header"], "short_ids": "00" * 6 * 100_000,
                     "prefilled": []}
        self.assertRaises(Malformed, compact_blocks.parse_compact, json_form, max_txs=limit)


class RequestHeadersTests(SynchronousTestCase):
    def test_requests_ask_for_no_compression(self):
        """The node's HTTP client sends no Accept-Encoding (treq adds one to every request) and keeps the rest."""
        seen = []

        class Recorder:
            def request(self, method, uri, headers=None, bodyProducer=None):
                seen.append(headers)
                return defer.Deferred()

        HTTPClient(Uncompressed(Recorder())).request("POST", "http://127.0.0.1:5001/announce", data=b"x",
                                                     headers={b"Content-Type": [b"application/octet-stream"]})
        self.assertFalse(seen[0].hasHeader(b"accept-encoding"))
        self.assertEqual(seen[0].getRawHeaders(b"content-type"), [b"application/octet-stream"])


class BinaryRoutesTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.client = APIClient(self, self.service)
        self.block = make_block(funded_chain()[-1], pay_to=BOB)   # not held by the node

    def announce(self, data: bytes):
        return self.client.request("POST", "/announce", data=data, content_type="application/octet-stream",
                                   headers={"X-ChainCore-Peer": SENDER})

    def test_compact_block_txs_and_txs_answer_bytes_when_asked(self):
        """GET /compact, POST /block_txs and POST /txs answer canonical bytes with Accept octet-stream, and
        JSON without it."""
        held = funded_chain()[7]
        answer = self.client.get(f"/compact/{held.hash.hex()}", headers=OCTETS)
        self.assertEqual((answer.content_type, answer.body), (wire.MEDIA_TYPE, compact_blocks.compact_to_bytes(held)))
        self.assertIn("short_ids", self.client.get_json(f"/compact/{held.hash.hex()}"))
        answer = self.client.post("/block_txs", {"block_hash": held.hash.hex(), "indexes": [0]}, headers=OCTETS)
        self.assertEqual(answer.body, wire.frame_list([held.transactions[0].raw]))
        tx = payments(1)[0]
        settled(self.service.node.submit_tx(tx))
        answer = self.client.post("/txs", {"tx_ids": [tx.tx_id.hex(), "00" * 32]}, headers=OCTETS)
        self.assertEqual(answer.body, wire.frame_list([tx.raw]))
        self.assertEqual(len(self.client.post("/txs", {"tx_ids": [tx.tx_id.hex()]}).json["transactions"]), 1)

    def test_binary_announcement_answers_204_with_no_body(self):
        """A 120-byte header announced in bytes is taken (the relay starts fetching) and answered with a bare
        204: no body, no Server, Date or Content-Type header."""
        answer = self.announce(self.block.header.raw)
        self.assertEqual((answer.status, answer.body), (204, b""))
        for name in (b"server", b"date", b"content-type"):
            self.assertFalse(answer.headers.hasHeader(name), name)
        self.assertTrue(self.service.peers.relay.known.has(SENDER, self.block.hash))

    def test_oversize_compact_announcements_are_refused_before_any_work(self):
        """An announcement claiming 100,000 short ids, or a prefilled transaction over the block size, is
        answered 400 and reaches no relay work; a body over the largest compact form is 413, unread."""
        relay = self.service.peers.relay
        claims = [forged_compact(self.block, 100_000, b"\x01" * 600_000),
                  forged_compact(self.block, 0) + b"\x01\x00" + compact_size(10 ** 7) + b"\0" * 1000]
        for body in claims:
            assert_error(self, self.announce(body), 400, "malformed")
        too_big = self.block.header.raw + b"\0" * compact_blocks.max_compact_bytes(REGTEST.max_block_size)
        assert_error(self, self.announce(too_big), 413)
        ids = "00" * 6 * 100_000
        answer = self.client.post("/announce", {"block": json.loads(json.dumps(
            compact_blocks.compact_to_json(self.block)["header"])), "compact": {"short_ids": ids, "prefilled": []}},
            headers={"X-ChainCore-Peer": SENDER})
        assert_error(self, answer, 400, "malformed")
        self.assertFalse(relay.known.has(SENDER, self.block.hash))
        self.assertEqual(relay.fetching, {})


class BinaryRelayTests(SyncTestCase):
    def relay_txs(self, a, b, txs):
        for tx in txs:
            settled(a.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)
        self.assertTrue(all(tx.tx_id in b.node.mempool for tx in txs))

    def test_pushed_compact_form_is_its_bytes_alone(self):
        """With synced mempools the announcement is the compact form's bytes and nothing is fetched: the bytes
        sent for the block are exactly that form."""
        a, b = self.pair()
        txs = payments(10)
        self.relay_txs(a, b, txs)
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        before = a.client.bytes_sent(b.url)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual([body["bytes"] for path, body in b.posted if path == "/announce"],
                         [compact_blocks.compact_to_bytes(block)])
        self.assertEqual(a.client.bytes_sent(b.url) - before, len(compact_blocks.compact_to_bytes(block)))
        self.assertEqual(b.relay.counts.compact_rebuilt, 1)

    def test_header_announcement_and_missing_transaction_travel_as_bytes(self):
        """Without the push the announcement is the 120-byte header; the peer fetches the compact form and the
        one missing transaction as bytes, receiving little more than that transaction's canonical size."""
        a, b = self.pair()
        a.relay.compact_push, a.relay.origin_push_all = 0, False
        txs = payments(4)
        self.relay_txs(a, b, txs[:3])
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        before = b.client.bytes_received(a.url)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual([len(body["bytes"]) for path, body in b.posted if path == "/announce"], [HEADER_SIZE])
        self.assertEqual((b.relay.counts.txs_fetched, b.relay.counts.full_fallbacks), (1, 0))
        received = b.client.bytes_received(a.url) - before
        self.assertEqual(received, len(compact_blocks.compact_to_bytes(block)) + len(wire.frame_list([txs[3].raw])))

    def test_junk_compact_bytes_are_penalised(self):
        """A peer that answers junk bytes to GET /compact is reported as Malformed and nothing is submitted."""
        a, b = self.pair()
        a.relay.compact_push, a.relay.origin_push_all = 0, False
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        a.canned[f"/compact/{block.hash.hex()}"] = lambda request: (200, b"\x01junk" * 30)
        settled(a.node.submit_block(block, local=True))
        self.assertNotEqual(b.tip(), block.hash)
        self.assertEqual(b.discovery.table.get(a.url).score, 20)
        self.assertEqual(a.count(f"/block/{block.hash.hex()}"), 0)

    def test_a_lost_fetch_makes_the_announcer_polled_at_the_next_round(self):
        """When fetching an announced block gets no answer (a lost reply), the announcer's tip is polled at the
        next sync round instead of after the poll's backoff (and stays an active peer), and that round's catch-up
        brings the block."""
        a, b = self.pair()
        a.relay.compact_push, a.relay.origin_push_all = 0, False
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        a.canned[f"/compact/{block.hash.hex()}"] = lambda request: (503, b'{"error": "busy"}')
        for _ in range(4):  # b polled a a few times and backed off
            self.successResultOf(b.sync.sync_round())
            self.clock.advance(b.sync.poll.max_s)
        settled(a.node.submit_block(block, local=True))
        self.assertNotEqual(b.tip(), block.hash)
        self.assertEqual(b.sync.poll.due([a.url], self.clock.seconds()), [a.url])
        del a.canned[f"/compact/{block.hash.hex()}"]
        self.assertEqual(b.discovery.active_peers(), [a.url])  # one lost answer does not drop a live peer
        self.successResultOf(b.sync.sync_round())
        self.assertEqual(b.tip(), block.hash)

    def test_binary_short_id_collision_falls_back_to_the_whole_block(self):
        """A binary compact form whose short ids repeat makes the peer fetch the whole block (in bytes)."""
        block = make_block(funded_chain()[-1], payments(3), pay_to=BOB)
        a = self.network.add(NodePeer(url(5001), self.clock, funded_chain() + (block,), network=self.network))
        c = self.network.add(NodePeer(url(5003), self.clock, funded_chain(), network=self.network))
        raw = compact_blocks.compact_to_bytes(block)
        ids_at = HEADER_SIZE + 1
        forged = raw[:ids_at + 6] + raw[ids_at:ids_at + 6] + raw[ids_at + 12:]  # id 2 repeats id 1
        code, _ = self.successResultOf(a.client.post_binary(c.url, "/announce", forged))
        self.assertEqual(code, 204)
        self.assertEqual(c.tip(), block.hash)
        self.assertEqual(a.count(f"/block/{block.hash.hex()}"), 1)
        self.assertEqual((c.relay.counts.full_fallbacks, c.relay.counts.compact_rebuilt), (1, 0))

    def test_json_only_peer_gets_and_serves_relay_in_json(self):
        """A peer that refuses bytes at /announce (415) gets the announcement again as JSON, and then only JSON;
        a JSON-only announcer's compact form and transactions are read from its JSON answers."""
        a, b = self.pair()
        b.json_only = True
        first = make_block(funded_chain()[-1], payments(2), pay_to=BOB)
        settled(a.node.submit_block(first, local=True))
        self.assertEqual(b.tip(), first.hash)
        self.assertIn(b.url, a.relay.json_only)
        self.assertEqual([("bytes" in body) for path, body in b.posted if path == "/announce"], [True, False])
        a.json_only, b.json_only = True, False   # now the announcer answers only JSON
        a.relay.compact_push, a.relay.origin_push_all = 0, False
        txs = payments(3, first_height=3)
        self.relay_txs(a, b, txs[:2])               # b reads a's JSON /txs answer
        second = make_block(first, txs, pay_to=BOB)
        fetched = b.relay.counts.txs_fetched
        settled(a.node.submit_block(second, local=True))
        self.assertEqual(b.tip(), second.hash)
        self.assertEqual(a.count(f"/compact/{second.hash.hex()}"), 1)
        self.assertEqual((b.relay.counts.txs_fetched - fetched, b.relay.counts.full_fallbacks), (1, 0))

    def test_only_a_refusal_of_the_bytes_makes_a_peer_json_only(self):
        """A 400 about the Content-Type (a node from before binary announcements) makes the peer JSON-only and
        the announcement is sent again as JSON; a 400 for another reason does neither."""
        a, b = self.pair()
        b.canned["/announce"] = lambda request: (400, {"error": "an announcement needs an X-ChainCore-Peer header"})
        first = make_block(funded_chain()[-1], pay_to=BOB)
        settled(a.node.submit_block(first, local=True))
        self.assertEqual((a.relay.json_only, b.count("/announce", "POST")), (set(), 1))
        b.canned["/announce"] = lambda request: (400, {"error": "Content-Type must be application/json"})
        second = make_block(first, pay_to=BOB)
        settled(a.node.submit_block(second, local=True))
        self.assertEqual(a.relay.json_only, {b.url})
        self.assertEqual([("bytes" in body) for path, body in b.posted if path == "/announce"], [True, True, False])
