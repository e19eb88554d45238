"""Long /utxos and /transactions answers are written in slices (the reactor serves others in between) and read
as the same JSON as a one-piece answer."""

import json

from twisted.internet.task import Cooperator
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from chaincore.api import routes
from chaincore.core import jsonview
from chaincore.core.params import REGTEST
from tests.support.api import MATURE_MAX, funded_node, mature_outpoint
from tests.support.builders import ALICE, BOB, signed_tx
from tests.support.nodes import settled


class ListStreamTests(SynchronousTestCase):
    def setUp(self):
        self.patch(routes, "STREAM_LIST_OVER", 5)
        self.patch(routes, "STREAM_SLICE_ROWS", 3)
        self.scheduled = []
        cooperator = Cooperator(scheduler=self.scheduled.append, terminationPredicateFactory=lambda: lambda: True)
        self.service = funded_node(cooperate=cooperator.cooperate)
        self.stub = StubTreq(self.service.api.resource())

    def fetch(self, path: str) -> tuple:
        """(scheduler turns taken, decoded JSON body) of GET path."""
        turns, got = 0, []
        self.stub.get("http://127.0.0.1:5000" + path).addCallback(lambda r: r.content()).addCallback(got.append)
        self.stub.flush()
        while not got:
            if self.scheduled:
                self.scheduled.pop(0)()
            self.stub.flush()
            turns += 1
            self.assertLess(turns, 200)
        return turns, json.loads(got[0])

    def test_utxos_in_slices(self):
        """ALICE's 110 coins take many scheduler turns and read as the node's utxos list."""
        turns, body = self.fetch(f"/utxos/{ALICE.address}")
        self.assertGreaterEqual(turns, 110 // 3)
        self.assertEqual(body, {"address": ALICE.address, "utxos": self.service.node.utxos(ALICE.address)})

    def test_transactions_in_slices(self):
        """A mempool of more than STREAM_LIST_OVER transactions is written in slices, every one of them."""
        for h in range(1, MATURE_MAX + 1):
            tx = signed_tx([(mature_outpoint(h), ALICE)], [(BOB, REGTEST.block_reward(h) - 10_000)])
            settled(self.service.node.submit_tx(tx))
        txs = self.service.node.mempool.transactions()
        self.assertGreater(len(txs), 5)
        turns, body = self.fetch("/transactions")
        self.assertGreaterEqual(turns, len(txs) // 3)
        self.assertEqual(body, {"transactions": [jsonview.tx_to_json(tx) for tx in txs], "more": False})

    def test_utxos_asked_again_builds_no_row(self):
        """A long /utxos list asked again at the same tip and mempool builds no row; a mempool spend of one
        of its coins is shown at once (spent_in_mempool), the list built again."""
        node = self.service.node
        built = []
        utxo_row = node.utxo_row
        node.utxo_row = lambda *c: built.append(c) or utxo_row(*c)
        _, first = self.fetch(f"/utxos/{ALICE.address}")
        self.assertEqual(len(built), len(first["utxos"]))
        _, again = self.fetch(f"/utxos/{ALICE.address}")
        self.assertEqual((again, len(built)), (first, len(first["utxos"])))
        tx = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, REGTEST.block_reward(1) - 10_000)])
        settled(node.submit_tx(tx))
        _, after = self.fetch(f"/utxos/{ALICE.address}")
        self.assertEqual(len(built), 2 * len(first["utxos"]))
        spent = [r for r in after["utxos"] if r["spent_in_mempool"]]
        self.assertEqual([(r["tx_id"], r["output_index"]) for r in spent],
                         [(mature_outpoint(1).tx_id.hex(), mature_outpoint(1).index)])
        self.assertEqual(after, {"address": ALICE.address, "utxos": node.utxos(ALICE.address)})

    def test_transactions_stop_at_the_byte_cap_a_client_sets(self):
        """With max_bytes a streamed mempool stops before it (one transaction at least) and says more;
        without it, every transaction is sent."""
        for h in range(1, MATURE_MAX + 1):
            tx = signed_tx([(mature_outpoint(h), ALICE)], [(BOB, REGTEST.block_reward(h) - 10_000)])
            settled(self.service.node.submit_tx(tx))
        txs = self.service.node.mempool.transactions()
        three = sum(len(json.dumps(jsonview.tx_to_json(tx), separators=(",", ":"))) + 1 for tx in txs[:3])
        _, body = self.fetch(f"/transactions?max_bytes={three}")
        self.assertEqual(body, {"transactions": [jsonview.tx_to_json(tx) for tx in txs[:3]], "more": True})
        _, body = self.fetch("/transactions?max_bytes=1")
        self.assertEqual((len(body["transactions"]), body["more"]), (1, True))
        _, body = self.fetch("/transactions")
        self.assertEqual((len(body["transactions"]), body["more"]), (len(txs), False))
