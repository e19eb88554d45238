"""CachedStore: a chain state whose writes are held in memory answers as one over the plain store, at every step.

Hypothesis drives two chain states with the same blocks: a reference over a
MemoryStore and one over a CachedStore in front of another MemoryStore (the
"disk"), with a byte bound that flushes after every write, now and then, or
never.  Between operations it may flush, or crash: the cache is dropped
unflushed and a new chain state opens on the disk alone, which must connect
the stored blocks beyond its flushed tip again.  After each step both agree
on the tip, every coin, the main chain, the transaction index and the undo
data; after a flush the disk equals the reference store table by table.
"""

import itertools

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState
from chaincore.core.errors import Invalid, StoreError
from chaincore.core.params import REGTEST
from chaincore.core.store import CachedStore, ChainUpdate, MemoryStore
from chaincore.core.tx import Coin, OutPoint
from tests.core.test_chainstate_properties import BASE, NOW, draw_branch, draw_txs
from tests.support.builders import make_block

OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("extend"), st.integers(1, 3)),
    st.tuples(st.just("fork"), st.integers(0, 4), st.sampled_from([-1, 0, 1]), st.integers(0, 3), st.booleans()),
    st.just(("flush",)),
    st.just(("crash",)),
), min_size=1, max_size=8)

BOUNDS = st.sampled_from([1, 20_000, 10**12])  # flush at every write, every few blocks, only when told


class Twin:
    """A reference chain state and a cached one, fed the same blocks."""

    def __init__(self, test, bound, cached=CachedStore):
        self.test, self.bound = test, bound
        self.ref = ChainState(MemoryStore(), REGTEST)
        self.disk = MemoryStore()
        self.cs = ChainState(cached(self.disk, bound), REGTEST)
        self.blocks = {}
        self.tags = itertools.count()
        for block in BASE[1:]:
            self.feed(block)

    def feed(self, block):
        self.blocks[block.hash] = block
        outcomes = []
        for cs in (self.ref, self.cs):
            try:
                outcomes.append(type(cs.accept_block(block, NOW)).__name__)
            except Invalid as err:
                outcomes.append(err.code)
        self.test.assertEqual(outcomes[0], outcomes[1])
        self.test.assertEqual(self.cs.tip, self.ref.tip)

    def extend(self, n, data):
        for _ in range(n):
            txs, fees = draw_txs(self.ref, data)
            self.feed(make_block(self.ref.block(self.ref.tip.hash), txs, fees=fees, extra=self.tag()))

    def fork(self, depth, delta, bad_at, shuffle, data):
        blocks, _bad_index = draw_branch(self.ref, depth, delta, bad_at, self.tag(), data)
        length = len(blocks)
        order = data.draw(st.permutations(range(length)), label="order") if shuffle else range(length)
        for i in order:
            self.feed(blocks[i])

    def tag(self) -> bytes:
        return next(self.tags).to_bytes(4, "big")

    def flush(self):
        self.cs.store.flush()
        ref = self.ref.store
        for table in ("coins", "by_address", "main", "txs", "history", "undo", "entries", "blocks"):
            # (MemoryStore keeps an emptied address's set or dict: no row, as SQLite would say)
            ours, theirs = ({k: v for k, v in getattr(s, table).items() if v != set() and v != {}}
                            for s in (self.disk, ref))
            self.test.assertEqual(ours, theirs, table)
        self.test.assertEqual(self.disk.tip(), ref.tip())

    def crash(self):
        self.cs = ChainState(CachedStore(self.disk, self.bound), REGTEST)

    def check(self):
        cs, ref = self.cs, self.ref
        test = self.test
        test.assertEqual(cs.tip, ref.tip)
        test.assertEqual(cs.store.coin_count(), ref.store.coin_count())
        outpoints = [OutPoint(tx.tx_id, i) for b in self.blocks.values() for tx in b.transactions
                     for i in range(len(tx.outputs))]
        for op in outpoints:
            test.assertEqual(cs.store.get_coin(op), ref.store.get_coin(op))
        test.assertEqual(cs.store.get_coins(outpoints), {op: c for op in outpoints
                                                          if (c := ref.store.get_coin(op)) is not None})
        test.assertEqual(cs.main_hashes(0, cs.height + 5), ref.main_hashes(0, ref.height + 5))
        for block in self.blocks.values():
            test.assertEqual(cs.store.get_undo(block.hash), ref.store.get_undo(block.hash))
            for tx in block.transactions:
                test.assertEqual(cs.store.tx_location(tx.tx_id), ref.store.tx_location(tx.tx_id))


