"""/fees prices the mempool by the packages a template would choose: a cheap parent pulled in by a child that
pays for it does not lower the estimate."""

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from chaincore.service.node import TEMPLATE_RESERVE_BYTES
from tests.support.api import funded_node, mature_outpoint
from tests.support.builders import ALICE, BOB, CAROL, signed_tx
from tests.support.nodes import settled


class PackageFeeTests(SynchronousTestCase):
    def test_cheap_parent_rides_on_its_child(self):
        """The mempool rate is the chosen package's rate, above the cheap parent's own rate."""
        node = funded_node().node
        reward = REGTEST.block_reward(1)
        parent = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, reward - 300)])
        settled(node.submit_tx(parent))
        child = signed_tx([(OutPoint(parent.tx_id, 0), BOB)], [(CAROL, reward - 300 - 60_000)])
        settled(node.submit_tx(child))
        other = signed_tx([(mature_outpoint(2), ALICE)], [(BOB, REGTEST.block_reward(2) - 2_000)])
        settled(node.submit_tx(other))
        package_bytes = parent.size + child.size
        # room for the parent and child only: the pool holds more than a block
        node.params = dataclasses.replace(REGTEST, max_block_size=TEMPLATE_RESERVE_BYTES + package_bytes + 10)
        estimate = node.fee_estimate()
        package_rate = (300 + 60_000) / package_bytes
        self.assertEqual(estimate["mempool_rate"], int(package_rate) + 1)
        self.assertGreater(estimate["mempool_rate"], 300 // parent.size + 1)
