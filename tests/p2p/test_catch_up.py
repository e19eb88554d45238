"""Headers-first catch-up through the Synchronizer, on a Clock and a fake network: each misbehaviour a peer
can show costs it its penalty and the catch-up goes on with the honest peer; the byte window, the per-peer
bound and the stall deadline hold; a fork deeper than one /headers answer reorganises."""

import functools
import gc
import json

from twisted.internet import task

from chaincore.core import jsonview
from chaincore.core.store import CachedStore, MemoryStore
from chaincore.p2p import sync
from chaincore.p2p.client import PeerClient
from chaincore.p2p.peers import PENALTIES
from chaincore.core.block import block_work
from chaincore.core.tx import OutPoint
from tests.support.api import funded_chain, mature_outpoint
from tests.support.builders import ALICE, BOB, make_block, regtest_chain, signed_tx
from tests.support.nodes import settled

from .test_sync import MempoolExchangeTests, SyncTestCase, main_chain

HUGE = "ff" * 32


@functools.lru_cache(maxsize=None)
def other_branch() -> tuple:
    """60 blocks forked at genesis: more work than main_chain()[:51]."""
    return tuple(regtest_chain(60, extra=b"other"))


def headers_after(chain, locator: list, batch: int) -> tuple:
    """What an honest peer holding chain answers to locator, batch headers at a time: (headers JSON, more)."""
    index = {b.hash.hex(): n for n, b in enumerate(chain)}
    start = next((index[h] for h in locator if h in index), 0)
    part = chain[start + 1:start + 1 + batch]
    return [jsonview.header_to_json(b.header) for b in part], start + 1 + batch < len(chain)


def locator_of(request) -> list:
    return [h for h in request.args.get(b"locator", [b""])[0].decode().split(",") if h]


