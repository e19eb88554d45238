"""The pure pieces together, as a driver will use them: header tree, download planner and a work-gated chain
state catch up across a fork deeper than one /headers answer, with two peers sharing the download, while a
lying peer is caught and penalised."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState, NotStored
from chaincore.core.params import REGTEST
from chaincore.core.store import MemoryStore
from chaincore.p2p.download import DownloadPlanner, Wanted
from chaincore.p2p.headers import HeaderTree
from chaincore.p2p.peers import penalty_for
from tests.support.builders import regtest_chain

NOW = REGTEST.genesis.header.timestamp + 1_000_000
BATCH = 20
OURS = regtest_chain(50)
HONEST = regtest_chain(60, extra=b"honest")  # forked at genesis, deeper than two answers
A, B, LIAR = "http://a", "http://b", "http://liar"


def answer(chain: list, locator: list) -> list:
    index = {b.hash: n for n, b in enumerate(chain)}
    start = next((index[h] for h in locator if h in index), 0)
    return [b.header for b in chain[start + 1:start + 1 + BATCH]]


class CatchUpTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.chain = ChainState(MemoryStore(), REGTEST, refuse_low_work=True)
        for block in OURS[1:]:
            self.chain.accept_block(block, NOW)
        self.tree = HeaderTree(REGTEST, self.chain)
        self.planner = DownloadPlanner(max_block_size=REGTEST.max_block_size, window_bytes=20_000,
                                       peer_bytes=10_000)
        self.penalties = {}

    def fetch_headers(self, peer: str, respond) -> None:
        """Ask peer for headers until it has nothing more or misbehaves; penalties are recorded."""
        while True:
            report = self.tree.receive(peer, respond(self.tree.ask(peer)), NOW, batch_limit=BATCH)
            if report.misbehaviour is not None:
                self.penalties[peer] = self.penalties.get(peer, 0) + penalty_for(report.misbehaviour.code)
                return
            if not report.more:
                return

    def test_deep_fork_reorganises_with_two_peers(self):
        """Blocks of a 60-block branch forked at genesis, fetched from two peers, reorganise a 50-block node."""
        self.assertIsInstance(self.chain.accept_block(HONEST[1], NOW), NotStored)  # unasked: nothing written
        for peer in (A, B):
            self.fetch_headers(peer, lambda locator: answer(HONEST, locator))
        self.assertEqual(self.tree.best().hash, HONEST[-1].hash)
        by_hash = {b.hash: b for b in HONEST}
        served = {A: 0, B: 0}
        for _ in range(200):
            self.tree.prune()
            best = self.tree.best()
            if best.hash == self.chain.tip.hash:
                break
            wanted = [Wanted(e.hash, e.height) for e in self.tree.path(best)]
            for request in self.planner.plan(wanted, [A, B], self.tree.serves, self.clock.seconds()):
                for block_hash in request.hashes:
                    block = by_hash[block_hash]
                    self.assertIsNone(self.planner.received(request.peer, block.hash, block.size,
                                                            self.clock.seconds()))
                    result = self.chain.accept_block(block, NOW, requested=True, source=request.peer)
                    self.assertNotIsInstance(result, NotStored)
                    served[request.peer] += 1
                self.planner.answered(request)
            self.clock.advance(1)
        self.assertEqual(self.chain.tip.hash, HONEST[-1].hash)
        self.assertTrue(all(served.values()), served)
        self.assertEqual(self.chain.orphan_count(), 0)

    def test_lying_peer_is_penalised_and_honest_headers_win(self):
        """A peer that claims huge work and streams duplicate, then unconnected headers is penalised each time."""
        junk = regtest_chain(5, extra=b"junk")
        claims = [lambda locator: answer(HONEST, locator)[:3] * 2,       # duplicates
                  lambda locator: [b.header for b in junk[3:]],         # unconnected
                  lambda locator: []]                                   # claims work it never shows
        for respond in claims:
            report = self.tree.receive(LIAR, respond(self.tree.ask(LIAR)), NOW, claimed_chainwork=10 ** 40,
                                       batch_limit=BATCH)
            self.assertIsNotNone(report.misbehaviour)
            self.penalties[LIAR] = self.penalties.get(LIAR, 0) + penalty_for(report.misbehaviour.code)
        self.assertGreaterEqual(self.penalties[LIAR], 60)
        self.tree.forget_peer(LIAR)
        self.fetch_headers(A, lambda locator: answer(HONEST, locator))
        self.assertNotIn(A, self.penalties)
        self.assertEqual(self.tree.best().hash, HONEST[-1].hash)

    def test_stalling_peer_hands_its_blocks_to_another(self):
        """A peer that never delivers is stalled at its deadline and its blocks go to the other peer at once."""
        for peer in (A, B):
            self.fetch_headers(peer, lambda locator: answer(HONEST, locator))
        wanted = [Wanted(e.hash, e.height) for e in self.tree.path(self.tree.best())]
        first = self.planner.plan(wanted, [A, B], self.tree.serves, self.clock.seconds())
        from_a = {h for r in first if r.peer == A for h in r.hashes}
        self.assertTrue(from_a)
        self.clock.advance(max(r.deadline for r in first))
        stalls = self.planner.stalls(self.clock.seconds())
        self.assertEqual([s.peer for s in stalls], [A])
        self.assertGreater(penalty_for(stalls[0].error.code), 0)
        again = self.planner.plan(wanted, [A, B], self.tree.serves, self.clock.seconds())
        self.assertEqual({r.peer for r in again}, {B})
        self.assertTrue(from_a <= {h for r in again for h in r.hashes})
