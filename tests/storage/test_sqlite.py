"""SqliteStore beyond the shared conformance suite: reopening, refusing the wrong file, atomicity, batch()."""

import os
import sqlite3

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import keys
from chaincore.core.params import REGTEST

from chaincore.core.store import ChainUpdate
from chaincore.core.tx import OutPoint
from chaincore.storage.sqlite import QUERIES, SqliteStore, StoreError, decode_undo, encode_undo

from ..api.test_endpoints import pay_bob
from ..support.api import FUNDED_HEIGHT, funded_chain
from ..support.builders import ALICE, BOB, make_block
from ..support.nodes import make_node, settled
from .test_conformance import GENESIS, coin, dump, entry, h, payload


def connect_update(name, parent, height, spend=()) -> ChainUpdate:
    """A block connect: entry, bytes, one new coin, undo of the spent coins, main row, tx, history, tip."""
    e = entry(name, parent, height=height, work=height + 1)
    new = OutPoint(h("t", name), 0)
    return ChainUpdate(entries=[e], blocks=[(e.hash, b"block " + name.encode())],
                       coins_removed=[op for op, _ in spend], coins_added=[(new, coin(10, 1, height))],
                       undo_put=[(e.hash, list(spend))], main_added=[(height, e.hash)],
                       txs_added=[(new.tx_id, e.hash, height, 0)],
                       history_added=[(payload(1), new.tx_id, height, 0, 50, False)],
                       tip=e.hash)


class ExplodingValue:
    """A value whose conversion for SQLite fails: stands for any failure in the middle of a write."""

    def __conform__(self, protocol):
        raise RuntimeError("injected failure")


