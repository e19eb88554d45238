"""One ChainStore conformance suite, run against MemoryStore (the reference) and SqliteStore.

Every method of the protocol, the orders it promises (best_entries, children,
coins_of, history_of) and the order in which apply() works through a
ChainUpdate (removals, then additions) are checked here once, so the two
stores cannot drift apart.
"""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.store import (DATA_STORED, FULLY_VALID, HEADER_VALID, INVALID, BlockEntry, ChainUpdate,
                                  MemoryStore)
from chaincore.core.tx import Coin, OutPoint
from chaincore.storage.sqlite import SqliteStore, StoreError

GENESIS = hashlib.sha256(b"conformance genesis").digest()


def h(*parts) -> bytes:
    """A 32-byte hash named by parts."""
    return hashlib.sha256(repr(parts).encode()).digest()


def payload(n: int) -> bytes:
    """A 21-byte address payload."""
    return bytes([0x3C]) + h("payload", n)[:20]


def entry(name, parent=b"\0" * 32, *, height=1, work=1, status=FULLY_VALID) -> BlockEntry:
    """A block index entry whose hash is h(name)."""
    return BlockEntry(h(name), parent, height, bytes(range(120)), work, status, 1_700_000_000 + height,
                      2**255 - 19, 1_699_999_000 + height)


def coin(amount=50, to=1, height=1, coinbase=False) -> Coin:
    return Coin(amount, payload(to), height, coinbase)


def dump(store) -> dict:
    """Everything a test's store holds, through the public API, for the names the tests use."""
    names = [h(n) for n in ("a", "b", "c", "d", "x", "y")]
    return {
        "meta": store.get_meta("k"),
        "entries": [store.get_entry(n) for n in names],
        "best": store.best_entries(100),
        "children": store.children(b"\0" * 32),
        "blocks": [store.get_block(n) for n in names],
        "undo": [store.get_undo(n) for n in names],
        "main": [store.main_hash(i) for i in range(5)],
        "tip": store.tip(),
        "coins": [store.coins_of(payload(i)) for i in range(4)],
        "count": store.coin_count(),
        "txs": [store.tx_location(n) for n in names],
        "history": [store.history_rows(payload(i), 100) for i in range(4)],
    }