class MisbehaviourTests(SyncTestCase):
    def liar(self, port: int, headers):
        """A peer on our chain that claims huge chainwork and answers /headers with headers(request)."""
        liar = self.peer(port, main_chain()[:11])
        status = dict(liar.node.status(), chainwork=HUGE)
        liar.canned["/status"] = lambda request: (200, dict(status, peer_count=0))
        liar.canned["/headers"] = lambda request: (200, {"headers": headers(request), "more": False})
        return liar

    def check_penalised(self, code: str, headers) -> None:
        honest = self.peer(5002, main_chain()[:41])
        liar = self.liar(5001, headers)
        me = self.me(main_chain()[:11], liar, honest)
        self.round(me)
        self.assertEqual(me.tip(), honest.tip())
        self.assertEqual(me.discovery.table.get(liar.url).score, PENALTIES[code])
        self.assertEqual(me.discovery.table.get(honest.url).score, 0)
        self.assertEqual(liar.count("/blocks"), 0)

    def test_unconnected_headers(self):
        """Headers that follow no hash of our locator cost unconnected-headers; the honest tip is reached."""
        junk = regtest_chain(6, extra=b"junk")
        self.check_penalised("unconnected-headers", lambda r: [jsonview.header_to_json(b.header) for b in junk[3:]])

    def test_headers_that_do_not_link(self):
        """Headers whose second does not follow the first cost unconnected-headers."""
        chain = main_chain()
        self.check_penalised("unconnected-headers",
                             lambda r: [jsonview.header_to_json(chain[n].header) for n in (11, 13)])

    def test_duplicate_headers(self):
        """The same headers twice in one answer cost duplicate-headers."""
        chain = main_chain()
        self.check_penalised("duplicate-headers",
                             lambda r: [jsonview.header_to_json(chain[n].header) for n in (11, 12, 11, 12)])

    def test_unbacked_chainwork(self):
        """A peer whose headers end far short of the chainwork its /status claimed costs unbacked-chainwork."""
        self.check_penalised("unbacked-chainwork", lambda r: headers_after(main_chain()[:14], locator_of(r), 50)[0])

    def test_malformed_headers(self):
        """A /headers answer that is not headers costs malformed."""
        self.check_penalised("malformed", lambda r: [{"index": "eleven"}])

    def test_repeated_headers(self):
        """A peer that answers twice with the same headers it already sent costs repeated-headers."""
        chain = main_chain()
        honest = self.peer(5002, chain[:41])
        liar = self.liar(5001, None)
        liar.canned["/headers"] = lambda request: (200, {"headers": [jsonview.header_to_json(b.header)
                                                                     for b in chain[10:13]], "more": True})
        me = self.me(chain[:11], liar, honest)
        self.round(me)
        self.assertEqual(me.tip(), honest.tip())
        self.assertEqual(liar.count("/headers"), 2)
        self.assertEqual(me.discovery.table.get(liar.url).score, PENALTIES["repeated-headers"])

    def test_unexpected_blocks(self):
        """Blocks other than the ones asked for cost unexpected-block, and the honest peer delivers them."""
        chain = main_chain()
        honest = self.peer(5002, chain[:41])
        liar = self.peer(5001, chain[:41])
        liar.canned["/blocks"] = lambda request: (200, {"blocks": [jsonview.block_to_json(chain[30])]})
        me = self.me(chain[:11], liar, honest)
        self.round(me)
        self.assertEqual(me.tip(), honest.tip())
        self.assertEqual(me.discovery.table.get(liar.url).score, PENALTIES["unexpected-block"])

    def test_a_served_block_spending_a_missing_coin_costs_a_blocks_points(self):
        """A peer whose chain holds a block spending a coin that does not exist is charged as for a block
        breaking a rule (bad-block), not a transaction's missing input (no points): serving such chains again
        and again gets it banned."""
        chain = funded_chain()
        ghost = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 1000)])
        bad = make_block(chain[-1], [signed_tx([(OutPoint(ghost.tx_id, 0), BOB)], [(ALICE, 500)])], fees=500)
        liar = self.peer(5001, chain)
        status = liar.node.status()
        status["chainwork"] = f"{int(status['chainwork'], 16) + block_work(bad.header.target):064x}"
        liar.canned["/status"] = lambda request: (200, dict(status, peer_count=0))
        liar.canned["/headers"] = lambda request: (200, dict(zip(("headers", "more"), headers_after(
            chain + (bad,), locator_of(request), 2000))))
        liar.canned["/blocks"] = lambda request: (200, {"blocks": [jsonview.block_to_json(bad)]})
        me = self.me(chain, liar)
        self.round(me)
        self.assertEqual(me.tip(), chain[-1].hash)
        self.assertEqual(liar.count("/blocks"), 1)
        self.assertEqual(me.discovery.table.get(liar.url).score, PENALTIES["bad-block"])

    def test_liar_banned_after_repeated_lies_and_asked_nothing_more(self):
        """A liar that keeps lying is banned at the threshold and asked nothing after; the node stays on the
        honest tip."""
        junk = regtest_chain(6, extra=b"junk")
        honest = self.peer(5002, main_chain()[:41])
        liar = self.liar(5001, lambda r: [jsonview.header_to_json(b.header) for b in junk[3:]])
        me = self.me(main_chain()[:11], liar, honest)
        for _ in range(5):
            self.round(me)
            self.successResultOf(me.discovery.run_once())
        self.assertTrue(me.discovery.table.is_banned(liar.url, self.clock.seconds()))
        asked = len(liar.requests)
        self.round(me)
        self.assertEqual(len(liar.requests), asked)
        self.assertEqual(me.tip(), honest.tip())


