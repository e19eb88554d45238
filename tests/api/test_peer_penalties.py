"""A peer that posts a block or transaction breaking a rule loses points, as for data it answered with;
the client's answer is the same refusal either way."""

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import jsonview
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from chaincore.p2p.peers import penalty_for

from ..support.api import APIClient, assert_error, funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx

PEER = "http://203.0.113.7:5000"


class PeerPenaltyTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.reports = []
        self.patch(self.service.peers.discovery, "report_misbehaviour",
                   lambda url, err: self.reports.append((url, getattr(err, "code", err))) or False)
        self.peer = APIClient(self, self.service, client_address="203.0.113.7")

    def test_invalid_block_from_a_peer_costs_it_points(self):
        """A block whose coinbase pays too much, posted by the peer it names, is refused and reported."""
        chain = funded_chain()
        bad = make_block(chain[-1], fees=1)  # claims a fee nobody paid
        answer = self.peer.post("/submit_block", {"block": jsonview.block_to_json(bad)},
                                headers={"X-ChainCore-Peer": PEER})
        self.assertEqual(answer.status, 400, answer.body)
        self.assertEqual(answer.json["code"], "bad-coinbase-value")
        self.assertEqual(self.reports, [(PEER, "bad-block")])

    def test_block_spending_a_missing_coin_from_a_peer_costs_it_a_blocks_points(self):
        """A block spending a coin that does not exist, posted by a peer: the client hears missing-input, and
        the peer is charged as for a block breaking a rule (a transaction's missing input carries no points, as
        two mempools may differ; a block's coins are its own branch's, so it has no such excuse)."""
        chain = funded_chain()
        ghost = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 1000)])
        spender = signed_tx([(OutPoint(ghost.tx_id, 0), BOB)], [(ALICE, 500)])
        bad = make_block(chain[-1], [spender], fees=500)
        answer = self.peer.post("/submit_block", {"block": jsonview.block_to_json(bad)},
                                headers={"X-ChainCore-Peer": PEER})
        assert_error(self, answer, 400, "missing-input")
        self.assertEqual(self.reports, [(PEER, "bad-block")])
        self.assertGreaterEqual(penalty_for(self.reports[0][1]), 50)

    def test_bad_transaction_from_a_peer_costs_it_points(self):
        """A transaction with a bad signature, and bytes that are no transaction, are reported with their codes."""
        tx = signed_tx([(mature_outpoint(1), BOB)], [(ALICE, REGTEST.block_reward(1) - 1000)])  # not BOB's coin
        answer = self.peer.post("/add_transaction", {"transaction": jsonview.tx_to_json(tx)},
                                headers={"X-ChainCore-Peer": PEER})
        self.assertEqual(answer.status, 400, answer.body)
        junk = self.peer.request("POST", "/add_transaction", data=b"\x01\x02", headers={"X-ChainCore-Peer": PEER},
                                 content_type="application/octet-stream")
        assert_error(self, junk, 400, "malformed")
        self.assertEqual(self.reports, [(PEER, answer.json["code"]), (PEER, "malformed")])

    def test_a_header_naming_someone_else_costs_nobody_points(self):
        """X-ChainCore-Peer naming another host than the sender is not believed: no one is reported."""
        chain = funded_chain()
        bad = make_block(chain[-1], fees=1)
        answer = self.peer.post("/submit_block", {"block": jsonview.block_to_json(bad)},
                                headers={"X-ChainCore-Peer": "http://198.51.100.9:5000"})
        self.assertEqual(answer.status, 400)
        self.assertEqual(self.reports, [])
