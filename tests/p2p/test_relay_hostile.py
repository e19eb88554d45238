"""Relay among strangers: peers that announce blocks they never serve, serve forms or transactions that do
not fit, flood announcements, or pass on blocks that break the coins' rules; what each costs the node, and
that the honest block still arrives and is passed on."""

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import compact as compact_blocks, encoding, wire
from chaincore.core.errors import MissingInput
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from chaincore.p2p import relay
from chaincore.p2p.peers import penalty_for
from tests.support.api import APIClient, assert_error, funded_chain, funded_node
from tests.support.builders import ALICE, BOB, make_block, signed_tx, solve
from tests.support.nodes import settled

from .fakes import FakeNetwork, NodePeer
from .test_compact_relay import payments
from .test_early_relay import _turn
from .test_relay_liars import LiarAndHonestCase
from .test_sync import ME, SyncTestCase, url


def ghost_block(parent, n: int = 0):
    """A child of parent with valid proof of work spending a coin that does not exist (a coin rule)."""
    ghost = signed_tx([(OutPoint(bytes([0x11 + n]) * 32, 0), ALICE)], [(BOB, 1000)])
    return make_block(parent, [ghost], pay_to=BOB)


class InvalidBlockServingTests(SyncTestCase):
    def test_a_block_refused_after_its_early_pass_is_no_longer_served(self):
        """A block passed on before its check and then refused by a coin rule is answered 404 at
        GET /compact/<hash> and POST /block_txs once refused: peers are not handed a block known invalid."""
        a, b = self.pair()
        a.node.after_sends = _turn(self.clock)
        bad = ghost_block(funded_chain()[-1])
        d = a.node.submit_block(bad, local=True)
        code, _ = self.successResultOf(b.client.get_binary(a.url, f"/compact/{bad.hash.hex()}"))
        self.assertEqual(code, 200)  # served while it is being checked
        self.clock.advance(0)
        self.failureResultOf(d, MissingInput)
        code, _ = self.successResultOf(b.client.get_binary(a.url, f"/compact/{bad.hash.hex()}"))
        self.assertEqual(code, 404)
        code, _ = self.successResultOf(b.client.post_json(a.url, "/block_txs",
                                                          {"block_hash": bad.hash.hex(), "indexes": [1]}))
        self.assertEqual(code, 404)


def fake_headers(parent, n: int) -> list:
    """n distinct headers on parent with valid proof of work (trivial on regtest) and no block behind them."""
    model = make_block(parent, pay_to=BOB).header
    return [solve(dataclasses.replace(model, merkle_root=i.to_bytes(4, "big") + b"\x07" * 28)) for i in range(n)]