class WindowTests(SyncTestCase):
    def test_several_peers_serve_one_catch_up(self):
        """Two peers on the same heavier chain both answer /blocks for one catch-up."""
        chain = main_chain()
        a, b = self.peer(5001, chain[:201]), self.peer(5002, chain[:201])
        me = self.me(chain[:11], a, b)
        me.sync.peer_bytes = 60_000  # a few dozen small blocks per peer at a time
        self.round(me)
        self.assertEqual(me.tip(), a.tip())
        self.assertGreater(a.count("/blocks"), 0)
        self.assertGreater(b.count("/blocks"), 0)
        asked = sorted(h for p in (a, b) for path, q in p.queries if path == "/blocks"
                       for h in range(int(q["start"]), int(q["start"]) + int(q["limit"])))
        self.assertEqual(asked, list(range(11, 201)))

    def test_collector_thresholds_raised_only_while_catching_up(self):
        """While a catch-up runs the cyclic collector uses the catch-up's thresholds; after it, the ones before,
        and the connections it held in memory are on disk."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        peer.held.add("/blocks")
        me = self.me(chain[:11], peer, store=CachedStore(MemoryStore()))
        before = gc.get_threshold()
        d = me.sync.sync_round()
        self.assertEqual(gc.get_threshold(), sync.CATCH_UP_GC_THRESHOLD)
        while peer._held_requests:
            peer.release()
            self.network.flush()
        self.successResultOf(d)
        self.assertEqual(me.tip(), peer.tip())
        self.assertEqual(gc.get_threshold(), before)
        self.assertFalse(me.node.store.dirty)
        self.assertEqual(me.node.store.inner.tip(), peer.node.chain.tip.hash)

    def test_bytes_in_flight_stay_within_the_window(self):
        """With every /blocks answer held, the bytes asked for at once stay within the window, and each
        request's byte cap within the peer's bound (one block may pass it)."""
        chain = main_chain()
        peer = self.peer(5001, chain[:201])
        peer.held.add("/blocks")
        me = self.me(chain[:11], peer)
        me.sync.window_bytes, me.sync.peer_bytes = 12_000_000, 7_000_000
        d = me.sync.sync_round()
        while peer._held_requests:
            caps = [int(q["max_bytes"]) for path, q in peer.queries if path == "/blocks"]
            self.assertLessEqual(sum(caps), me.sync.window_bytes)
            peer.queries.clear()
            peer.release()
            self.network.flush()
        self.successResultOf(d)
        self.assertEqual(me.tip(), peer.tip())

    def test_blocks_the_node_is_taking_in_are_asked_for_once_and_never_buffered(self):
        """While the node takes a run in (2 s each), later plans ask for none of it again, the buffer never holds
        a stored block, and every block is fetched exactly once."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        me = self.me(chain[:11], peer)
        me.sync.peer_bytes = 20_000  # a few small blocks per request: many plans while runs are with the node
        take = me.node.submit_blocks
        me.node.submit_blocks = lambda blocks, **kw: task.deferLater(self.clock, 2.0, take, blocks, **kw)
        d = me.sync.sync_round()
        for _ in range(200):
            self.network.flush()
            session = me.sync._session
            if session is not None:
                self.assertEqual([h for h in session.buffer if me.node.chain.entry(h) is not None], [])
            if d.called:
                break
            self.clock.advance(0.5)
        self.successResultOf(d)
        self.assertEqual(me.tip(), peer.tip())
        asked = sorted(h for path, q in peer.queries if path == "/blocks"
                       for h in range(int(q["start"]), int(q["start"]) + int(q["limit"])))
        self.assertEqual(asked, list(range(11, 41)))

    def test_signatures_of_the_next_blocks_go_out_while_a_run_is_connected(self):
        """While the node takes a run in (2 s each), the waiting blocks after it are handed to preverify_blocks
        at once, each once, and every block after the first run was preverified before its own run."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        me = self.me(chain[:11], peer)
        me.sync.peer_bytes = 20_000  # a few small blocks per request: blocks arrive while runs are with the node
        self.patch(sync, "RUN_BYTES", 1)  # one block a run
        events, taking = [], []
        take, ahead = me.node.submit_blocks, me.node.preverify_blocks

        def submit(blocks, **kw):
            events.append(("run", [b.height for b in blocks]))
            taking.append(True)
            d = task.deferLater(self.clock, 2.0, take, blocks, **kw)
            return d.addBoth(lambda r: (taking.pop(), r)[1])

        def preverify(blocks):
            self.assertTrue(taking, "blocks preverified ahead while no run was with the node")
            events.append(("ahead", [b.height for b in blocks]))
            return ahead(blocks)

        me.node.submit_blocks, me.node.preverify_blocks = submit, preverify
        d = me.sync.sync_round()
        for _ in range(200):
            self.network.flush()
            if d.called:
                break
            self.clock.advance(0.5)
        self.successResultOf(d)
        self.assertEqual(me.tip(), peer.tip())
        runs = [heights for kind, heights in events if kind == "run"]
        self.assertGreater(len(runs), 2)
        preverified = [h for kind, heights in events if kind == "ahead" for h in heights]
        self.assertEqual(len(preverified), len(set(preverified)))  # each block once
        seen = set()
        for kind, heights in events:
            if kind == "ahead":
                seen.update(heights)
            elif heights[0] > runs[0][-1]:
                self.assertTrue(set(heights) <= seen, f"run {heights} was not preverified ahead")

    def test_deep_fork_reorganises_across_several_header_answers(self):
        """A 60-block branch forked at genesis, served 20 headers per answer, reorganises a 50-block node."""
        ours, theirs = main_chain()[:51], other_branch()
        peer = self.peer(5001, theirs)
        peer.canned["/headers"] = lambda request: (200, dict(zip(("headers", "more"),
                                                                 headers_after(theirs, locator_of(request), 20))))
        me = self.me(ours, peer)
        self.round(me)
        self.assertEqual(me.tip(), theirs[-1].hash)
        self.assertEqual(peer.count("/headers"), 3)
        self.assertFalse(me.node.chain.is_main(ours[1].hash))


class StallTests(SyncTestCase):
    def test_stalled_peer_is_penalised_and_its_blocks_go_to_the_other(self):
        """A peer that never answers /blocks is stalled at its deadline (not before), penalised, and the other
        peer delivers its blocks in the same catch-up."""
        chain = main_chain()
        staller, honest = self.peer(5001, chain[:41]), self.peer(5002, chain[:41])
        staller.stalled.add("/blocks")
        honest.held.add("/blocks")
        me = self.me(chain[:11], staller, honest)
        me.sync.stall_timeout_s = 10.0
        d = me.sync.sync_round()
        self.assertGreater(staller.count("/blocks"), 0)
        honest.release()
        self.network.flush()
        self.clock.advance(10.0)
        self.assertNoResult(d)
        self.assertEqual(me.discovery.table.get(staller.url).score, 0)
        for _ in range(60):  # the deadline also allows the transfer time of the bytes asked for
            honest.release()  # the honest peer answers within a second
            self.network.flush()
            if me.tip() == honest.tip():
                break
            self.clock.advance(1.0)
        self.assertEqual(me.tip(), honest.tip())
        self.assertEqual(me.discovery.table.get(staller.url).score, PENALTIES["stalled"])
        self.assertEqual(self.successResultOf(d), honest.url if honest.url < staller.url else staller.url)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class AnswerCapTests(SyncTestCase):
    def test_blocks_answer_stops_at_its_byte_cap(self):
        """/blocks with max_bytes answers whole blocks up to the cap (at least one), with more and next."""
        chain = main_chain()
        peer = self.peer(5001, chain[:101])
        one = len(json.dumps(jsonview.block_to_json(chain[1]), separators=(",", ":")))
        code, answer = self.successResultOf(me_client(self, peer).get_json(
            peer.url, "/blocks", {"start": "1", "limit": "50", "max_bytes": str(3 * one + 10)}))
        self.assertEqual(code, 200)
        self.assertEqual([b["index"] for b in answer["blocks"]], [1, 2, 3])
        self.assertEqual((answer["more"], answer["next"]), (True, 4))
        _, answer = self.successResultOf(me_client(self, peer).get_json(
            peer.url, "/blocks", {"start": "1", "limit": "50", "max_bytes": "1"}))
        self.assertEqual(len(answer["blocks"]), 1)

    def test_headers_answer_says_more_when_the_tip_is_further(self):
        """/headers says more when its byte cap or limit stopped before the tip, not otherwise."""
        chain = main_chain()
        peer = self.peer(5001, chain[:101])
        client = me_client(self, peer)
        _, answer = self.successResultOf(client.get_json(peer.url, "/headers", {
            "locator": chain[0].hash.hex(), "max_bytes": "2000"}))
        self.assertTrue(answer["more"])
        self.assertLess(len(answer["headers"]), 10)
        _, answer = self.successResultOf(client.get_json(peer.url, "/headers", {"locator": chain[0].hash.hex()}))
        self.assertEqual((len(answer["headers"]), answer["more"]), (100, False))

    def test_transactions_answer_stops_at_its_byte_cap(self):
        """/transactions with a small max_bytes answers one transaction and more."""
        peer = self.peer(5001, funded_chain())
        spend = MempoolExchangeTests.spend
        for height in (1, 2):
            settled(peer.node.submit_tx(spend(self, height, BOB, 100_000_000)))
        _, answer = self.successResultOf(me_client(self, peer).get_json(peer.url, "/transactions",
                                                                        {"max_bytes": "10"}))
        self.assertEqual((len(answer["transactions"]), answer["more"]), (1, True))


def me_client(test, peer):
    """A PeerClient on the test's fake network."""
    return PeerClient(test.network.client(), test.clock, "http://localhost:5000")


