"""The sync state machine against real nodes on a fake network, driven by a Clock: rounds, catch-up,
forks, peers whose chain moves, peers that lie or stay silent, and mempool exchange."""

import functools
import math

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import jsonview
from chaincore.core.block import Block
from chaincore.core.tx import OutPoint
from chaincore.p2p.client import DATA_TIMEOUT_S, HEALTH_TIMEOUT_S
from chaincore.p2p.peers import BAN_THRESHOLD, PENALTIES, RECHECK_S
from chaincore.p2p.download import MAX_BLOCKS_PER_REQUEST as BLOCKS_PER_REQUEST
from tests.support.api import funded_chain
from tests.support.builders import ALICE, BOB, CAROL, regtest_chain, signed_tx

from .fakes import FakeNetwork, NodePeer
from tests.support.nodes import settled

ME = "http://localhost:5000"
COIN = 100_000_000


@functools.lru_cache(maxsize=None)
def main_chain() -> tuple:
    """[genesis, b1, ..., b260] paying ALICE; built once per run."""
    return tuple(regtest_chain(260))


@functools.lru_cache(maxsize=None)
def branch(fork_height: int, length: int) -> tuple:
    """main_chain() up to fork_height, then `length` blocks of another branch (paying BOB)."""
    base = main_chain()[:fork_height + 1]
    return tuple(base) + tuple(regtest_chain(length, pay_to=BOB, start=base[-1])[1:])


def url(port: int) -> str:
    return f"http://localhost:{port}"


class SyncTestCase(SynchronousTestCase):
    """A Clock past every test chain's timestamps, a FakeNetwork, and builders of our node and its peers."""

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(max(main_chain()[-1].header.timestamp, funded_chain()[-1].header.timestamp) + 3600)
        self.network = FakeNetwork()

    def peer(self, port: int, blocks) -> NodePeer:
        return self.network.add(NodePeer(url(port), self.clock, blocks))

    def pair(self) -> tuple:
        """Our node and one peer on the funded chain, each the other's only peer."""
        chain = funded_chain()
        a = self.network.add(NodePeer(url(5001), self.clock, chain, network=self.network, seeds=[url(5002)]))
        b = self.network.add(NodePeer(url(5002), self.clock, chain, network=self.network, seeds=[url(5001)]))
        for node in (a, b):
            self.successResultOf(node.discovery.run_once())
        self.assertEqual((a.discovery.active_peers(), b.discovery.active_peers()), ([b.url], [a.url]))
        return a, b

    def me(self, blocks, *peers, store=None) -> NodePeer:
        """Our node (on store, default a MemoryStore), wired to the network, with the given peers active after
        one discovery round."""
        me = self.network.add(NodePeer(ME, self.clock, blocks, network=self.network, seeds=[p.url for p in peers],
                                       store=store))
        me.node.syncing = True  # as in start-up: finding peers does not start a catch-up by itself
        self.successResultOf(me.discovery.run_once())
        me.node.syncing = False
        self.assertEqual(me.discovery.active_peers(), sorted(p.url for p in peers))
        for p in peers:
            p.requests.clear()
            p.queries.clear()
        return me

    def round(self, me):
        return self.successResultOf(me.sync.sync_round())


