"""A store that cannot write (disk full, simulated with SQLite's max_page_count) leaves the chain state's memory
equal to what the disk holds, marks no honest block invalid, and takes the same blocks once space returns."""

import os

from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.errors import status_for
from chaincore.core.chainstate import Accepted, ChainState
from chaincore.core.errors import Fault, Invalid
from chaincore.core.params import REGTEST
from chaincore.core.store import INVALID
from chaincore.p2p.peers import penalty_for
from chaincore.storage.sqlite import SqliteStore, StoreError
from tests.core.test_chainstate_gate import big_block
from tests.support.builders import regtest_chain

NOW = REGTEST.genesis.header.timestamp + 1_000_000
BLOCKS = regtest_chain(120)


class DiskFullTests(SynchronousTestCase):
    def setUp(self):
        self.store = SqliteStore(self.mktemp(), REGTEST.name, REGTEST.genesis_hash)
        self.addCleanup(self.store.close)
        self.chain = ChainState(self.store, REGTEST)
        for block in BLOCKS[1:4]:
            self.chain.accept_block(block, NOW)

    def fill_disk(self, spare_pages: int = 0) -> None:
        pages = self.store._db.execute("PRAGMA page_count").fetchone()[0]
        self.store._db.execute(f"PRAGMA max_page_count = {pages + spare_pages}")

    def free_disk(self) -> None:
        self.store._db.execute("PRAGMA max_page_count = 1073741823")

    def assertMemoryEqualsDisk(self):
        self.assertEqual(self.chain.tip.hash, self.store.tip())
        self.assertEqual(self.chain.tip, self.store.get_entry(self.store.tip()))
        fresh = ChainState(self.store, REGTEST)  # what a restart would read
        self.assertEqual(fresh.tip, self.chain.tip)

    def accept_until_full(self) -> tuple:
        """Accept BLOCKS from height 4 on until a write fails; (the failing block, its StoreError)."""
        for block in BLOCKS[4:]:
            try:
                self.chain.accept_block(block, NOW)
            except StoreError as err:
                return block, err
        self.fail("the disk never filled")

    def test_failed_write_keeps_the_tip_and_marks_nothing_invalid(self):
        """A block whose write fails raises StoreError, not Invalid, keeps the tip, and is taken once space returns."""
        self.fill_disk()
        block, err = self.accept_until_full()
        self.assertIn("full", str(err))
        self.assertMemoryEqualsDisk()
        self.assertEqual(self.chain.height, block.height - 1)
        self.assertIsNone(self.store.get_entry(block.hash))
        self.free_disk()
        self.assertIsInstance(self.chain.accept_block(block, NOW), Accepted)
        self.assertEqual(self.chain.height, block.height)
        self.assertMemoryEqualsDisk()

    def test_batch_lost_by_sqlite_is_reloaded(self):
        """When SQLite rolls a whole batch back (disk full), memory falls back to the disk's tip, not the batch's."""
        self.fill_disk(spare_pages=4)
        taken = 0
        with self.assertRaises(StoreError):
            with self.chain.batch():
                for block in BLOCKS[4:]:
                    self.chain.accept_block(block, NOW)
                    taken += 1
        self.assertGreater(taken, 0)  # some blocks went in before the disk filled, and were lost with the batch
        self.assertMemoryEqualsDisk()
        self.assertEqual(self.chain.height, 3)

    def test_writes_inside_a_lost_batch_are_refused(self):
        """After SQLite dropped the batch, later writes in it raise StoreError instead of committing on their own."""
        self.fill_disk(spare_pages=4)
        with self.assertRaises(StoreError):
            with self.store.batch():
                self.accept_until_full()
                self.assertEqual(self.chain.height, 3)  # reloaded: the batch's blocks are gone from disk
                err = self.assertRaises(StoreError, self.chain.accept_block, BLOCKS[4], NOW)
                self.assertIn("rolled back", str(err))
        self.assertMemoryEqualsDisk()
        self.assertEqual(self.chain.height, 3)

    def test_sync_resumes_when_space_returns(self):
        """After a failed batch and freed space, the same blocks connect and none of them is invalid."""
        self.fill_disk(spare_pages=4)
        with self.assertRaises(StoreError):
            with self.chain.batch():
                for block in BLOCKS[4:]:
                    self.chain.accept_block(block, NOW)
        self.free_disk()
        with self.chain.batch():
            for block in BLOCKS[4:]:
                self.chain.accept_block(block, NOW)
        self.assertEqual(self.chain.height, 120)
        self.assertMemoryEqualsDisk()
        self.assertFalse(any(self.store.get_entry(b.hash).status == INVALID for b in BLOCKS[1:]))


class StoreErrorTests(SynchronousTestCase):
    def test_store_error_is_a_fault_not_invalid(self):
        """A store fault answers 503 and earns its sender no penalty: it is a Fault, never Invalid."""
        err = StoreError("write failed: database or disk is full")
        self.assertIsInstance(err, Fault)
        self.assertNotIsInstance(err, Invalid)
        self.assertEqual(status_for(err), 503)
        self.assertEqual(penalty_for(err.code), 0)


class LowWorkSpamTests(SynchronousTestCase):
    def test_junk_children_of_genesis_do_not_grow_the_datadir(self):
        """30 junk blocks of about 1 MB, children of genesis nobody asked for, leave the store file as it was."""
        path = self.mktemp()
        store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
        self.addCleanup(store.close)
        chain = ChainState(store, REGTEST, refuse_low_work=True)
        for block in BLOCKS[1:3]:
            chain.accept_block(block, NOW)
        before = _disk_bytes(path)
        for n in range(30):
            chain.accept_block(big_block(REGTEST.genesis, n), NOW, source="http://junk")
        self.assertLess(_disk_bytes(path) - before, 100_000)
        self.assertEqual(chain.height, 2)


def _disk_bytes(path: str) -> int:
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