class BusyPeerTests(SyncTestCase):
    def busy_blocks(self, peer, times: int) -> None:
        """peer answers /blocks 429 with Retry-After 3 the first `times` times, then as it should."""
        answered = {"busy": 0}

        def busy(request):
            answered["busy"] += 1
            if answered["busy"] >= times:
                del peer.canned["/blocks"]  # the next request gets the real answer
            request.setHeader(b"Retry-After", b"3")
            return 429, {"error": "too many block requests; try again in 3 s"}

        peer.canned["/blocks"] = busy

    def test_busy_peer_is_asked_again_after_its_retry_after_not_dropped(self):
        """A peer that answers /blocks 429 stays active and unpenalised, is asked again once its Retry-After
        has passed (not before), and the catch-up reaches its tip."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        self.busy_blocks(peer, 2)
        me = self.me(chain[:11], peer)
        d = me.sync.sync_round()
        self.assertEqual(peer.count("/blocks"), 1)
        self.clock.advance(2.9)
        self.assertEqual(peer.count("/blocks"), 1)  # not before its Retry-After
        for _ in range(20):
            if me.tip() == peer.tip():
                break
            self.clock.advance(1.0)
        self.assertEqual(me.tip(), peer.tip())
        self.assertGreaterEqual(peer.count("/blocks"), 3)
        self.assertEqual(me.discovery.active_peers(), [peer.url])
        self.assertEqual(me.discovery.table.get(peer.url).score, 0)
        self.assertEqual(self.successResultOf(d), peer.url)

    def test_busy_peer_gives_its_blocks_to_another_meanwhile(self):
        """While one peer is busy, another serves the blocks it was asked for, in the same catch-up."""
        chain = main_chain()
        busy, other = self.peer(5001, chain[:41]), self.peer(5002, chain[:41])
        self.busy_blocks(busy, 1000)
        me = self.me(chain[:11], busy, other)
        d = me.sync.sync_round()
        for _ in range(5):
            if me.tip() == other.tip():
                break
            self.clock.advance(1.0)
        self.assertEqual(me.tip(), other.tip())
        self.assertIn(busy.url, me.discovery.active_peers())
        self.assertEqual(me.discovery.table.get(busy.url).score, 0)
        self.clock.advance(60)
        self.successResultOf(d)

    def test_peer_busy_for_good_leaves_the_catch_up(self):
        """A peer that answers nothing but 429 is dropped from the catch-up after a bounded number of tries,
        so the catch-up ends instead of waiting on it forever."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        self.busy_blocks(peer, 10_000)
        me = self.me(chain[:11], peer)
        d = me.sync.sync_round()
        for _ in range(sync.BUSY_ANSWERS_KEPT + 5):
            self.clock.advance(3.0)
        self.successResultOf(d)
        self.assertEqual(peer.count("/blocks"), sync.BUSY_ANSWERS_KEPT + 1)
        self.assertNotIn(peer.url, me.discovery.active_peers())
        self.assertEqual(me.discovery.table.get(peer.url).score, 0)  # a failure, not a penalty


class RelayDuringCatchUpTests(SyncTestCase):
    def test_blocks_taken_by_relay_meanwhile_are_not_asked_for_again(self):
        """Blocks the node takes by another way (relay) while a catch-up has them in flight leave the header
        tree: the catch-up delivers the blocks above them and reaches the tip, instead of asking for the
        taken ones again and again."""
        chain = main_chain()
        peer = self.peer(5001, chain[:41])
        peer.held.add("/blocks")
        me = self.me(chain[:11], peer)
        d = me.sync.sync_round()
        self.assertGreater(peer.count("/blocks"), 0)
        self.successResultOf(me.node.submit_blocks(list(chain[11:16]), source=peer.url))  # relay's way
        self.assertEqual(me.node.chain.height, 15)
        for _ in range(40):
            peer.release()
            self.network.flush()
            if me.tip() == peer.tip():
                break
            self.clock.advance(0.1)
        self.assertEqual(me.tip(), peer.tip())
        self.assertLessEqual(peer.count("/blocks"), 10)
        self.clock.advance(60)
        self.successResultOf(d)
