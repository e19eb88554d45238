"""`--mine` searches nonces in the node's one worker pool and submits through the node's accept path."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.service.miner import REGTEST_PAUSE_S
from chaincore.service.workers import InlineOffloader
from tests.support.builders import ALICE, regtest_chain
from tests.support.nodes import make_node


class RecordingOffloader(InlineOffloader):
    """Runs work inline and records the name of each function it ran."""

    def __init__(self):
        self.ran = []

    def run(self, fn, *args):
        self.ran.append(fn.__name__)
        return super().run(fn, *args)


class MinerPoolTests(SynchronousTestCase):
    def test_mine_uses_the_node_pool(self):
        """A node built with mine= mines regtest blocks with search_nonce in the node's own offloader."""
        chain = regtest_chain(3)
        clock = Clock()
        clock.advance(chain[-1].header.timestamp + 60)
        offloader = RecordingOffloader()
        service = make_node(clock, blocks=chain, offloader=offloader, mine=ALICE.address)
        self.assertIs(service.node.offloader, offloader)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(service.node.chain.height, 4)
        clock.advance(REGTEST_PAUSE_S)
        self.assertEqual(service.node.chain.height, 5)
        self.assertEqual(service.miner.blocks_found, 2)
        self.assertIn("search_nonce", offloader.ran)
        service.miner.stopService()
        clock.advance(REGTEST_PAUSE_S * 3)
        self.assertEqual(service.node.chain.height, 5)