class SqliteStoreTests(SynchronousTestCase):
    def setUp(self):
        self.path = self.mktemp()

    def open(self, network="regtest", genesis=GENESIS, **kwargs) -> SqliteStore:
        store = SqliteStore(self.path, network, genesis, **kwargs)
        self.addCleanup(store.close)
        return store

    def filled(self) -> SqliteStore:
        """A store holding two connected blocks and a meta value."""
        store = self.open()
        store.apply(connect_update("a", bytes(32), 0))
        store.apply(connect_update("b", h("a"), 1, spend=[(OutPoint(h("t", "a"), 0), coin(10, 1, 0))]))
        store.set_meta("k", "v")
        return store

    def test_reopen_keeps_everything(self):
        """A closed and reopened store answers exactly as before."""
        store = self.filled()
        before = dump(store)
        store.close()
        self.assertEqual(dump(self.open()), before)

    def test_reopen_durable(self):
        """The durable flag only changes how commits reach the disk: the data reads back the same."""
        store = self.filled()
        before = dump(store)
        store.close()
        durable = self.open(durable=True)
        self.assertEqual(dump(durable), before)
        durable.apply(connect_update("c", h("b"), 2))
        self.assertEqual(durable.tip(), h("c"))

    def test_other_network_refused(self):
        """A datadir written for another network is refused with a StoreError naming both."""
        self.filled().close()
        err = self.assertRaises(StoreError, SqliteStore, self.path, "main", GENESIS)
        self.assertEqual(err.code, "store")
        self.assertIn("regtest", str(err))
        self.assertIn("main", str(err))

    def test_other_genesis_refused(self):
        """A datadir written for another genesis on the same network name is refused."""
        self.filled().close()
        err = self.assertRaises(StoreError, SqliteStore, self.path, "regtest", h("other genesis"))
        self.assertIn(GENESIS.hex(), str(err))

    def test_refusal_leaves_the_store_usable(self):
        """Refusing another network changes nothing: the right network still opens it with its data."""
        store = self.filled()
        before = dump(store)
        store.close()
        self.assertRaises(StoreError, SqliteStore, self.path, "main", GENESIS)
        self.assertEqual(dump(self.open()), before)

    def test_garbage_file_refused(self):
        """A file that is not SQLite is refused with a one-line StoreError naming it, and left as it was."""
        garbage = b"not a database, just some bytes " * 200
        with open(self.path, "wb") as f:
            f.write(garbage)
        err = self.assertRaises(StoreError, SqliteStore, self.path, "regtest", GENESIS)
        self.assertIn(self.path, str(err))
        self.assertNotIn("\n", str(err))
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), garbage)

    def test_empty_file_becomes_a_store(self):
        """An empty file (a first open that died before its schema committed) is set up as a new store."""
        open(self.path, "wb").close()
        store = self.open()
        store.apply(connect_update("a", bytes(32), 0))
        self.assertEqual(store.tip(), h("a"))

    def test_foreign_sqlite_file_refused(self):
        """Another program's SQLite database is refused and not modified."""
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        db.commit()
        db.close()
        err = self.assertRaises(StoreError, SqliteStore, self.path, "regtest", GENESIS)
        self.assertIn("not a ChainCore store", str(err))
        db = sqlite3.connect(self.path)
        self.assertEqual(db.execute("SELECT body FROM notes").fetchall(), [("keep me",)])
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone(), ("delete",))
        db.close()

    def test_newer_schema_refused(self):
        """A store written with another schema version is refused rather than misread."""
        self.filled().close()
        db = sqlite3.connect(self.path)
        db.execute("UPDATE store_info SET value = '99' WHERE key = 'schema_version'")
        db.commit()
        db.close()
        err = self.assertRaises(StoreError, SqliteStore, self.path, "regtest", GENESIS)
        self.assertIn("schema version 99", str(err))

    def test_version_1_store_rebuilds_its_history(self):
        """A version 1 store (history rows of tx_id and height only) is brought to version 2 on open:
        its history rows are rebuilt from the main chain's blocks and undo data, as connecting wrote them."""
        folder = self.mktemp()
        os.makedirs(folder)
        path = os.path.join(folder, "chain.sqlite")
        store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
        clock = Clock()
        clock.advance(funded_chain()[-1].header.timestamp + 120)
        node = make_node(clock, store=store).node
        for block in funded_chain()[1:]:
            settled(node.submit_block(block))
        spend = pay_bob()
        settled(node.submit_block(make_block(funded_chain()[-1], [spend], fees=1_000, timestamp=int(clock.seconds()))))
        payloads = [keys.address_payload(a.address) for a in (ALICE, BOB)]
        written = [store.history_rows(p, 1000) for p in payloads]
        self.assertIn((spend.tx_id, FUNDED_HEIGHT + 1, 1, 10_000_000, False), written[1])
        store.close()
        db = sqlite3.connect(path)
        db.executescript("DROP TABLE history;"
                         "CREATE TABLE history (payload BLOB NOT NULL, tx_id BLOB NOT NULL, height INTEGER NOT NULL,"
                         " PRIMARY KEY (payload, tx_id)) WITHOUT ROWID;"
                         "CREATE INDEX history_recent ON history (payload, height DESC, tx_id);"
                         "UPDATE store_info SET value = '1' WHERE key = 'schema_version';")
        db.close()
        store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
        self.addCleanup(store.close)
        self.assertEqual([store.history_rows(p, 1000) for p in payloads], written)
        self.assertEqual(store._one("SELECT value FROM store_info WHERE key = 'schema_version'", ())[0], "2")
        self.assertIn("rebuilt the address history of", store.upgraded)

    def test_damage_found_after_a_crash(self):
        """After an unclean shutdown the open runs quick_check, and a damaged file is refused."""
        store = self.open()
        for i in range(300):
            coins = [(OutPoint(h("t", i), j), coin(j, i % 4, i)) for j in range(20)]
            store.apply(ChainUpdate(coins_added=coins))
        store.close()
        db = sqlite3.connect(self.path)
        db.execute("UPDATE store_info SET value = '0' WHERE key = 'clean_shutdown'")   # as a crash leaves it
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'utxo_recipient'").fetchone()[0]
        db.commit()
        db.close()
        with open(self.path, "r+b") as f:
            f.seek((root - 1) * page_size)
            f.write(b"\xff" * page_size)
        err = self.assertRaises(StoreError, SqliteStore, self.path, "regtest", GENESIS)
        self.assertIn(f"{self.path} is damaged", str(err))

    def test_missing_directory_refused(self):
        """A path in a directory that does not exist gives a StoreError, not a sqlite3 traceback."""
        path = os.path.join(self.mktemp(), "chain.db")
        self.assertRaises(StoreError, SqliteStore, path, "regtest", GENESIS)

    def test_failed_apply_changes_nothing(self):
        """An update removing a coin that does not exist leaves the store exactly as it was."""
        store = self.filled()
        before = dump(store)
        bad = connect_update("c", h("b"), 2, spend=[(OutPoint(h("t", "b"), 0), coin(10, 1, 1)),
                                                    (OutPoint(h("nowhere"), 0), coin())])
        self.assertRaises(StoreError, store.apply, bad)
        self.assertEqual(dump(store), before)

    def test_failure_mid_apply_changes_nothing(self):
        """A failure in the last list of an update (after every other write ran) rolls all of it back."""
        store = self.filled()
        before = dump(store)
        bad = connect_update("c", h("b"), 2, spend=[(OutPoint(h("t", "b"), 0), coin(10, 1, 1))])
        bad.history_added.append((payload(2), h("t", "c"), ExplodingValue(), 0, 0, False))
        self.assertRaises(RuntimeError, store.apply, bad)
        self.assertEqual(dump(store), before)
        store.close()
        self.assertEqual(dump(self.open()), before)

    def test_failed_apply_keeps_first_stored_order(self):
        """A rolled-back update does not disturb which of two equal-work entries was stored first."""
        store = self.open()
        bad = ChainUpdate(entries=[entry("x", work=5)], coins_removed=[OutPoint(h("nowhere"), 0)])
        self.assertRaises(StoreError, store.apply, bad)
        store.apply(ChainUpdate(entries=[entry("a", work=5)]))
        store.apply(ChainUpdate(entries=[entry("x", work=5)]))
        self.assertEqual([e.hash for e in store.best_entries(5)], [h("a"), h("x")])

    def test_batch_commits_as_one(self):
        """Updates inside batch() are visible inside it and all persist once it ends."""
        store = self.open()
        with store.batch():
            store.apply(connect_update("a", bytes(32), 0))
            store.apply(connect_update("b", h("a"), 1))
            store.set_meta("k", "v")
            self.assertEqual(store.tip(), h("b"))
        before = dump(store)
        store.close()
        self.assertEqual(dump(self.open()), before)

    def test_batch_rolls_back_as_one(self):
        """An exception leaving batch() undoes every update made inside it, and is raised again."""
        store = self.filled()
        before = dump(store)

        def sync():
            with store.batch():
                store.apply(connect_update("c", h("b"), 2))
                store.set_meta("k", "changed")
                store.apply(connect_update("d", h("c"), 3))
                raise ValueError("peer went away")

        self.assertRaises(ValueError, sync)
        self.assertEqual(dump(store), before)
        store.close()
        self.assertEqual(dump(self.open()), before)

    def test_failed_apply_inside_batch_undoes_only_itself(self):
        """An apply that fails inside batch() is undone alone; caught, the batch goes on and commits."""
        store = self.filled()
        with store.batch():
            store.apply(connect_update("c", h("b"), 2))
            self.assertRaises(StoreError, store.apply,
                              connect_update("x", h("c"), 3, spend=[(OutPoint(h("nowhere"), 0), coin())]))
            store.apply(connect_update("d", h("c"), 3))
        store.close()
        store = self.open()
        self.assertEqual([store.main_hash(i) for i in range(5)], [h("a"), h("b"), h("c"), h("d"), None])
        self.assertIsNone(store.get_entry(h("x")))

    def test_nested_batch_joins_the_outer_one(self):
        """A batch inside a batch commits nothing by itself: the outer rollback undoes it too."""
        store = self.filled()
        before = dump(store)

        def sync():
            with store.batch():
                with store.batch():
                    store.apply(connect_update("c", h("b"), 2))
                raise ValueError("abort")

        self.assertRaises(ValueError, sync)
        self.assertEqual(dump(store), before)

    def test_close_twice(self):
        """close() may be called again; using a closed store raises StoreError."""
        store = self.open()
        store.close()
        store.close()
        self.assertRaises(StoreError, store.tip)
        self.assertRaises(StoreError, store.apply, ChainUpdate())

    def test_undo_encoding_round_trip(self):
        """Undo bytes decode to what was encoded; cut or padded bytes give StoreError."""
        spent = [(OutPoint(h("t"), 2**32 - 1), coin(2**64 - 1, 3, 2**32 - 1, True)),
                 (OutPoint(h("u"), 0), coin())]
        raw = encode_undo(spent)
        self.assertEqual(len(raw), 4 + 2 * (50 + 21))
        self.assertEqual(decode_undo(raw), spent)
        self.assertEqual(decode_undo(encode_undo([])), [])
        self.assertRaises(StoreError, decode_undo, raw[:-1])
        self.assertRaises(StoreError, decode_undo, raw + b"\0")

    def test_every_query_uses_an_index(self):
        """SQLite answers every read from an index: no full table scan and no sort of all rows."""
        self.filled().close()
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        for name, sql in QUERIES.items():
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, [b"x"] * sql.count("?"))]
            for step in plan:
                self.assertTrue(step.startswith("SEARCH") or "USING INDEX" in step, f"{name}: {plan}")
                self.assertNotIn("TEMP B-TREE", step, f"{name}: {plan}")