class StoreConformance:
    """What every ChainStore does; a subclass says how to make one and what a broken update raises."""

    missing_coin_error = Exception

    def make_store(self):
        raise NotImplementedError

    def setUp(self):
        self.store = self.make_store()
        self.addCleanup(self.store.close)

    def test_empty(self):
        """A new store answers None or an empty list to every question, and counts no coins."""
        s = self.store
        self.assertIsNone(s.get_meta("k"))
        self.assertIsNone(s.get_entry(h("a")))
        self.assertEqual(s.children(h("a")), [])
        self.assertEqual(s.best_entries(10), [])
        self.assertIsNone(s.get_block(h("a")))
        self.assertIsNone(s.get_undo(h("a")))
        self.assertIsNone(s.main_hash(0))
        self.assertIsNone(s.tip())
        self.assertIsNone(s.get_coin(OutPoint(h("t"), 0)))
        self.assertEqual(s.coins_of(payload(1)), [])
        self.assertIsNone(s.tx_location(h("t")))
        self.assertEqual(s.history_of(payload(1), 10), [])
        self.assertEqual(s.coin_count(), 0)

    def test_meta(self):
        """set_meta stores a value that get_meta returns, and a second set_meta replaces it."""
        self.store.set_meta("k", "one")
        self.store.set_meta("other", "x")
        self.store.set_meta("k", "two")
        self.assertEqual(self.store.get_meta("k"), "two")
        self.assertEqual(self.store.get_meta("other"), "x")

    def test_entry_round_trip(self):
        """An entry comes back equal, with its 256-bit chainwork and target intact."""
        e = BlockEntry(h("a"), h("p"), 7, bytes(120), 2**256 - 1, DATA_STORED, 1, 2**256 - 1, 0)
        self.store.apply(ChainUpdate(entries=[e]))
        self.assertEqual(self.store.get_entry(h("a")), e)

    def test_entry_replaced(self):
        """Storing an entry again (a status change) replaces it."""
        e = entry("a", status=DATA_STORED)
        self.store.apply(ChainUpdate(entries=[e]))
        self.store.apply(ChainUpdate(entries=[e.with_status(FULLY_VALID)]))
        self.assertEqual(self.store.get_entry(h("a")).status, FULLY_VALID)

    def test_children_in_hash_order(self):
        """children lists only direct children, in byte order of their hashes."""
        root = entry("a")
        kids = [entry(n, root.hash, height=2) for n in ("b", "c", "d")]
        grandchild = entry("x", kids[0].hash, height=3)
        self.store.apply(ChainUpdate(entries=[root, kids[2], grandchild, kids[0]]))
        self.store.apply(ChainUpdate(entries=[kids[1]]))
        self.assertEqual(self.store.children(root.hash), sorted(k.hash for k in kids))
        self.assertEqual(self.store.children(kids[0].hash), [grandchild.hash])
        self.assertEqual(self.store.children(grandchild.hash), [])

    def test_best_entries_most_work_first(self):
        """best_entries lists entries most chainwork first and stops at limit."""
        es = [entry(n, work=w) for n, w in (("a", 5), ("b", 9), ("c", 2**200), ("d", 7))]
        self.store.apply(ChainUpdate(entries=es))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h("c"), h("b"), h("d"), h("a")])
        self.assertEqual([e.hash for e in self.store.best_entries(2)], [h("c"), h("b")])
        self.assertEqual(self.store.best_entries(0), [])

    def test_best_entries_skip_headers_and_invalid(self):
        """Only entries with their data stored and not invalid can be best."""
        self.store.apply(ChainUpdate(entries=[
            entry("a", work=10, status=HEADER_VALID), entry("b", work=9, status=INVALID),
            entry("c", work=8, status=DATA_STORED), entry("d", work=7, status=FULLY_VALID)]))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h("c"), h("d")])
        self.store.apply(ChainUpdate(entries=[entry("c", work=8, status=INVALID),
                                              entry("a", work=10, status=DATA_STORED)]))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h("a"), h("d")])

    def test_best_entries_tie_goes_to_first_stored(self):
        """Among equal work the entry stored first comes first, whatever the hashes, heights or updates."""
        names = ["y", "a", "x", "c", "b"]   # neither hash order nor name order
        for i, name in enumerate(names):
            self.store.apply(ChainUpdate(entries=[entry(name, height=10 - i, work=42)]))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h(n) for n in names])

    def test_best_entries_tie_order_survives_status_change(self):
        """Replacing an entry keeps its place among equal work: it was still seen first."""
        first = entry("b", work=42, status=HEADER_VALID)
        self.store.apply(ChainUpdate(entries=[first]))
        self.store.apply(ChainUpdate(entries=[entry("a", work=42)]))
        self.store.apply(ChainUpdate(entries=[first.with_status(FULLY_VALID)]))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h("b"), h("a")])

    def test_best_entries_tie_within_one_update(self):
        """Within one update, list order is storing order."""
        self.store.apply(ChainUpdate(entries=[entry(n, work=3) for n in ("d", "a", "c")]))
        self.assertEqual([e.hash for e in self.store.best_entries(10)], [h("d"), h("a"), h("c")])

    def test_blocks(self):
        """A stored block's bytes come back unchanged; storing again replaces them."""
        self.store.apply(ChainUpdate(blocks=[(h("a"), b"raw a"), (h("b"), bytes(100_000))]))
        self.store.apply(ChainUpdate(blocks=[(h("a"), b"raw a, again")]))
        self.assertEqual(self.store.get_block(h("a")), b"raw a, again")
        self.assertEqual(self.store.get_block(h("b")), bytes(100_000))

    def test_undo(self):
        """Undo data comes back in order with every coin field, [] stays [], and undo_deleted removes it."""
        spent = [(OutPoint(h("t", 2), 7), coin(2**64 - 1, 2, 99, True)),
                 (OutPoint(h("t", 1), 0), coin(1, 1, 0, False))]
        self.store.apply(ChainUpdate(undo_put=[(h("a"), spent), (h("b"), [])]))
        self.assertEqual(self.store.get_undo(h("a")), spent)
        self.assertEqual(self.store.get_undo(h("b")), [])
        self.store.apply(ChainUpdate(undo_deleted=[h("a"), h("c")]))
        self.assertIsNone(self.store.get_undo(h("a")))
        self.assertEqual(self.store.get_undo(h("b")), [])

    def test_main_chain_and_tip(self):
        """main_hash follows main_added and main_removed; the tip changes only when an update names one."""
        self.store.apply(ChainUpdate(main_added=[(0, h("a")), (1, h("b"))], tip=h("b")))
        self.store.apply(ChainUpdate(blocks=[(h("x"), b"x")]))
        self.assertEqual(self.store.tip(), h("b"))
        self.store.apply(ChainUpdate(main_removed=[1, 5], main_added=[(1, h("c"))], tip=h("c")))
        self.assertEqual([self.store.main_hash(i) for i in range(3)], [h("a"), h("c"), None])
        self.assertEqual(self.store.tip(), h("c"))
        self.store.apply(ChainUpdate(main_removed=[1], tip=h("a")))
        self.assertIsNone(self.store.main_hash(1))
        self.assertEqual(self.store.tip(), h("a"))

    def test_coins(self):
        """Added coins are found by outpoint and counted; removed ones are gone."""
        ops = [OutPoint(h("t"), i) for i in range(3)]
        self.store.apply(ChainUpdate(coins_added=[(op, coin(10 + op.index, coinbase=op.index == 0))
                                                  for op in ops]))
        self.assertEqual(self.store.get_coin(ops[0]), coin(10, coinbase=True))
        self.assertEqual(self.store.get_coin(ops[2]), coin(12))
        self.assertEqual(self.store.coin_count(), 3)
        self.store.apply(ChainUpdate(coins_removed=[ops[0], ops[2]]))
        self.assertIsNone(self.store.get_coin(ops[0]))
        self.assertEqual(self.store.get_coin(ops[1]), coin(11))
        self.assertEqual(self.store.coin_count(), 1)

    def test_coins_of_order(self):
        """coins_of lists one payload's coins by height, then tx_id, then index."""
        t1, t2 = sorted([h("t", 1), h("t", 2)])
        added = [(OutPoint(t2, 1), coin(to=1, height=5)), (OutPoint(t1, 3), coin(to=1, height=5)),
                 (OutPoint(t1, 0), coin(to=2, height=1)), (OutPoint(t2, 0), coin(to=1, height=2)),
                 (OutPoint(t1, 2), coin(to=1, height=5)), (OutPoint(t2, 9), coin(to=1, height=9))]
        self.store.apply(ChainUpdate(coins_added=added))
        expected = [OutPoint(t2, 0), OutPoint(t1, 2), OutPoint(t1, 3), OutPoint(t2, 1), OutPoint(t2, 9)]
        self.assertEqual([op for op, _ in self.store.coins_of(payload(1))], expected)
        self.assertEqual(self.store.coins_of(payload(2)), [(OutPoint(t1, 0), coin(to=2, height=1))])
        self.store.apply(ChainUpdate(coins_removed=[OutPoint(t1, 2)]))
        self.assertNotIn(OutPoint(t1, 2), [op for op, _ in self.store.coins_of(payload(1))])

    def test_coin_added_twice_is_replaced(self):
        """Adding a coin that exists overwrites it without counting it twice."""
        op = OutPoint(h("t"), 0)
        self.store.apply(ChainUpdate(coins_added=[(op, coin(1))]))
        self.store.apply(ChainUpdate(coins_added=[(op, coin(2)), (OutPoint(h("t"), 1), coin(3))]))
        self.assertEqual(self.store.get_coin(op), coin(2))
        self.assertEqual(self.store.coin_count(), 2)

    def test_removing_a_missing_coin_fails(self):
        """An update that removes a coin not in the UTXO set raises."""
        self.assertRaises(self.missing_coin_error, self.store.apply,
                          ChainUpdate(coins_removed=[OutPoint(h("t"), 0)]))

    def test_tx_index(self):
        """tx_location gives (block hash, height, position) until the transaction leaves the main chain."""
        self.store.apply(ChainUpdate(txs_added=[(h("t", 1), h("a"), 3, 0), (h("t", 2), h("a"), 3, 1)]))
        self.assertEqual(self.store.tx_location(h("t", 2)), (h("a"), 3, 1))
        self.store.apply(ChainUpdate(txs_removed=[h("t", 1), h("t", 9)]))
        self.assertIsNone(self.store.tx_location(h("t", 1)))
        self.assertEqual(self.store.tx_location(h("t", 2)), (h("a"), 3, 1))

    def test_history_order_and_limit(self):
        """history_of lists newest first, equal heights by tx_id, at most limit, and only that payload."""
        a, b, c, d = sorted(h("t", i) for i in range(4))
        self.store.apply(ChainUpdate(history_added=[
            (payload(1), c, 4, 1, 10, False), (payload(1), a, 2, 0, 50, True), (payload(1), d, 4, 2, -3, False),
            (payload(1), b, 9, 5, 0, False), (payload(2), a, 2, 0, 7, True)]))
        self.assertEqual(self.store.history_of(payload(1), 10), [(b, 9), (c, 4), (d, 4), (a, 2)])
        self.assertEqual(self.store.history_of(payload(1), 2), [(b, 9), (c, 4)])
        self.assertEqual(self.store.history_of(payload(2), 10), [(a, 2)])
        self.store.apply(ChainUpdate(history_removed=[(payload(1), c), (payload(3), c)]))
        self.assertEqual(self.store.history_of(payload(1), 10), [(b, 9), (d, 4), (a, 2)])

    def test_history_rows_carry_what_a_row_shows(self):
        """history_rows gives each row's height, position, signed amount and coinbase flag, in history_of's
        order and paging, and a row removed and added again (a reorganisation) carries its new values."""
        a, b, c = sorted(h("t", i) for i in range(3))
        self.store.apply(ChainUpdate(history_added=[
            (payload(1), a, 2, 0, 50, True), (payload(1), b, 4, 3, -12, False), (payload(1), c, 4, 1, 2**40, False)]))
        self.assertEqual(self.store.history_rows(payload(1), 10),
                         [(b, 4, 3, -12, False), (c, 4, 1, 2**40, False), (a, 2, 0, 50, True)])
        self.assertEqual(self.store.history_rows(payload(1), 10, (4, b)), [(c, 4, 1, 2**40, False), (a, 2, 0, 50, True)])
        self.assertEqual(self.store.history_rows(payload(1), 1, (4, c)), [(a, 2, 0, 50, True)])
        # the block at height 4 leaves the main chain; b is mined again at height 5 at another place
        self.store.apply(ChainUpdate(history_removed=[(payload(1), b), (payload(1), c)]))
        self.assertEqual(self.store.history_rows(payload(1), 10), [(a, 2, 0, 50, True)])
        self.store.apply(ChainUpdate(history_added=[(payload(1), b, 5, 1, -12, False)]))
        self.assertEqual(self.store.history_rows(payload(1), 10), [(b, 5, 1, -12, False), (a, 2, 0, 50, True)])

    def test_removals_come_before_additions(self):
        """When one update removes and adds the same key, the addition is what remains."""
        op = OutPoint(h("t"), 0)
        self.store.apply(ChainUpdate(coins_added=[(op, coin(1))], undo_put=[(h("a"), [])],
                                     main_added=[(1, h("a"))], txs_added=[(h("t"), h("a"), 1, 0)],
                                     history_added=[(payload(1), h("t"), 1, 0, 5, False)]))
        self.store.apply(ChainUpdate(
            coins_removed=[op], coins_added=[(op, coin(2))],
            undo_deleted=[h("a")], undo_put=[(h("a"), [(op, coin(1))])],
            main_removed=[1], main_added=[(1, h("b"))],
            txs_removed=[h("t")], txs_added=[(h("t"), h("b"), 1, 0)],
            history_removed=[(payload(1), h("t"))], history_added=[(payload(1), h("t"), 2, 3, -7, False)]))
        self.assertEqual(self.store.get_coin(op), coin(2))
        self.assertEqual(self.store.coin_count(), 1)
        self.assertEqual(self.store.get_undo(h("a")), [(op, coin(1))])
        self.assertEqual(self.store.main_hash(1), h("b"))
        self.assertEqual(self.store.tx_location(h("t")), (h("b"), 1, 0))
        self.assertEqual(self.store.history_of(payload(1), 10), [(h("t"), 2)])
        self.assertEqual(self.store.history_rows(payload(1), 10), [(h("t"), 2, 3, -7, False)])

    def test_connect_then_disconnect(self):
        """Connecting a block and then applying its inverse update restores the earlier state."""
        parent = OutPoint(h("t", 0), 0)
        self.store.apply(ChainUpdate(entries=[entry("a", height=0)], main_added=[(0, h("a"))], tip=h("a"),
                                     coins_added=[(parent, coin(50, 1, 0, True))]))
        before = dump(self.store)
        spend = OutPoint(h("t", 1), 0)
        self.store.apply(ChainUpdate(
            entries=[entry("b", h("a"), height=1, work=2)], blocks=[(h("b"), b"block b")],
            coins_removed=[parent], coins_added=[(spend, coin(50, 2, 1))],
            undo_put=[(h("b"), [(parent, coin(50, 1, 0, True))])],
            main_added=[(1, h("b"))], txs_added=[(h("t", 1), h("b"), 1, 0)],
            history_added=[(payload(2), h("t", 1), 1, 0, 50, False)], tip=h("b")))
        self.assertEqual(self.store.coins_of(payload(2)), [(spend, coin(50, 2, 1))])
        self.store.apply(ChainUpdate(
            coins_removed=[spend], coins_added=self.store.get_undo(h("b")), undo_deleted=[h("b")],
            main_removed=[1], txs_removed=[h("t", 1)], history_removed=[(payload(2), h("t", 1))], tip=h("a")))
        after = dump(self.store)
        # The disconnected block stays in the tree and its data stays stored.
        for key in ("entries", "best", "children", "blocks"):
            before.pop(key), after.pop(key)
        self.assertEqual(after, before)

    def test_batch_keeps_its_writes(self):
        """Writes inside a batch that ends normally are all kept."""
        with self.store.batch():
            self.store.apply(ChainUpdate(entries=[entry("a")], tip=h("a"), main_added=[(1, h("a"))]))
            self.store.set_meta("k", "v")
        self.assertEqual(self.store.get_entry(h("a")), entry("a"))
        self.assertEqual((self.store.tip(), self.store.get_meta("k")), (h("a"), "v"))

    def test_batch_left_by_an_exception_is_undone(self):
        """An exception leaving a batch undoes every write inside it, and the store stays usable."""
        self.store.apply(ChainUpdate(coins_added=[(OutPoint(h("t"), 0), coin())]))
        before = dump(self.store)
        with self.assertRaises(ZeroDivisionError):
            with self.store.batch():
                self.store.apply(ChainUpdate(entries=[entry("a")], coins_removed=[OutPoint(h("t"), 0)],
                                             tip=h("a"), main_added=[(1, h("a"))]))
                self.store.set_meta("k", "v")
                1 / 0
        self.assertEqual(dump(self.store), before)
        self.store.apply(ChainUpdate(entries=[entry("b")]))
        self.assertEqual(self.store.get_entry(h("b")), entry("b"))


class MemoryStoreTests(StoreConformance, SynchronousTestCase):
    missing_coin_error = KeyError

    def make_store(self):
        return MemoryStore()


class SqliteStoreTests(StoreConformance, SynchronousTestCase):
    missing_coin_error = StoreError

    def make_store(self):
        return SqliteStore(self.mktemp(), "regtest", GENESIS)
