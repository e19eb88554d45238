"""ChainState's work gate and orphan bounds: nothing of a low-work branch nobody asked for is written.

A block whose branch (the block and the orphans waiting on it) has less work
than the tip is answered NotStored unless the caller asked for it; the orphan
pool is bounded in bytes per source and in total.
"""

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.chainstate import Accepted, ChainState, NotStored, Orphan
from chaincore.core.errors import TimeTooOld
from chaincore.core.params import REGTEST
from chaincore.core.store import MemoryStore
from chaincore.core.tx import make_coinbase
from tests.support.builders import make_block, payload, regtest_chain, solve, ALICE

NOW = REGTEST.genesis.header.timestamp + 1_000_000
BASE = regtest_chain(4)


def big_block(parent, n: int, size_bytes: int = 990_000) -> Block:
    """A sane child of parent of about size_bytes: its coinbase pays nothing to many outputs (tag n)."""
    outputs = [(payload(ALICE), 0)] * ((size_bytes - 200) // 29)
    coinbase = make_coinbase(parent.height + 1, outputs, n.to_bytes(4, "big"))
    header = Header(1, parent.height + 1, parent.hash, merkle_root([coinbase.tx_id]),
                    parent.header.timestamp + 60, REGTEST.pow_limit, 0)
    return Block(solve(header), (coinbase,))


def stored_bytes(store: MemoryStore) -> int:
    return sum(len(raw) for raw in store.blocks.values())


def new_chainstate(blocks) -> ChainState:
    cs = ChainState(MemoryStore(), REGTEST, refuse_low_work=True)
    for block in blocks:
        cs.accept_block(block, NOW)
    return cs


class WorkGateTests(SynchronousTestCase):
    def test_gate_is_off_unless_asked_for(self):
        """Without refuse_low_work every caller's block counts as requested: a light side block is stored."""
        cs = ChainState(MemoryStore(), REGTEST)
        for block in BASE[1:3]:
            cs.accept_block(block, NOW)
        self.assertIsInstance(cs.accept_block(make_block(BASE[0], extra=b"side"), NOW), Accepted)

    def test_unrequested_low_work_block_is_not_stored(self):
        """A child of genesis, unasked for, when the tip is at height 2, is answered NotStored and not written."""
        cs = new_chainstate(BASE[1:3])
        entries, blocks = dict(cs.store.entries), dict(cs.store.blocks)
        side = make_block(BASE[0], extra=b"side")
        result = cs.accept_block(side, NOW)
        self.assertIsInstance(result, NotStored)
        self.assertEqual(result.status, "not-stored")
        self.assertEqual((cs.store.entries, cs.store.blocks), (entries, blocks))
        self.assertFalse(cs.has_block(side.hash))

    def test_requested_low_work_block_is_stored(self):
        """The same block passed as requested (its header chain is heavier) is stored off the main chain."""
        cs = new_chainstate(BASE[1:3])
        side = make_block(BASE[0], extra=b"side")
        result = cs.accept_block(side, NOW, requested=True)
        self.assertIsInstance(result, Accepted)
        self.assertFalse(result.main_chain)
        self.assertIn(side.hash, cs.store.blocks)

    def test_refused_block_can_be_requested_later(self):
        """A block refused once is refused again unchecked, yet stored when it is later asked for."""
        cs = new_chainstate(BASE[1:3])
        side = make_block(BASE[0], extra=b"side")
        cs.accept_block(side, NOW)
        self.assertIsInstance(cs.accept_block(side, NOW), NotStored)
        self.assertIsInstance(cs.accept_block(side, NOW, requested=True), Accepted)

    def test_equal_work_block_is_stored(self):
        """A competing block with as much work as the tip (a lost race) is stored; the first-seen tip stays."""
        cs = new_chainstate(BASE[1:3])
        rival = make_block(BASE[1], extra=b"rival")
        result = cs.accept_block(rival, NOW)
        self.assertIsInstance(result, Accepted)
        self.assertEqual(cs.tip.hash, BASE[2].hash)

    def test_low_work_block_still_breaks_its_rules(self):
        """A low-work block that breaks a context rule raises that rule, so its sender is still penalised."""
        cs = new_chainstate(BASE[1:3])
        late = make_block(BASE[0], extra=b"side", timestamp=BASE[0].header.timestamp)
        err = self.assertRaises(TimeTooOld, cs.accept_block, late, NOW)
        self.assertEqual(err.code, "time-too-old")

    def test_branch_arriving_tip_first_is_stored(self):
        """A heavier branch sent tip first (orphans waiting) is stored and wins, though its first block is light."""
        cs = new_chainstate(BASE[1:3])
        side = regtest_chain(3, start=BASE[0], extra=b"side")[1:]
        for block in reversed(side[1:]):
            self.assertIsInstance(cs.accept_block(block, NOW), Orphan)
        result = cs.accept_block(side[0], NOW)
        self.assertTrue(result.main_chain)
        self.assertEqual(cs.tip.hash, side[-1].hash)

    def test_light_orphans_are_dropped_when_their_parent_comes(self):
        """An unasked orphan whose branch stays lighter than the tip is dropped, not written, when its parent comes."""
        cs = new_chainstate(BASE[1:4])
        light = make_block(BASE[0], extra=b"light")      # height 1, asked for below
        light_child = make_block(light, extra=b"light")  # height 2, unasked: lighter than the tip at 3
        self.assertIsInstance(cs.accept_block(light_child, NOW), Orphan)
        self.assertIsInstance(cs.accept_block(light, NOW, requested=True), Accepted)
        self.assertIn(light.hash, cs.store.blocks)
        self.assertNotIn(light_child.hash, cs.store.blocks)
        self.assertEqual(cs.orphan_count(), 0)

    def test_requested_orphans_are_stored_when_their_parent_comes(self):
        """Blocks asked for that arrive before their parent (several peers serve one catch-up) are all stored."""
        cs = new_chainstate(BASE[1:4])
        side = regtest_chain(2, start=BASE[0], extra=b"side")[1:]
        cs.accept_block(side[1], NOW, requested=True)
        self.assertIsInstance(cs.accept_block(side[0], NOW, requested=True), Accepted)
        self.assertEqual([b.hash in cs.store.blocks for b in side], [True, True])

    def test_thirty_junk_children_of_genesis_do_not_grow_the_store(self):
        """30 junk blocks of about 1 MB, children of genesis sent unasked to a node at height 2, write nothing."""
        cs = new_chainstate(BASE[1:3])
        before = stored_bytes(cs.store), len(cs.store.entries)
        for n in range(30):
            junk = big_block(BASE[0], n)
            self.assertGreater(junk.size, 900_000)
            self.assertIsInstance(cs.accept_block(junk, NOW, source="http://junk"), NotStored)
        self.assertEqual((stored_bytes(cs.store), len(cs.store.entries)), before)
        self.assertEqual(cs.orphan_bytes(), 0)


class OrphanBoundTests(SynchronousTestCase):
    def setUp(self):
        self.unknown = make_block(BASE[1], extra=b"unknown")  # never sent: its children are orphans

    def test_one_source_is_bounded_in_bytes(self):
        """A source's orphans beyond MAX_ORPHAN_BYTES_PER_SOURCE push out its own oldest, not others'."""
        self.cs = ChainState(MemoryStore(), REGTEST, max_orphan_bytes_per_source=3_000_000)
        honest = big_block(self.unknown, 0)
        self.cs.accept_block(honest, NOW, source="http://honest")
        flood = [big_block(self.unknown, n) for n in range(1, 6)]
        for block in flood:
            self.cs.accept_block(block, NOW, source="http://flood")
        self.assertLessEqual(self.cs.orphan_bytes("http://flood"), 3_000_000)
        self.assertTrue(self.cs.has_block(honest.hash))
        self.assertFalse(self.cs.has_block(flood[0].hash))
        self.assertTrue(self.cs.has_block(flood[-1].hash))

    def test_total_is_bounded_by_dropping_from_the_heaviest_source(self):
        """Over MAX_ORPHAN_BYTES in total, the source holding most bytes loses its oldest orphan first."""
        self.cs = ChainState(MemoryStore(), REGTEST, max_orphan_bytes=4_000_000)
        first = big_block(self.unknown, 0)
        self.cs.accept_block(first, NOW, source="http://a")
        blocks = [big_block(self.unknown, n) for n in range(1, 5)]
        for block in blocks:
            self.cs.accept_block(block, NOW, source="http://b")
        self.assertLessEqual(self.cs.orphan_bytes(), 4_000_000)
        self.assertTrue(self.cs.has_block(first.hash))
        self.assertFalse(self.cs.has_block(blocks[0].hash))

    def test_orphan_over_its_source_bound_is_not_stored(self):
        """A single orphan larger than its source's whole allowance is answered NotStored, not Orphan."""
        self.cs = ChainState(MemoryStore(), REGTEST, max_orphan_bytes_per_source=500_000)
        result = self.cs.accept_block(big_block(self.unknown, 0), NOW, source="http://a")
        self.assertIsInstance(result, NotStored)
        self.assertEqual(self.cs.orphan_bytes(), 0)