class RoundTests(SyncTestCase):
    def test_in_sync_round_costs_one_status_per_peer(self):
        """A round with peers on our tip asks each for /status once and nothing else, in under 2 kB each."""
        chain = main_chain()[:11]
        peers = [self.peer(5001 + i, chain) for i in range(3)]
        me = self.me(chain, *peers)
        before = {p.url: me.client.traffic(p.url) for p in peers}
        self.assertIsNone(self.round(me))
        for p in peers:
            self.assertEqual(p.requests, [("GET", "/status")])
            after = me.client.traffic(p.url)
            spent = (after.bytes_sent + after.bytes_received
                     - before[p.url].bytes_sent - before[p.url].bytes_received)
            self.assertLess(spent, 2048)
        self.assertEqual(me.tip(), chain[-1].hash)

    def test_a_good_poll_spares_the_peer_its_probe(self):
        """An outbound peer that answers its sync poll is not probed by discovery at its old recheck time: an
        idle link carries the poll alone, not the poll and a probe of the same /status."""
        chain = main_chain()[:11]
        peer = self.peer(5001, chain)
        me = self.me(chain, peer)
        self.clock.advance(RECHECK_S - 1)
        self.round(me)  # the poll, just before discovery's recheck was due
        self.clock.advance(2)
        self.successResultOf(me.discovery.run_once())
        self.assertEqual(peer.count("/status"), 1)
        self.assertGreater(me.discovery.table.next_probe_at(peer.url), self.clock.seconds() + RECHECK_S - 5)

    def test_behind_by_n_blocks_fetches_headers_once_and_blocks_in_batches(self):
        """Behind by N blocks, catch-up asks /headers once and each missing height of /blocks once, in at most
        ceil(N/100) + 1 requests (the first asks for a few blocks until their size is known)."""
        for n in (1, 100, 101, 250):
            self.network = FakeNetwork()
            peer = self.peer(5001, main_chain()[:11 + n])
            me = self.me(main_chain()[:11], peer)
            self.assertEqual(self.round(me), peer.url)
            self.assertEqual(me.tip(), peer.tip(), f"behind by {n}")
            self.assertEqual(peer.count("/headers"), 1, f"behind by {n}")
            self.assertLessEqual(peer.count("/blocks"), math.ceil(n / BLOCKS_PER_REQUEST) + 1, f"behind by {n}")
            asked = [h for path, q in peer.queries if path == "/blocks"
                     for h in range(int(q["start"]), int(q["start"]) + int(q["limit"]))]
            self.assertEqual(asked, list(range(11, 11 + n)))

    def test_catch_up_downloads_canonical_bytes(self):
        """A catch-up of 150 blocks receives them as framed canonical bytes: the /blocks bodies are within
        1% of the blocks' own bytes."""
        peer = self.peer(5001, main_chain()[:161])
        me = self.me(main_chain()[:11], peer)
        before = me.client.traffic(peer.url).bytes_received
        self.round(me)
        self.assertEqual(me.tip(), peer.tip())
        canonical = sum(len(b.raw) for b in main_chain()[11:161])
        received = me.client.traffic(peer.url).bytes_received - before
        headers_and_status = 1 + 150 * 121 + 1000  # the /headers list, and a /status answer at most
        self.assertLessEqual(received - headers_and_status, canonical * 1.01)
        self.assertGreaterEqual(received, canonical)

    def test_peer_on_heavier_fork_wins_by_reorganisation(self):
        """A peer on a heavier branch: our locator finds the fork point, we fetch only its branch and switch."""
        ours = main_chain()[:21]
        theirs = branch(15, 8)
        peer = self.peer(5001, theirs)
        me = self.me(ours, peer)
        self.assertEqual(self.round(me), peer.url)
        self.assertEqual(me.tip(), theirs[-1].hash)
        self.assertEqual(me.node.chain.height, 23)
        self.assertFalse(me.node.chain.is_main(ours[20].hash))
        self.assertTrue(me.node.chain.is_main(ours[15].hash))
        asked = [h for path, q in peer.queries if path == "/blocks"
                 for h in range(int(q["start"]), int(q["start"]) + int(q["limit"]))]
        self.assertEqual(asked, list(range(16, 24)))

    def test_lighter_fork_is_left_alone(self):
        """A peer on a branch with less work than ours costs one /status and changes nothing."""
        peer = self.peer(5001, branch(15, 3))
        me = self.me(main_chain()[:21], peer)
        self.assertIsNone(self.round(me))
        self.assertEqual(peer.requests, [("GET", "/status")])
        self.assertEqual(me.tip(), main_chain()[20].hash)

    def test_peer_whose_blocks_do_not_match_its_headers_is_penalised_and_the_round_goes_on(self):
        """/blocks that do not match the headers asked for cost the peer unexpected-block points and drop it
        from the catch-up, which goes on with the other peer; once it serves its headers' blocks, the next
        round syncs with it again."""
        moving = self.peer(5001, main_chain()[:41])
        other = self.peer(5002, main_chain()[:31])
        moved_to = branch(10, 40)

        def other_branch(request):
            start, limit = int(request.args[b"start"][0]), int(request.args[b"limit"][0])
            return 200, {"blocks": [jsonview.block_to_json(b) for b in moved_to[start:start + limit]]}

        moving.canned["/blocks"] = other_branch
        me = self.me(main_chain()[:11], moving, other)
        self.assertEqual(self.round(me), moving.url)
        self.assertEqual(me.tip(), other.tip())
        self.assertIn(moving.url, me.discovery.active_peers())
        record = me.discovery.table.get(moving.url)
        self.assertEqual((record.score, record.failures), (PENALTIES["unexpected-block"], 0))
        del moving.canned["/blocks"]
        self.round(me)
        self.assertEqual(me.tip(), moving.tip())

    def test_invalid_block_is_penalised_then_banned(self):
        """A peer serving a block with a wrong merkle root loses points each time and is banned at the
        threshold; the good blocks it sent before stay connected, and a banned peer is asked nothing."""
        liar = self.peer(5001, main_chain()[:41])
        chain, bad_height = main_chain(), 16
        wrong_coinbase = branch(10, 10)[bad_height].transactions

        def with_bad_block(request):
            start, limit = int(request.args[b"start"][0]), int(request.args[b"limit"][0])
            blocks = [Block(b.header, wrong_coinbase) if b.height == bad_height else b
                      for b in chain[start:min(start + limit, 41)]]
            return 200, {"blocks": [jsonview.block_to_json(b) for b in blocks]}

        liar.canned["/blocks"] = with_bad_block
        me = self.me(chain[:11], liar)
        points = PENALTIES["bad-merkle-root"]
        self.round(me)
        self.assertEqual(me.node.chain.height, bad_height - 1)
        self.assertEqual(me.discovery.table.get(liar.url).score, points)
        self.assertIn(liar.url, me.discovery.active_peers())
        offences = 1
        while offences * points < BAN_THRESHOLD:
            self.round(me)
            offences += 1
        self.assertEqual(offences, 2)
        self.assertTrue(me.discovery.table.is_banned(liar.url, self.clock.seconds()))
        self.assertEqual(me.discovery.active_peers(), [])
        asked = len(liar.requests)
        self.successResultOf(me.discovery.run_once())
        self.round(me)
        self.assertEqual(len(liar.requests), asked)
        self.assertEqual(me.node.chain.height, bad_height - 1)


