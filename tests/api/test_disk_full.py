"""A node on a SQLite store whose disk fills (max_page_count): POST /submit_block answers 503 with Retry-After,
the node logs one line for the outage, memory stays equal to disk, no honest block is marked invalid, and the
node takes blocks again by itself once space returns.  Low-work blocks nobody asked for answer not-stored."""

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import jsonview
from chaincore.core.chainstate import ChainState
from chaincore.core.errors import StoreError
from chaincore.core.params import REGTEST
from chaincore.core.store import INVALID
from chaincore.storage.sqlite import SqliteStore
from tests.core.test_chainstate_gate import big_block
from tests.support.api import APIClient, funded_node
from tests.support.builders import BOB, make_block, regtest_chain

CHAIN = regtest_chain(4)


class DiskFullTests(SynchronousTestCase):
    def setUp(self):
        self.store = SqliteStore(self.mktemp(), REGTEST.name, REGTEST.genesis_hash)
        self.service = funded_node(CHAIN, store=self.store)
        self.addCleanup(self.store.close)
        self.node = self.service.node
        self.client = APIClient(self, self.service)
        self.lines = []
        observer = lambda event: self.lines.append(event)  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def submit(self, block):
        return self.client.post("/submit_block", {"block": jsonview.block_to_json(block)})

    def test_full_disk_refuses_with_503_then_resumes_by_itself(self):
        """Full: 503 + Retry-After and one log line for two refusals; memory equals disk; freed: the same block
        is accepted and the chain goes on."""
        tip = self.node.chain.tip
        pages = self.store._db.execute("PRAGMA page_count").fetchone()[0]
        self.store._db.execute(f"PRAGMA max_page_count = {pages}")
        blocks = [big_block(CHAIN[-1], 1, 250_000)]
        blocks.append(make_block(blocks[0], pay_to=BOB))
        for _ in range(2):
            answer = self.submit(blocks[0])
            self.assertEqual(answer.status, 503)
            self.assertEqual(answer.json["code"], StoreError.code)
            self.assertEqual(answer.header("Retry-After"), str(StoreError.retry_after_s))
        outage = [e for e in self.lines if "cannot write" in str(e.get("log_format", ""))]
        self.assertEqual(len(outage), 1)
        self.assertEqual(self.node.chain.tip, tip)
        self.assertEqual(self.store.tip(), tip.hash)
        self.assertEqual(ChainState(self.store, REGTEST).tip, self.node.chain.tip)
        self.assertIsNone(self.store.get_entry(blocks[0].hash))
        self.store._db.execute("PRAGMA max_page_count = 1073741823")
        for block in blocks:
            answer = self.submit(block)
            self.assertEqual((answer.status, answer.json["status"]), (200, "accepted"))
        self.assertEqual(self.node.chain.tip.hash, blocks[-1].hash)
        self.assertNotEqual(self.store.get_entry(blocks[0].hash).status, INVALID)
        self.assertTrue(any("writes again" in str(e.get("log_format", "")) for e in self.lines))

    def test_low_work_block_nobody_asked_for_is_not_stored(self):
        """A valid block forking below the tip, with less work, answers 200 not-stored and writes nothing."""
        fork = make_block(CHAIN[1], pay_to=BOB)
        answer = self.submit(fork)
        self.assertEqual((answer.status, answer.json["status"]), (200, "not-stored"))
        self.assertIn("less work", answer.json["reason"])
        self.assertIsNone(self.store.get_entry(fork.hash))
        self.assertEqual(self.node.chain.tip.hash, CHAIN[-1].hash)
