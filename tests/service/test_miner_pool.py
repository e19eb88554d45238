"""`--mine` searches nonces in the node's one worker pool and submits through the node's accept path."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
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


def mining_node(blocks: int, offloader):
    """(clock, service): a node on a regtest chain of `blocks` blocks, mining to ALICE with offloader."""
    chain = regtest_chain(blocks)
    clock = Clock()
    clock.advance(chain[-1].header.timestamp + 60)
    return clock, make_node(clock, blocks=chain, offloader=offloader, mine=ALICE.address)


class MinerPoolTests(SynchronousTestCase):
    def test_mine_uses_the_node_pool(self):
        """A node built with mine= mines regtest blocks with search_nonce in the node's own offloader."""
        offloader = RecordingOffloader()
        clock, service = mining_node(3, offloader)
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


class PendingOffloader(InlineOffloader):
    """Hands out nonce ranges that are never answered, as worker processes still searching when the node stops."""

    workers = 3

    def __init__(self):
        self.pending = []

    def run(self, fn, *args):
        if fn.__name__ != "search_nonce":
            return super().run(fn, *args)
        d = defer.Deferred()
        self.pending.append(d)
        return d


class MinerStopTests(SynchronousTestCase):
    def test_stop_during_a_search_is_quiet(self):
        """A node stopped while its --mine ranges are out logs no failure: stopping is not a fault of the miner."""
        offloader = PendingOffloader()
        _, service = mining_node(2, offloader)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        service.startService()
        self.assertTrue(offloader.pending, "the miner handed out no range")
        service.miner.stopService()
        self.assertTrue(all(d.called for d in offloader.pending))
        self.assertEqual(self.flushLoggedErrors(), [])
        loud = [formatEvent(e) for e in events
                if e.get("log_namespace") == "chaincore.miner" and e["log_level"] >= LogLevel.warn]
        self.assertEqual(loud, [])
        service.stopService()
