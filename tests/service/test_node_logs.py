"""The node's log lines for people (CONTRACT 7): one line per block or payment, with the right verb."""

from twisted.logger import globalLogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.params import REGTEST

from ..support.api import funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx


class NodeLogTests(SynchronousTestCase):
    def setUp(self):
        self.node = funded_node()
        self.lines = []

        def observe(event):
            if event.get("log_namespace") == "chaincore.node":
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def block(self, **kw):
        block = make_block(self.node.chain.block(self.node.chain.tip.hash), pay_to=BOB, extra=b"%d" % len(self.lines))
        self.node.accept_block(block, **kw)
        return block

    def test_verbs(self):
        """Own --mine blocks say mined, a local miner's say accepted, a peer's name the peer; one line each."""
        self.block(local=True, mined=True)
        self.block(local=True)
        self.block(source="http://localhost:5001")
        self.assertEqual(len(self.lines), 3, self.lines)
        self.assertTrue(self.lines[0].startswith("mined block"), self.lines[0])
        self.assertIn("accepted block", self.lines[1])
        self.assertIn("from a local miner", self.lines[1])
        self.assertNotIn("mined", self.lines[1])
        self.assertIn("from http://localhost:5001", self.lines[2])

    def test_payment_arriving(self):
        """A transaction entering the mempool is logged once, with its value and fee in coins."""
        coin = REGTEST.block_reward(1)
        self.node.accept_tx(signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 10_000), (ALICE, coin - 11_000)]))
        (line,) = self.lines
        self.assertIn("accepted", line)
        self.assertIn("fee 0.00001000 coins (1,000 units)", line)

    def test_reorganisation_is_logged(self):
        """A switch to a heavier branch logs the reorganisation as well as the block that caused it."""
        tip = funded_chain()[-1]
        self.node.accept_block(make_block(tip, pay_to=BOB))
        fork = make_block(tip, pay_to=BOB, extra=b"x")
        self.node.accept_block(fork, source="http://localhost:5002")
        self.node.accept_block(make_block(fork, pay_to=BOB, extra=b"x"), source="http://localhost:5002")
        self.assertTrue(any(line.startswith("reorganisation: 1 blocks off, 2 on") for line in self.lines),
                        self.lines)
        self.assertTrue(any("side-chain" in line for line in self.lines), self.lines)
