"""The explorer's pages (CONTRACT 7) through StubTreq: links, search, the address page, escaping.

The pages are HTML; the tests read the links and the text a person would
see.  Real browsers drive the same pages in tests/integration/test_browser.py.
"""

import re

from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.explorer import coins, supply
from chaincore.core.params import COIN, REGTEST

from ..support.nodes import settled
from ..support.api import FUNDED_HEIGHT, APIClient, funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx


def links(body: bytes) -> list:
    return re.findall(r'href="([^"]+)"', body.decode())


class PageTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)
        coin = REGTEST.block_reward(1)
        self.tx = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 7 * COIN), (ALICE, coin - 7 * COIN - 1_000)])
        settled(self.node.submit_tx(self.tx))

    def page(self, path: str, status: int = 200) -> bytes:
        answer = self.client.get(path)
        self.assertEqual(answer.status, status, answer.body[:300])
        self.assertEqual(answer.content_type, "text/html; charset=utf-8")
        return answer.body

    def test_home_links_every_kind_of_page(self):
        """The home page links the tip's block page, the mempool page, a transaction page and the search form."""
        body = self.page("/")
        found = links(body)
        self.assertIn(f"/explorer/block/{funded_chain()[-1].hash.hex()}", found)
        self.assertIn("/explorer/mempool", found)
        self.assertIn(f"/explorer/tx/{self.tx.tx_id.hex()}", found)
        self.assertIn(b'action="/search"', body)
        self.assertIn(b"Supply", body)
        self.assertIn(b"Difficulty", body)

    def test_every_link_on_the_home_page_answers(self):
        """Every local link on the home page answers 200 (pages, JSON, the API document)."""
        for href in links(self.page("/")):
            if href.startswith("/"):
                self.assertEqual(self.client.get(href).status, 200, href)

    def test_block_page(self):
        """A block page, by hash or by height, shows its height, its transactions and links to its neighbours."""
        block, parent = funded_chain()[50], funded_chain()[49]
        body = self.page(f"/explorer/block/{block.hash.hex()}")
        self.assertEqual(body, self.page("/explorer/block/50"))
        self.assertIn(b"Block 50", body)
        found = links(body)
        self.assertIn(f"/explorer/block/{parent.hash.hex()}", found)
        self.assertIn(f"/explorer/block/{funded_chain()[51].hash.hex()}", found)
        self.assertIn(f"/explorer/tx/{block.transactions[0].tx_id.hex()}", found)

    def test_transaction_page(self):
        """A transaction page shows each input's value and address, the fee and the size."""
        body = self.page(f"/explorer/tx/{self.tx.tx_id.hex()}").decode()
        self.assertIn(f"/explorer/address/{ALICE.address}", body)
        self.assertIn(coins(REGTEST.block_reward(1)), body)
        self.assertIn("0.00001", body)  # the fee, 1,000 units
        self.assertIn(f"{self.tx.size:,} bytes", body)
        self.assertIn("mempool", body)

    def test_address_page_shows_the_split_and_pages(self):
        """The address page shows spendable and immature amounts and links to an older page of history."""
        body = self.page(f"/explorer/address/{ALICE.address}").decode()
        balance = self.node.balance(ALICE.address)
        self.assertIn(coins(balance["spendable"]), body)
        self.assertIn(coins(balance["immature"]), body)
        older = [h for h in links(body.encode()) if "cursor=" in h]
        self.assertEqual(len(older), 1)
        second = self.page(older[0].replace("&amp;", "&")).decode()
        self.assertIn("newest", second)

    def test_mempool_page(self):
        """The mempool page lists the waiting transaction with its fee rate."""
        body = self.page("/explorer/mempool").decode()
        self.assertIn(f"/explorer/tx/{self.tx.tx_id.hex()}", body)
        self.assertIn(f"{1_000 / self.tx.size:.2f}", body)

    def test_blocks_pages(self):
        """The blocks list pages backwards from the tip with an 'older blocks' link."""
        body = self.page("/explorer/blocks").decode()
        self.assertIn(f"Blocks {FUNDED_HEIGHT - 19:,} to {FUNDED_HEIGHT:,}", body)
        self.assertIn(f"/explorer/blocks?before={FUNDED_HEIGHT - 19}", body)

    def test_blocks_page_kept_until_the_tip_moves(self):
        """The blocks page asked again at the same tip decodes no block; a new tip shows on the next one."""
        decoded = []
        block = self.node.chain.block
        self.node.chain.block = lambda h: decoded.append(h) or block(h)
        first = self.page("/explorer/blocks")
        count = len(decoded)
        self.assertGreater(count, 0)
        self.assertEqual(self.page("/explorer/blocks"), first)
        self.assertEqual(len(decoded), count)
        self.node.clock.advance(60)
        settled(self.node.submit_block(make_block(funded_chain()[-1], timestamp=int(self.node.clock.seconds()))))
        self.assertIn(f"Blocks {FUNDED_HEIGHT - 18:,} to {FUNDED_HEIGHT + 1:,}", self.page("/explorer/blocks").decode())

    def test_unknown_block_and_transaction_are_404_pages(self):
        """An unknown block or transaction is a 404 HTML page saying so."""
        self.assertIn(b"No block", self.page("/explorer/block/" + "ab" * 32, 404))
        self.assertIn(b"No transaction", self.page("/explorer/tx/" + "ab" * 32, 404))

    def test_supply(self):
        """Supply counts every reward from height 1, across halvings."""
        self.assertEqual(supply(REGTEST, 0), 0)
        self.assertEqual(supply(REGTEST, 3), 3 * REGTEST.block_reward(1))
        h = REGTEST.halving_interval
        self.assertEqual(supply(REGTEST, h + 1), (h - 1) * REGTEST.block_reward(1) + 2 * REGTEST.block_reward(h))


class SearchTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def located(self, q: str) -> str:
        d = self.client.stub.get("http://127.0.0.1:5000/search?q=" + q, allow_redirects=False)
        self.client.stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 303)
        return response.headers.getRawHeaders(b"location")[0].decode()

    def test_height_hash_tx_and_address(self):
        """A height or block hash finds the block page, a tx id the transaction page, an address its page."""
        block = funded_chain()[7]
        self.assertEqual(self.located("7"), f"/explorer/block/{block.hash.hex()}")
        self.assertEqual(self.located(block.hash.hex().upper()), f"/explorer/block/{block.hash.hex()}")
        tx_id = block.transactions[0].tx_id.hex()
        self.assertEqual(self.located(tx_id), f"/explorer/tx/{tx_id}")
        self.assertEqual(self.located(BOB.address), f"/explorer/address/{BOB.address}")

    def test_nothing_matched_is_404_html(self):
        """A query matching nothing answers a 404 HTML page that says nothing matched, the query escaped."""
        answer = self.client.get("/search?q=%3Cscript%3Ealert(1)%3C/script%3E")
        self.assertEqual((answer.status, answer.content_type), (404, "text/html; charset=utf-8"))
        self.assertIn(b"Nothing matched", answer.body)
        self.assertNotIn(b"<script>alert", answer.body)
        self.assertIn(b"&lt;script&gt;", answer.body)
        self.assertEqual(self.client.get("/search?q=999999").status, 404)