class FetchFloodTests(LiarAndHonestCase):
    def test_thousands_of_fake_headers_hold_a_bounded_number_of_fetches(self):
        """A peer announcing 1,000 distinct blocks it never serves holds only a few fetches at once, not one per
        header; the real block it then announces first still comes from the honest announcer at once, and no
        fetch is left behind once the liar's have timed out."""
        for header in fake_headers(funded_chain()[-1], 1000):
            self.liar.stalled.add(f"/compact/{header.hash.hex()}")
            self.me.relay.announced(self.liar.url, header)
        self.assertLessEqual(len(self.me.relay.fetching), relay.MAX_FETCHES_PER_PEER)
        self.liar.stalled.add(f"/compact/{self.block.hash.hex()}")
        self.me.relay.announced(self.liar.url, self.block.header)
        self.me.relay.announced(self.honest.url, self.block.header)
        self.clock.pump([1] * 6)
        self.assertEqual(self.me.tip(), self.block.hash)
        self.clock.pump([1] * 6)
        self.assertEqual(self.me.relay.fetching, {})

    def test_a_header_its_parent_does_not_allow_is_not_fetched(self):
        """A header on a block we hold must carry the target and time its parent allows before anything is
        fetched: a wrong target costs the announcer its rule's points; a clock ahead of ours costs nothing, and
        neither block is asked for."""
        parent = funded_chain()[-1]
        model = make_block(parent, pay_to=BOB).header
        harder = solve(dataclasses.replace(model, target=model.target // 2))
        ahead = solve(dataclasses.replace(model, timestamp=int(self.clock.seconds()) + 3 * 3600))
        for header in (harder, ahead):
            self.assertEqual(self.me.relay.announced(self.liar.url, header), "known")
        self.assertEqual([p for m, p in self.liar.requests if p.startswith(("/compact", "/block"))], [])
        self.assertEqual(self.me.relay.fetching, {})
        self.assertEqual(self.me.discovery.table.get(self.liar.url).score, penalty_for("bad-target"))

    def test_fetches_from_many_claimed_peers_are_bounded_in_all(self):
        """Fake headers announced under 200 claimed URLs hold at most relay.MAX_FETCHES fetches in all."""
        headers = fake_headers(funded_chain()[-1], 400)
        for n, header in enumerate(headers):
            self.me.relay.announced(url(6000 + n // 2), header)  # nobody there: each fetch fails at once
        self.assertEqual(self.me.relay.fetching, {})
        for n, header in enumerate(headers):
            self.liar.stalled.add(f"/compact/{header.hash.hex()}")
        self.network.add(self.liar, *(url(6000 + n) for n in range(200)))  # the liar answers at all of them
        for n, header in enumerate(headers):
            self.me.relay.announced(url(6000 + n // 2), header)
        self.assertLessEqual(len(self.me.relay.fetching), relay.MAX_FETCHES)
        self.me.relay.announced(self.honest.url, self.block.header)
        self.assertEqual(self.me.tip(), self.block.hash)  # an honest announcer's block is not crowded out

    def test_a_pusher_that_failed_a_block_cannot_take_its_fetch_over_again(self):
        """A peer pushes the compact form of a block being fetched from its first announcer, takes the fetch
        over and never serves the missing transactions: once it failed, pushing the form again does not take
        the fetch back from the first announcer, and the block arrives from that one."""
        a, b = self.honest, self.liar
        settled(b.node.submit_block(self.block))
        path = f"/compact/{self.block.hash.hex()}"
        a.held.add(path)
        b.stalled.add("/block_txs")
        pushed = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(self.block),
                                                    REGTEST.max_block_size)
        self.assertEqual(self.me.relay.announced(a.url, self.block.header), "fetching")
        self.assertEqual(self.me.relay.announced(b.url, self.block.header, pushed), "fetching")
        self.clock.advance(6)  # the pusher's /block_txs times out: the form is asked of a again
        self.assertEqual(self.me.relay.announced(b.url, self.block.header, pushed), "known")
        a.held.discard(path)
        a.release()
        self.network.flush()
        self.assertEqual(self.me.tip(), self.block.hash)
        self.assertEqual(b.count("/block_txs", "POST"), 1)

    def test_an_announcer_that_answers_each_step_late_gives_way_to_another_within_a_deadline(self):
        """The first announcer answers every step of the fetch just before its timeout (the compact form, then
        transactions that do not fit, then another block): the block still comes from the second announcer
        within FETCH_DEADLINE_S, not after three timeouts."""
        settled(self.liar.node.submit_block(self.block))
        wrong = payments(4)[2:]
        self.liar.canned["/block_txs"] = lambda request: (200, wire.frame_list(tx.raw for tx in wrong))
        self.liar.canned[f"/block/{self.block.hash.hex()}"] = lambda request: (200, funded_chain()[5].raw)
        self.liar.held.update({f"/compact/{self.block.hash.hex()}", "/block_txs", f"/block/{self.block.hash.hex()}"})
        self.me.relay.announced(self.liar.url, self.block.header)
        self.me.relay.announced(self.honest.url, self.block.header)
        for second in range(1, 16):
            self.clock.advance(1)
            if second % 4 == 0:
                self.liar.release()
                self.network.flush()
            if self.me.tip() == self.block.hash:
                break
        self.assertLessEqual(second, relay.FETCH_DEADLINE_S + 1)
        self.assertEqual(self.me.tip(), self.block.hash)

    def test_an_announcer_after_the_deadline_is_asked_at_once(self):
        """The only announcer answers each step just in time: once it is past the deadline, the next peer that
        announces the block is asked at once, not after the late one's next timeout."""
        settled(self.liar.node.submit_block(self.block))
        self.liar.held.update({f"/compact/{self.block.hash.hex()}", "/block_txs"})
        self.me.relay.announced(self.liar.url, self.block.header)
        self.clock.advance(4)
        self.assertEqual(self.liar.release(), 1)  # the compact form; the transactions are held in turn
        self.network.flush()
        self.clock.advance(relay.FETCH_DEADLINE_S - 4)
        self.assertEqual(self.me.relay.announced(self.honest.url, self.block.header), "fetching")
        self.assertEqual(self.me.tip(), self.block.hash)
        self.clock.advance(10)
        self.assertEqual(self.me.relay.fetching, {})


class RecordingClient:
    """The node's PeerClient, recording the byte cap of every request relay makes (path, max_bytes)."""

    def __init__(self, client):
        self._client = client
        self.caps = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def _recorded(self, method):
        def call(peer, path, *args, **kwargs):
            self.caps.append((path, kwargs.get("max_bytes")))
            return getattr(self._client, method)(peer, path, *args, **kwargs)
        return call

    def __getattribute__(self, name):
        if name in ("get_binary", "post_json", "post_binary"):
            return object.__getattribute__(self, "_recorded")(name)
        return object.__getattribute__(self, name)


class AnswerTests(SyncTestCase):
    """Answers to /block_txs that hold too many, too few, reordered or wrong transactions, or too many bytes."""

    def setUp(self):
        super().setUp()
        self.build()

    def build(self):
        self.network = FakeNetwork()
        self.block = make_block(funded_chain()[-1], payments(3), pay_to=BOB)
        self.liar = self.network.add(NodePeer(url(5001), self.clock, funded_chain() + (self.block,),
                                              network=self.network))
        self.honest = self.network.add(NodePeer(url(5002), self.clock, funded_chain() + (self.block,),
                                                network=self.network))
        self.ours = self.me(funded_chain(), self.liar, self.honest)
        self.liar.canned[f"/block/{self.block.hash.hex()}"] = lambda request: (200, funded_chain()[5].raw)

    def fetch_with(self, answer):
        """The liar answers /block_txs with answer (a list of transactions, or bytes); the honest peer announced
        the block too: the block must be ours in the end, from whichever served it right."""
        body = answer if isinstance(answer, bytes) else wire.frame_list(tx.raw for tx in answer)
        self.liar.canned["/block_txs"] = lambda request: (200, body)
        self.assertEqual(self.ours.relay.announced(self.liar.url, self.block.header), "fetching")
        self.ours.relay.announced(self.honest.url, self.block.header)
        self.assertEqual(self.ours.tip(), self.block.hash)
        self.assertEqual(self.ours.relay.fetching, {})

    def test_too_many_transactions_are_malformed(self):
        """An answer holding more transactions than were asked for is malformed: the liar is penalised and
        the block comes from the honest announcer."""
        self.fetch_with(list(self.block.transactions[1:]) + payments(4)[3:])
        self.assertGreater(self.ours.discovery.table.get(self.liar.url).score, 0)
        self.assertEqual(self.liar.count(f"/block/{self.block.hash.hex()}"), 0)

    def test_too_few_reordered_or_wrong_transactions_fall_back_to_the_whole_block(self):
        """Too few, reordered or wrong transactions do not fit the block: the whole block is asked of the same
        peer; another block in answer is malformed, and the block comes from the honest announcer."""
        txs = list(self.block.transactions[1:])
        for answer in (txs[:2], [txs[1], txs[0], txs[2]], payments(6)[3:]):
            self.build()
            self.fetch_with(answer)
            self.assertEqual(self.liar.count(f"/block/{self.block.hash.hex()}"), 1)
            self.assertGreater(self.ours.discovery.table.get(self.liar.url).score, 0)

    def test_a_compact_form_of_another_block_is_malformed(self):
        """The header announced has valid proof of work but GET /compact answers another block's form: the
        liar is penalised and the block comes from the honest announcer."""
        other = compact_blocks.compact_to_bytes(funded_chain()[7])
        self.liar.canned[f"/compact/{self.block.hash.hex()}"] = lambda request: (200, other)
        self.fetch_with(list(self.block.transactions[1:]))
        self.assertGreater(self.ours.discovery.table.get(self.liar.url).score, 0)
        self.assertEqual(self.liar.count("/block_txs", "POST"), 0)

    def test_answers_are_read_up_to_what_a_block_can_hold(self):
        """Every answer relay reads (compact form, transactions, whole block) is capped near the block size
        limit as JSON, not at tens of megabytes: a peer cannot make the node buffer more per request."""
        self.ours.relay.client = recording = RecordingClient(self.ours.relay.client)
        self.fetch_with(b"\xff" * 4_000_000)
        tx = payments(5)[4]
        settled(self.honest.node.submit_tx(tx))
        self.ours.relay.announced_txs(self.honest.url, [tx.tx_id])
        self.assertIn(tx.tx_id, self.ours.node.mempool)
        caps = dict(recording.caps)
        self.assertEqual(set(caps) >= {f"/compact/{self.block.hash.hex()}", "/block_txs", "/txs"}, True)
        for path, cap in recording.caps:
            self.assertIsNotNone(cap, path)
            self.assertLessEqual(cap, 3 * REGTEST.max_block_size + 10_000, path)


class TxAnnouncementTests(SyncTestCase):
    """Transaction ids announced by peers that flood them, cannot serve them or serve something else."""

    def setUp(self):
        super().setUp()
        self.liar = self.network.add(NodePeer(url(5001), self.clock, funded_chain(), network=self.network))
        self.honest = self.network.add(NodePeer(url(5002), self.clock, funded_chain(), network=self.network))
        self.ours = self.me(funded_chain(), self.liar, self.honest)
        self.tx = payments(1)[0]
        settled(self.honest.node.submit_tx(self.tx))

    def test_an_id_its_announcer_does_not_serve_is_asked_of_the_next_announcer_at_once(self):
        """The first announcer answers /txs without the transaction: the peer that announced it meanwhile is
        asked at once, not ignored for TX_ASKED_S (and then never asked)."""
        self.liar.held.add("/txs")
        self.assertEqual(self.ours.relay.announced_txs(self.liar.url, [self.tx.tx_id]), 1)
        self.assertEqual(self.ours.relay.announced_txs(self.honest.url, [self.tx.tx_id]), 0)
        self.assertEqual(self.liar.release(), 1)  # its mempool lacks it: an empty list
        self.network.flush()
        self.assertIn(self.tx.tx_id, self.ours.node.mempool)

    def test_an_id_whose_announcer_never_answers_is_asked_of_the_next_after_the_timeout(self):
        """The first announcer never answers /txs: the next announcer is asked once the request times out."""
        self.liar.stalled.add("/txs")
        self.ours.relay.announced_txs(self.liar.url, [self.tx.tx_id])
        self.ours.relay.announced_txs(self.honest.url, [self.tx.tx_id])
        self.clock.advance(6)
        self.assertIn(self.tx.tx_id, self.ours.node.mempool)

    def test_transactions_not_asked_for_are_not_taken(self):
        """A /txs answer holding a transaction other than those asked is refused whole and counted against
        the peer; the transaction asked for then comes from the next announcer."""
        other = payments(2)[1]
        self.liar.canned["/txs"] = lambda request: (200, wire.frame_list([other.raw]))
        self.ours.relay.announced_txs(self.liar.url, [self.tx.tx_id])
        self.assertNotIn(other.tx_id, self.ours.node.mempool)
        self.assertGreater(self.ours.discovery.table.get(self.liar.url).score, 0)
        self.ours.relay.announced_txs(self.honest.url, [self.tx.tx_id])
        self.assertIn(self.tx.tx_id, self.ours.node.mempool)

    def test_floods_of_ids_are_bounded(self):
        """A peer announcing 100,000 distinct ids it never serves has a bounded number asked of it or waiting,
        in a few requests, and ids repeated in an announcement are asked once; ids under many claimed URLs
        stay bounded in all."""
        self.liar.stalled.add("/txs")
        for batch in range(20):
            ids = [(batch * 5000 + i).to_bytes(32, "big") for i in range(5000)]
            self.ours.relay.announced_txs(self.liar.url, ids)
        self.assertLessEqual(len(self.ours.relay._asked), relay.MAX_TX_IN_FLIGHT_PER_PEER)
        self.assertLessEqual(self.ours.relay._tx_peers[self.liar.url].load(), relay.MAX_TX_IN_FLIGHT_PER_PEER)
        self.assertEqual(self.liar.count("/txs", "POST"), relay.MAX_TX_REQUESTS_PER_PEER)
        self.clock.advance(6)
        self.assertEqual(self.ours.relay.announced_txs(self.honest.url, [b"\x42" * 32] * 5000), 1)
        self.network.add(self.liar, *(url(port) for port in range(6000, 6100)))  # it answers at all of them
        for port in range(6000, 6100):
            ids = [(port * 5000 + i).to_bytes(32, "big") for i in range(5000)]
            self.ours.relay.announced_txs(url(port), ids)
        self.assertLessEqual(len(self.ours.relay._asked), relay.MAX_ASKED)


class ClaimedPeerFloodTests(SyncTestCase):
    """What announcements under thousands of claimed peer URLs leave behind in relay's and sync's maps."""

    def test_per_peer_records_stay_bounded_and_keep_the_relay_peers(self):
        """Announcements of a block and of transaction ids from 3,000 claimed URLs leave a bounded number of
        per-peer records (known items, poll schedules), and the records of our relay peers are kept."""
        block = make_block(funded_chain()[-1], pay_to=BOB)
        peer = self.network.add(NodePeer(url(5001), self.clock, funded_chain(), network=self.network))
        ours = self.me(funded_chain(), peer)
        ours.relay.known.add(peer.url, block.hash)
        settled(ours.node.submit_block(block))
        for port in range(10000, 13000):
            ours.relay.announced(url(port), block.header)
            ours.relay.announced_txs(url(port), [port.to_bytes(32, "big")])  # nobody there: asked, failed
        self.assertLessEqual(len(ours.relay.known._by_peer), relay.MAX_KNOWN_PEERS)
        self.assertTrue(ours.relay.known.has(peer.url, block.hash))
        self.assertLessEqual(len(ours.sync.poll._next), 10)


class SentToTests(SyncTestCase):
    def test_an_inbound_peer_naming_every_peer_does_not_stop_our_relay_to_the_peers_we_chose(self):
        """Any host that answers /status becomes an inbound relay peer by announcing to us; one that then names
        all our peers in X-ChainCore-Sent-To does not keep its blocks from the outbound peers we chose, nor
        has its names passed on."""
        chain = funded_chain()
        a, b = self.peer(5001, chain), self.peer(5002, chain)
        ours = self.me(chain, a, b)
        ours.discovery.degree = 2  # a and b are the peers we chose
        stranger = self.network.add(NodePeer(url(5003), self.clock, chain, network=self.network))
        first = make_block(chain[-1], pay_to=BOB)
        code, _ = self.successResultOf(stranger.client.post_binary(ME, "/announce",
                                                                  compact_blocks.compact_to_bytes(first)))
        self.assertEqual(code, 204)
        self.successResultOf(ours.discovery.run_once())  # the hint is probed: the stranger is now active
        self.assertIn(stranger.url, ours.discovery.relay_peers())
        self.assertNotIn(stranger.url, ours.discovery.outbound_peers())
        hint = ",".join(compact_blocks.peer_tag(u) for u in (a.url, b.url, url(5009))).encode()
        second = make_block(first, pay_to=BOB)
        for peer in (a, b):
            peer.posted.clear()
        code, _ = self.successResultOf(stranger.client.post_binary(
            ME, "/announce", compact_blocks.compact_to_bytes(second), headers={b"X-ChainCore-Sent-To": [hint]}))
        self.assertEqual((code, ours.tip()), (204, second.hash))
        for peer in (a, b):
            sent = [body for path, body in peer.posted if path == "/announce"]
            self.assertEqual(len(sent), 1, peer.url)
        self.assertNotIn(second.hash, ours.relay._heard_sent_to)


class EarlyRelayFloodTests(SyncTestCase):
    def test_bad_coin_blocks_at_one_height_are_checked_once_penalised_after_the_excuse_and_spare_the_honest_one(
            self):
        """A peer pushes five blocks at one height, each with valid proof of work and a coin that does not exist:
        the first is excused and passed on (once a height), the next ones count against it until it is
        banned, none is checked twice nor passed on, one it pushes once banned is not even checked, and the
        honest block at that height is still taken and passed on; the peer we passed the bad block on to
        holds nothing against us."""
        chain = funded_chain()
        parent = chain[-1]
        good = make_block(parent, payments(1), pay_to=BOB)
        liar = self.network.add(NodePeer(url(5001), self.clock, chain, network=self.network))
        honest = self.network.add(NodePeer(url(5002), self.clock, chain, network=self.network))
        downstream = self.network.add(NodePeer(url(5003), self.clock, chain, network=self.network, seeds=[ME]))
        ours = self.me(chain, liar, honest, downstream)
        self.successResultOf(downstream.discovery.run_once())
        settled(honest.node.submit_block(good))  # found meanwhile (it has no peers to pass it on to)
        bad = [ghost_block(parent, n) for n in range(6)]

        def push(block):
            form = compact_blocks.compact_to_bytes(block, range(len(block.transactions)))
            code, _ = self.successResultOf(liar.client.post_binary(ME, "/announce", form))
            return code

        self.assertEqual(push(bad[0]), 204)
        self.assertEqual(ours.discovery.table.get(liar.url).score, 0)  # excused: the first at this height
        for block in bad[1:5]:
            push(block)
            if liar.url not in ours.discovery.active_peers():
                break
        self.assertNotIn(liar.url, ours.discovery.active_peers())  # banned
        checked = [b for b in bad if ours.node.chain.entry(b.hash) is not None]
        push(bad[5])
        self.assertIsNone(ours.node.chain.entry(bad[5].hash))  # a banned peer's block is not checked
        for block in checked:
            self.assertEqual(ours.relay.announced(honest.url, block.header), "known")  # never checked twice
        self.assertEqual(ours.relay.announced(honest.url, good.header), "fetching")
        self.assertEqual(ours.tip(), good.hash)
        self.assertEqual(downstream.tip(), good.hash)
        announced = [body["block"]["hash"] for path, body in downstream.posted if path == "/announce"]
        self.assertEqual(announced, [bad[0].hash.hex(), good.hash.hex()])
        self.assertEqual(downstream.discovery.table.get(ME).score, 0)


class ServingTests(SynchronousTestCase):
    """What the node serves to peers that ask for a block's or the mempool's transactions."""

    def setUp(self):
        self.txs = payments(2)
        self.block = make_block(funded_chain()[-1], self.txs, pay_to=BOB)
        self.service = funded_node(funded_chain() + (self.block,))
        self.client = APIClient(self, self.service)

    def test_block_txs_refuses_an_index_asked_twice(self):
        """POST /block_txs asking one index 5,000 times (an answer far bigger than the block) is refused with
        400, as is any list longer than the block's; an index asked twice is named; each index once is served,
        all of them included."""
        for indexes, named in (([1] * 5000, "more than 3"), ([1, 1], "indexes[1]"), ([0, 1, 2, 0], "more than 3")):
            answer = self.client.post("/block_txs", {"block_hash": self.block.hash.hex(), "indexes": indexes},
                                      headers={"Accept": "application/octet-stream"})
            assert_error(self, answer, 400, "malformed")
            self.assertIn(named, answer.json["error"])
        answer = self.client.post("/block_txs", {"block_hash": self.block.hash.hex(), "indexes": [0, 1, 2]},
                                  headers={"Accept": "application/octet-stream"})
        self.assertEqual(answer.body, wire.frame_list([tx.raw for tx in self.block.transactions]))
        answer = self.client.post("/block_txs", {"block_hash": self.block.hash.hex(), "indexes": [2, 1]},
                                  headers={"Accept": "application/octet-stream"})
        self.assertEqual(answer.body, wire.frame_list([self.txs[1].raw, self.txs[0].raw]))

    def test_txs_answers_an_id_asked_twice_once(self):
        """POST /txs asking one mempool transaction 5,000 times answers it once."""
        tx = payments(3)[2]
        settled(self.service.node.submit_tx(tx))
        answer = self.client.request("POST", "/txs", data=tx.tx_id * 5000, content_type="application/octet-stream",
                                     headers={"Accept": "application/octet-stream"})
        self.assertEqual((answer.status, len(answer.body)), (200, len(wire.frame_list([tx.raw]))))


class CompactFormTests(SynchronousTestCase):
    """Compact forms that lie about their slots, announced to the node's POST /announce."""

    def setUp(self):
        self.service = funded_node()
        self.client = APIClient(self, self.service)
        self.block = make_block(funded_chain()[-1], payments(3), pay_to=BOB)
        self.relay = self.service.peers.relay

    def announce(self, data: bytes):
        return self.client.request("POST", "/announce", data=data, content_type="application/octet-stream",
                                   headers={"X-ChainCore-Peer": "http://127.0.0.1:5009"})

    def form(self, ids: list, prefilled: list) -> bytes:
        """The block's header, the short ids given, then (index, transaction) pairs in the order given."""
        return b"".join((self.block.header.raw, encoding.compact_size(len(ids)), *ids,
                         encoding.compact_size(len(prefilled)),
                         *(encoding.compact_size(i) + encoding.var_bytes(tx.raw) for i, tx in prefilled)))

    def test_prefilled_transactions_in_any_order_fill_their_slots(self):
        """Prefilled indexes are positions, not offsets: given 3 then 0, they fill slots 3 and 0."""
        key, txs = compact_blocks.block_key(self.block.hash), self.block.transactions
        ids = [compact_blocks.short_id(key, tx.tx_id) for tx in txs[1:3]]
        parsed = compact_blocks.parse_compact_bytes(self.form(ids, [(3, txs[3]), (0, txs[0])]),
                                                    REGTEST.max_block_size)
        self.assertEqual((parsed.slots[0], parsed.slots[3]), (txs[0], txs[3]))
        self.assertEqual(parsed.slots[1:3], tuple(ids))

    def test_lying_slots_are_refused_before_any_fetch(self):
        """A prefilled index past the block, one given twice, a count of ids or prefilled transactions more
        than the bytes hold, and a form with no coinbase are each answered 400 and start no fetch."""
        txs = self.block.transactions
        key = compact_blocks.block_key(self.block.hash)
        ids = [compact_blocks.short_id(key, tx.tx_id) for tx in txs[1:]]
        for body in (self.form(ids, [(4, txs[0])]), self.form(ids[:2], [(0, txs[0]), (0, txs[3])]),
                     self.block.header.raw + encoding.compact_size(5000) + b"".join(ids),
                     self.form(ids, [])[:-1] + encoding.compact_size(300) + b"\x00\x01",
                     self.form(ids, [(1, txs[1])])):
            assert_error(self, self.announce(body), 400, "malformed")
        self.assertEqual(self.relay.fetching, {})

    def test_a_json_form_with_no_transactions_is_refused(self):
        """A JSON compact form with no short ids and nothing prefilled has no coinbase: 400, as in bytes."""
        body = {"block": compact_blocks.compact_to_json(self.block)["header"],
                "compact": {"short_ids": "", "prefilled": []}}
        assert_error(self, self.client.post("/announce", body, headers={"X-ChainCore-Peer": "http://127.0.0.1:5009"}),
                     400, "malformed")
        self.assertEqual(self.relay.fetching, {})

    def test_a_form_of_another_block_is_refused(self):
        """A JSON announcement whose compact form carries another block's header is answered 400."""
        other = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        body = {"block": compact_blocks.compact_to_json(self.block)["header"],
                "compact": compact_blocks.compact_to_json(other)}
        assert_error(self, self.client.post("/announce", body, headers={"X-ChainCore-Peer": "http://127.0.0.1:5009"}),
                     400, "malformed")
        self.assertEqual(self.relay.fetching, {})


class SendCompactFloodTests(SynchronousTestCase):
    def test_choices_from_many_claimed_peers_stay_bounded(self):
        """POST /send_compact from 1,000 claimed URLs of one host leaves at most MAX_PUSH_TO wishes and the
        inbound cap of inbound peers; none of them is pushed to, as none is a relay peer."""
        service = funded_node()
        client = APIClient(self, service)
        for port in range(20000, 21000):
            answer = client.request("POST", "/send_compact", data=b"\x01", content_type="application/octet-stream",
                                    headers={"X-ChainCore-Peer": f"http://127.0.0.1:{port}"})
            self.assertEqual(answer.status, 204)
        peers = service.peers
        self.assertLessEqual(len(peers.relay.push_to), relay.MAX_PUSH_TO)
        self.assertLessEqual(len(peers.discovery._inbound), peers.discovery.max_inbound)
        self.assertEqual(peers.discovery.relay_peers(), [])


class TxRequestTests(SyncTestCase):
    """Requests for transactions by id to one peer: how many at once, and what waits behind them."""

    def setUp(self):
        super().setUp()
        self.slow = self.network.add(NodePeer(url(5001), self.clock, funded_chain(), network=self.network))
        self.honest = self.network.add(NodePeer(url(5002), self.clock, funded_chain(), network=self.network))
        self.ours = self.me(funded_chain(), self.slow, self.honest)

    def test_ids_announced_one_at_a_time_to_a_stalling_peer_hold_few_requests(self):
        """A peer announcing 1,000 ids one announcement each and never answering /txs has at most
        MAX_TX_REQUESTS_PER_PEER requests of ours open (or queued) at once, not one per announcement; an id
        waiting behind them is asked at once of another peer that announces it."""
        self.slow.stalled.add("/txs")
        for n in range(1000):
            self.ours.relay.announced_txs(self.slow.url, [n.to_bytes(32, "big")])
        self.assertEqual(self.slow.count("/txs", "POST"), relay.MAX_TX_REQUESTS_PER_PEER)
        tx = payments(1)[0]
        settled(self.honest.node.submit_tx(tx))
        self.ours.relay.announced_txs(self.slow.url, [tx.tx_id])
        self.ours.relay.announced_txs(self.honest.url, [tx.tx_id])
        self.assertIn(tx.tx_id, self.ours.node.mempool)

    def test_batches_announced_while_requests_are_open_are_asked_when_they_answer(self):
        """Ids announced while a peer's requests are open wait and go out together once one answers: nothing
        an honest peer on a slow link announces is dropped."""
        txs = payments(6)
        for tx in txs:
            settled(self.slow.node.submit_tx(tx))
        self.slow.held.add("/txs")
        for tx in txs:
            self.ours.relay.announced_txs(self.slow.url, [tx.tx_id])
        self.assertEqual(self.slow.count("/txs", "POST"), relay.MAX_TX_REQUESTS_PER_PEER)
        self.slow.held.discard("/txs")
        self.slow.release()
        self.network.flush()
        self.assertTrue(all(tx.tx_id in self.ours.node.mempool for tx in txs))
        self.assertEqual(self.slow.count("/txs", "POST"), relay.MAX_TX_REQUESTS_PER_PEER + 1)


class StallTests(SyncTestCase):
    def test_an_announcer_that_never_answers_block_txs_gives_way_to_another(self):
        """The first announcer serves the compact form and never answers /block_txs: the block comes from the
        second announcer once the request times out (within the fetch deadline), and no fetch is left."""
        block = make_block(funded_chain()[-1], payments(2), pay_to=BOB)
        liar = self.network.add(NodePeer(url(5001), self.clock, funded_chain() + (block,), network=self.network))
        honest = self.network.add(NodePeer(url(5002), self.clock, funded_chain() + (block,), network=self.network))
        ours = self.me(funded_chain(), liar, honest)
        liar.stalled.add("/block_txs")
        self.assertEqual(ours.relay.announced(liar.url, block.header), "fetching")
        self.assertEqual(ours.relay.announced(honest.url, block.header), "known")
        self.clock.advance(relay.FETCH_DEADLINE_S)
        self.assertEqual(ours.tip(), block.hash)
        self.assertEqual(ours.relay.fetching, {})
        self.assertIn(liar.url, ours.discovery.active_peers())  # silence is no misbehaviour