class SilentPeerTests(SyncTestCase):
    def test_silent_peer_times_out_while_the_other_serves_the_catch_up(self):
        """The peer with most work never answers /headers: the other peer's blocks come in meanwhile, and
        after 5 s the silent one is dropped (a failure, not a penalty) and the round ends on the other's tip."""
        silent = self.peer(5001, main_chain()[:41])
        good = self.peer(5002, main_chain()[:31])
        me = self.me(main_chain()[:11], silent, good)
        silent.stalled.add("/headers")
        d = me.sync.sync_round()
        self.clock.advance(DATA_TIMEOUT_S - 0.1)
        self.assertNoResult(d)
        self.assertEqual(me.tip(), good.tip())
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d), silent.url)
        self.assertNotIn(silent.url, me.discovery.active_peers())
        self.assertEqual(me.discovery.table.get(silent.url).score, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_peer_silent_on_status_delays_the_round_by_the_health_timeout_only(self):
        """A peer that never answers /status holds the round for 2 s; then it ends on the other peer's tip."""
        silent = self.peer(5001, main_chain()[:11])
        good = self.peer(5002, main_chain()[:31])
        me = self.me(main_chain()[:11], silent, good)
        silent.stalled.add("/status")
        d = me.sync.sync_round()
        self.assertNoResult(d)
        self.clock.advance(HEALTH_TIMEOUT_S)
        self.assertEqual(self.successResultOf(d), good.url)
        self.assertEqual(me.tip(), good.tip())
        self.assertEqual(me.discovery.active_peers(), [good.url])


class MempoolExchangeTests(SyncTestCase):
    def spend(self, height: int, to, amount: int):
        coinbase = funded_chain()[height].transactions[0]
        return signed_tx([(OutPoint(coinbase.tx_id, 0), ALICE)],
                         [(to, amount), (ALICE, coinbase.output_total - amount - 10_000)])

    def test_takes_valid_transactions_and_ignores_conflicts(self):
        """Exchange takes the peer's new valid transactions, keeps ours where they conflict, penalises nobody."""
        peer = self.peer(5001, funded_chain())
        me = self.me(funded_chain(), peer)
        theirs_conflicting, theirs_new, ours = self.spend(1, BOB, COIN), self.spend(2, BOB, COIN), \
            self.spend(1, CAROL, 2 * COIN)
        for tx in (theirs_conflicting, theirs_new):
            settled(peer.node.submit_tx(tx))
        settled(me.node.submit_tx(ours))
        self.assertEqual(self.successResultOf(me.sync.exchange_mempool(peer.url)), 1)
        self.assertIn(theirs_new.tx_id, me.node.mempool)
        self.assertIn(ours.tx_id, me.node.mempool)
        self.assertNotIn(theirs_conflicting.tx_id, me.node.mempool)
        self.assertEqual(me.discovery.table.get(peer.url).score, 0)
        self.assertEqual(self.successResultOf(me.sync.exchange_mempool(peer.url)), 0)

    def test_transaction_with_a_bad_signature_is_penalised(self):
        """A mempool answer holding a transaction whose signature fails costs the peer the rule's points."""
        peer = self.peer(5001, funded_chain())
        coin = OutPoint(funded_chain()[1].transactions[0].tx_id, 0)
        good = signed_tx([(coin, ALICE)], [(BOB, 49 * COIN)])
        sig = bytearray(good.inputs[0].signature)
        sig[7] ^= 1
        bad = good.with_signatures([bytes(sig)])
        peer.canned["/transactions"] = lambda request: (200, {"transactions": [jsonview.tx_to_json(bad)]})
        me = self.me(funded_chain(), peer)
        self.assertEqual(self.successResultOf(me.sync.exchange_mempool(peer.url)), 0)
        self.assertEqual(me.discovery.table.get(peer.url).score, PENALTIES["bad-signature"])
        self.assertGreater(PENALTIES["bad-signature"], 0)
        self.assertNotIn(bad.tx_id, me.node.mempool)

    def test_malformed_transaction_is_penalised(self):
        """A mempool answer holding a transaction that is not one costs the peer points."""
        peer = self.peer(5001, funded_chain()[:2])
        peer.canned["/transactions"] = lambda request: (200, {"transactions": [{"tx_id": "zz"}]})
        me = self.me(funded_chain()[:2], peer)
        self.assertEqual(self.successResultOf(me.sync.exchange_mempool(peer.url)), 0)
        self.assertEqual(me.discovery.table.get(peer.url).score, PENALTIES["malformed"])