class CachedStoreProperties(SynchronousTestCase):

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(OPERATIONS, BOUNDS, st.data())
    def test_cached_chain_state_equals_uncached(self, operations, bound, data):
        """Any mix of blocks, branches (reorgs), flushes and crashes leaves the cached chain state equal to the
        uncached one, and a flushed disk equal to the uncached store."""
        twin = Twin(self, bound)
        for op in operations:
            if op[0] == "extend":
                twin.extend(op[1], data)
            elif op[0] == "fork":
                twin.fork(*op[1:], data)
            elif op[0] == "flush":
                twin.flush()
            else:
                twin.crash()
            twin.check()
        twin.flush()


class FlushingAt(CachedStore):
    """A CachedStore whose bound is passed by the write that makes one chosen block (`at`) the tip."""

    at = None

    def apply(self, update):
        super().apply(update)
        if update.tip is not None and update.tip == self.at:
            self.flush()


class CachedStoreCrashTests(SynchronousTestCase):

    def test_crash_after_a_flush_on_a_tie_inside_a_failed_switch(self):
        """A flush on a branch block tying the tip, part-way through a switch that fails back, then a crash:
        the chain state restarts on the first-seen chain, where the uncached one stayed."""
        # the shortest failing case hypothesis found: extend, fork(depth 2, one longer, its last block
        # invalid), crash, with the byte bound passed by the connection of the tying block
        twin = Twin(self, 10**12, cached=FlushingAt)
        tip = twin.ref.block(twin.ref.tip.hash)
        fork = twin.ref.block(twin.ref.main_hash(tip.height - 2))
        c1 = make_block(fork, extra=b"c")
        c2 = make_block(c1, extra=b"c")  # ties the tip
        c3 = make_block(c2, reward=REGTEST.block_reward(c2.height + 1) + 1, extra=b"c")  # overpays
        twin.cs.store.at = c2.hash
        for block in (c1, c2, c3):
            twin.feed(block)
        self.assertEqual(twin.ref.tip.hash, tip.hash)
        self.assertEqual(twin.disk.tip(), c2.hash)  # what disk holds: the switch stopped at the tie
        twin.crash()
        twin.check()
        twin.flush()


class FailingStore(MemoryStore):
    """A MemoryStore whose apply() fails while `full` (a full disk), writing nothing."""

    full = False

    def apply(self, update):
        if self.full:
            raise StoreError("disk full")
        super().apply(update)


OP = OutPoint(bytes(32), 0)
COIN = Coin(5, b"\x1c" + bytes(20), 1, False)


class CachedStoreTests(SynchronousTestCase):

    def test_coin_made_and_spent_between_flushes_never_reaches_disk(self):
        """A coin added and spent before a flush is written neither way: the flush holds no coin."""
        disk = MemoryStore()
        store = CachedStore(disk)
        written = []
        apply = disk.apply
        disk.apply = lambda u: written.append(u) or apply(u)
        store.apply(ChainUpdate(coins_added=[(OP, COIN)]))
        store.apply(ChainUpdate(coins_removed=[OP], tip=b"t" * 32))
        self.assertIsNone(store.get_coin(OP))
        store.flush()
        self.assertEqual([(u.coins_added, u.coins_removed, u.tip) for u in written], [([], [], b"t" * 32)])

    def test_bound_flushes_by_itself(self):
        """Held writes past max_bytes are flushed by the apply() that passed it."""
        disk = MemoryStore()
        store = CachedStore(disk, max_bytes=1)
        store.apply(ChainUpdate(coins_added=[(OP, COIN)], tip=b"t" * 32))
        self.assertFalse(store.dirty)
        self.assertEqual(disk.get_coin(OP), COIN)
        self.assertEqual(disk.tip(), b"t" * 32)

    def test_failed_flush_drops_held_writes(self):
        """A flush that fails raises and leaves memory equal to disk: nothing held, reads answer from disk."""
        disk = FailingStore()
        store = CachedStore(disk)
        store.apply(ChainUpdate(coins_added=[(OP, COIN)], tip=b"t" * 32))
        disk.full = True
        self.assertRaises(StoreError, store.flush)
        self.assertFalse(store.dirty)
        self.assertIsNone(store.get_coin(OP))
        self.assertIsNone(store.tip())

    def test_exception_leaving_batch_drops_held_writes(self):
        """An exception out of a batch drops what the cache held, as the store rolls back its own writes."""
        store = CachedStore(MemoryStore())
        with self.assertRaises(ValueError):
            with store.batch():
                store.apply(ChainUpdate(coins_added=[(OP, COIN)]))
                raise ValueError("boom")
        self.assertIsNone(store.get_coin(OP))
        self.assertEqual(store.coin_count(), 0)

    def test_reads_that_no_hot_path_makes_flush_first(self):
        """coins_of answers from disk after writing what was held, so it sees the held coin."""
        disk = MemoryStore()
        store = CachedStore(disk)
        store.apply(ChainUpdate(coins_added=[(OP, COIN)]))
        self.assertEqual(store.coins_of(COIN.recipient), [(OP, COIN)])
        self.assertFalse(store.dirty)
