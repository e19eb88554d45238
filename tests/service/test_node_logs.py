"""The node's log lines for people (CONTRACT 7): one line per block, with the right verb; payments summed up."""

from twisted.logger import LogLevel, globalLogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from chaincore import logs
from chaincore.core.params import REGTEST
from chaincore.service.node import TX_SUMMARY_S

from ..support.nodes import settled
from ..support.api import funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx


class NodeLogTests(SynchronousTestCase):
    def setUp(self):
        self.node = funded_node().node
        self.lines = []

        def observe(event):
            if event.get("log_namespace") == "chaincore.node":
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def block(self, **kw):
        block = make_block(self.node.chain.block(self.node.chain.tip.hash), pay_to=BOB, extra=b"%d" % len(self.lines))
        settled(self.node.submit_block(block, **kw))
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

    def pay(self, height: int):
        coin = REGTEST.block_reward(height)
        settled(self.node.submit_tx(signed_tx([(mature_outpoint(height), ALICE)],
                                              [(BOB, 10_000), (ALICE, coin - 11_000)])))

    def test_payment_arriving_at_debug(self):
        """At debug, a transaction entering the mempool is logged once, with its value and fee in coins."""
        logs._predicate.setLogLevelForNamespace("chaincore.node", LogLevel.debug)
        self.addCleanup(logs._predicate.clearLogLevels)
        self.pay(1)
        (line,) = self.lines
        self.assertIn("accepted", line)
        self.assertIn("fee 0.00001000 coins (1,000 units)", line)

    def test_payments_are_summed_up_at_info(self):
        """At info, accepted transactions are counted in one line per TX_SUMMARY_S seconds, not one line each."""
        self.pay(1)
        self.pay(2)
        self.assertEqual(self.lines, [])
        self.node.clock.advance(TX_SUMMARY_S)
        self.pay(3)
        (line,) = self.lines
        self.assertTrue(line.startswith(f"3 transactions accepted in the last {TX_SUMMARY_S} s"), line)
        self.assertTrue(line.endswith("; the mempool holds 3 transactions"), line)
        self.pay(4)
        self.assertEqual(len(self.lines), 1)

    def test_one_payment_in_the_singular(self):
        """A lone payment after a quiet period is one line, with both counts in the singular."""
        self.node.clock.advance(TX_SUMMARY_S)
        self.pay(1)
        (line,) = self.lines
        self.assertTrue(line.startswith("1 transaction accepted in the last"), line)
        self.assertTrue(line.endswith("; the mempool holds 1 transaction"), line)

    def test_reorganisation_is_logged(self):
        """A switch to a heavier branch logs the reorganisation as well as the block that caused it."""
        tip = funded_chain()[-1]
        settled(self.node.submit_block(make_block(tip, pay_to=BOB)))
        fork = make_block(tip, pay_to=BOB, extra=b"x")
        settled(self.node.submit_block(fork, source="http://localhost:5002"))
        settled(self.node.submit_block(make_block(fork, pay_to=BOB, extra=b"x"), source="http://localhost:5002"))
        self.assertTrue(any(line.startswith("reorganisation: 1 blocks off, 2 on") for line in self.lines),
                        self.lines)
        self.assertTrue(any("side-chain" in line for line in self.lines), self.lines)
