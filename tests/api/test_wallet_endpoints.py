"""The second release's answers for wallets (CONTRACT 7): the balance split, history pages and /fees.

Each test starts from a fresh regtest node holding the funded chain of
tests/support/api.py and reads the answers through StubTreq.
"""

import dataclasses
import os

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import keys
from chaincore.core.errors import FeeTooLow
from chaincore.core.params import REGTEST
from chaincore.storage.sqlite import SqliteStore

from ..support.nodes import make_node, settled
from .test_endpoints import pay_bob
from ..support.api import FUNDED_HEIGHT, MATURE_MAX, APIClient, assert_error, funded_chain, funded_node
from ..support.builders import ALICE, BOB, make_block


class BalanceSplitTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def test_immature_rewards_are_not_spendable(self):
        """Coinbases younger than the maturity are `immature`, the others `spendable`, and both add to confirmed."""
        body = self.client.get_json(f"/balance/{ALICE.address}")
        reward = REGTEST.block_reward(1)
        self.assertEqual(body["spendable"], MATURE_MAX * reward)
        self.assertEqual(body["immature"], (FUNDED_HEIGHT - MATURE_MAX) * reward)
        self.assertEqual(body["spendable"] + body["immature"], body["confirmed"])

    def test_coins_spent_in_the_mempool_are_not_spendable(self):
        """A confirmed coin that a mempool transaction spends leaves `spendable` at once."""
        before = self.client.get_json(f"/balance/{ALICE.address}")["spendable"]
        settled(self.node.submit_tx(pay_bob(height=1)))
        after = self.client.get_json(f"/balance/{ALICE.address}")
        self.assertEqual(after["spendable"], before - REGTEST.block_reward(1))
        self.assertEqual(after["confirmed"], before + after["immature"])

    def test_a_new_block_shows_at_once(self):
        """Balance and coins asked again read no coin while nothing changed, and show a new block's at once."""
        before = self.client.get_json(f"/balance/{ALICE.address}")
        coins = len(self.client.get_json(f"/utxos/{BOB.address}")["utxos"])
        reads = []
        coins_of = self.node.chain.coins_of
        self.node.chain.coins_of = lambda p: reads.append(p) or coins_of(p)
        self.assertEqual(self.client.get_json(f"/balance/{ALICE.address}"), before)
        self.assertEqual(len(self.client.get_json(f"/utxos/{BOB.address}")["utxos"]), coins)
        self.assertEqual(reads, [])
        self.node.clock.advance(60)
        settled(self.node.submit_block(make_block(funded_chain()[-1], [pay_bob()], fees=1_000,
                                                  timestamp=int(self.node.clock.seconds()))))
        after = self.client.get_json(f"/balance/{ALICE.address}")
        self.assertEqual(after["confirmed"], before["confirmed"] + REGTEST.block_reward(FUNDED_HEIGHT + 1)
                         - 10_000_000)
        self.assertEqual(len(self.client.get_json(f"/utxos/{BOB.address}")["utxos"]), coins + 1)


class HistoryPagingTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def pages(self, address, limit):
        rows, cursor, pages = [], None, 0
        while True:
            query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
            body = self.client.get_json(f"/history/{address}{query}")
            self.assertLessEqual(len(body["history"]), limit)
            rows += body["history"]
            pages += 1
            cursor = body["next"]
            if cursor is None:
                return rows, pages

    def test_pages_cover_everything_newest_first(self):
        """Paging 7 rows at a time yields every transaction once, mempool first, then by height down."""
        tx = pay_bob()
        settled(self.node.submit_tx(tx))
        rows, pages = self.pages(ALICE.address, 7)
        self.assertEqual(len(rows), FUNDED_HEIGHT + 1)
        self.assertEqual(len({r["tx_id"] for r in rows}), FUNDED_HEIGHT + 1)
        self.assertEqual(rows[0]["tx_id"], tx.tx_id.hex())
        heights = [r["height"] for r in rows[1:]]
        self.assertEqual(heights, sorted(heights, reverse=True))
        self.assertEqual(pages, -(-(FUNDED_HEIGHT + 1) // 7))

    def test_mempool_rows_across_pages(self):
        """Mempool rows that fill more than a page continue on the next page before the chain's rows."""
        for h in (1, 2, 3):
            settled(self.node.submit_tx(pay_bob(height=h)))
        first = self.client.get_json(f"/history/{ALICE.address}?limit=2")
        self.assertEqual([r["height"] for r in first["history"]], [None, None])
        second = self.client.get_json(f"/history/{ALICE.address}?limit=2&cursor={first['next']}")
        self.assertEqual([r["height"] for r in second["history"]], [None, FUNDED_HEIGHT])

    def test_mempool_rows_leaving_between_pages_cut_nothing(self):
        """A mempool transaction confirmed between two pages shifts no other out of them: every one of the
        address's transactions is still on some page (CONTRACT 7: nothing is ever cut silently)."""
        txs = [pay_bob(height=h) for h in (1, 2, 3, 4)]
        for tx in txs:
            settled(self.node.submit_tx(tx))
        first = self.client.get_json(f"/history/{ALICE.address}?limit=2")
        self.assertEqual([r["tx_id"] for r in first["history"]], [txs[3].tx_id.hex(), txs[2].tx_id.hex()])
        self.node.clock.advance(60)
        settled(self.node.submit_block(make_block(funded_chain()[-1], [txs[3]], fees=1_000,
                                                  timestamp=int(self.node.clock.seconds()))))
        seen, cursor = [r["tx_id"] for r in first["history"]], first["next"]
        while cursor is not None:
            body = self.client.get_json(f"/history/{ALICE.address}?limit=2&cursor={cursor}")
            seen += [r["tx_id"] for r in body["history"]]
            cursor = body["next"]
        self.assertEqual([t.tx_id.hex() for t in txs if t.tx_id.hex() not in seen], [])
        self.assertEqual(seen[2:4], [txs[1].tx_id.hex(), txs[0].tx_id.hex()])  # the page after goes on from there

    def test_last_page_says_so(self):
        """An address with fewer rows than the limit gets them all and `next` null."""
        settled(self.node.submit_tx(pay_bob()))
        body = self.client.get_json(f"/history/{BOB.address}?limit=5")
        self.assertEqual((len(body["history"]), body["next"]), (1, None))

    def test_bad_cursor_is_refused(self):
        """A cursor the node never gave out is a JSON 400 naming the cursor."""
        answer = self.client.get(f"/history/{ALICE.address}?cursor=zz")
        assert_error(self, answer, 400)
        self.assertIn("cursor", answer.json["error"])

    def test_history_reads_no_block(self):
        """Chain rows of /history come from the history index alone, and show what decoding the blocks
        shows: a spend mined to the tip (sent and received), coinbases, confirmations."""
        spend = pay_bob()
        self.node.clock.advance(60)
        settled(self.node.submit_block(make_block(funded_chain()[-1], [spend], fees=1_000,
                                                  timestamp=int(self.node.clock.seconds()))))
        self.assertEqual(self.node.chain.height, FUNDED_HEIGHT + 1)
        expected = {}
        for address in (ALICE.address, BOB.address):
            expected[address] = [reference_history_row(self.node, bytes.fromhex(r["tx_id"]), address)
                                 for r in self.pages(address, 1000)[0]]
        reads = []
        get_block = self.node.store.get_block
        self.node.store.get_block = lambda h: reads.append(h) or get_block(h)
        for address in (ALICE.address, BOB.address):
            self.assertEqual(self.client.get_json(f"/history/{address}?limit=1000")["history"], expected[address])
        self.assertEqual(reads, [])
        alice = {r["tx_id"]: r for r in expected[ALICE.address]}
        self.assertEqual(expected[BOB.address][0]["amount_delta"], 10_000_000)
        self.assertEqual(alice[spend.tx_id.hex()]["amount_delta"], -10_000_000 - 1_000)
        self.assertEqual(sum(r["coinbase"] for r in alice.values()), FUNDED_HEIGHT + 1)

    def test_sqlite_store_pages_the_same(self):
        """The SQLite store's history_of with `after` returns the rows after that one, like MemoryStore's."""
        folder = self.mktemp()
        os.makedirs(folder)
        store = SqliteStore(os.path.join(folder, "chain.sqlite"), REGTEST.name, REGTEST.genesis_hash)
        self.addCleanup(store.close)
        clock = Clock()
        clock.advance(funded_chain()[-1].header.timestamp + 60)
        node = make_node(clock, store=store).node
        for block in funded_chain()[1:30]:
            settled(node.submit_block(block))
        rows, cursor = node.history_page(ALICE.address, 10)
        rest, _ = node.history_page(ALICE.address, 100, cursor)
        self.assertEqual([r["height"] for r in rows + rest], list(range(29, 0, -1)))


def reference_history_row(node, tx_id: bytes, address: str) -> dict:
    """A /history row worked out the slow way, by decoding the transaction and the ones it spends."""
    payload = keys.address_payload(address)
    found = node.transaction(tx_id)
    tx = found["tx"]
    received = sum(o.amount for o in tx.outputs if o.recipient == payload)
    sent = sum(node.transaction(i.prev_tx_id)["tx"].outputs[i.output_index].amount for i in tx.inputs
               if not i.is_null and keys.payload_of(i.public_key) == payload)
    return {"tx_id": tx_id.hex(), "height": found["height"], "confirmations": found["confirmations"],
            "amount_delta": received - sent, "coinbase": tx.is_coinbase}


class FeeTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def test_empty_mempool_answers_the_floor(self):
        """With room to spare in the next block, /fees answers the minimum relay fee rate."""
        body = self.client.get_json("/fees")
        self.assertEqual(body["fee_rate"], REGTEST.min_fee_rate)
        self.assertEqual(body["min_fee_rate"], REGTEST.min_fee_rate)
        self.assertEqual(body["typical_fee"], body["fee_rate"] * body["typical_tx_bytes"])

    def test_full_mempool_raises_the_rate(self):
        """When the mempool holds more than a block, the rate is one above the lowest that makes the next block."""
        self.node.params = dataclasses.replace(REGTEST, max_block_size=2_000 + 300)  # room for one transaction
        cheap, dear = pay_bob(height=1, fee=1_000), pay_bob(height=2, fee=50_000)
        settled(self.node.submit_tx(cheap))
        settled(self.node.submit_tx(dear))
        body = self.client.get_json("/fees")
        self.assertEqual(body["fee_rate"], 50_000 // dear.size + 1)

    def test_estimate_is_kept_until_something_changes(self):
        """Asking twice reads no recent block again; a transaction entering the mempool is seen at once."""
        reads = []
        main_blocks = self.node.chain.main_blocks
        self.node.chain.main_blocks = lambda *a: reads.append(a) or main_blocks(*a)
        first = self.client.get_json("/fees")
        self.assertEqual(self.client.get_json("/fees"), first)
        self.assertEqual(len(reads), 1)
        settled(self.node.submit_tx(pay_bob()))
        self.assertEqual(self.client.get_json("/fees")["mempool_size"], first["mempool_size"] + 1)
        self.assertEqual(len(reads), 2)

    def test_fee_error_names_coins_and_units(self):
        """A fee below the minimum is refused with both coins and base units in the message."""
        tx = pay_bob(fee=0)
        err = self.assertRaises(FeeTooLow, lambda: settled(self.node.submit_tx(tx)))
        self.assertIn("0.00000000 coins (0 units)", str(err))
        self.assertIn(f"0.00000{tx.size:03d} coins ({tx.size} units", str(err))


class RecentBlocksFeeTests(SynchronousTestCase):
    def test_full_recent_blocks_set_the_rate(self):
        """Nearly full recent blocks that paid a rate above the floor lift the estimate to their median."""
        node = funded_node().node
        small = dataclasses.replace(REGTEST, max_block_size=2_300)
        tx = pay_bob(fee=40_000)
        block = make_block(funded_chain()[-1], [tx], fees=40_000)
        settled(node.submit_block(block))
        node.params = small
        self.assertGreaterEqual(block.size, (small.max_block_size - 2_000) * 0.9)
        self.assertEqual(node.fee_estimate()["fee_rate"], 40_000 // tx.size)
