"""PeerNetwork start-up on a Clock: the node is `syncing` (no templates) until its first catch-up is over,
and stopping the service leaves nothing scheduled."""

from treq.testing import StubTreq

from chaincore.core.errors import Unavailable
from chaincore.p2p.network import DISCOVERY_INTERVAL_S, PeerNetwork
from tests.support.builders import ALICE

from .fakes import NodePeer
from .test_sync import ME, SyncTestCase, main_chain, url


class PeerNetworkStartupTests(SyncTestCase):
    def me(self, blocks, seeds) -> NodePeer:
        """Our node on the network, seeded with seeds; its service is not started yet."""
        return self.network.add(NodePeer(ME, self.clock, blocks, network=self.network, seeds=seeds))

    def service(self, me: NodePeer) -> PeerNetwork:
        """Start our node's whole service; its PeerNetwork."""
        me.service.startService()
        self.addCleanup(lambda: me.service.running and me.service.stopService())
        return me.service.peers

    def template_status(self, me: NodePeer) -> int:
        stub = StubTreq(me.api.resource())
        response = self.successResultOf(stub.get(f"{ME}/mining/template", params={"address": ALICE.address}))
        self.assertEqual(response.headers.getRawHeaders("Content-Type"), ["application/json"])
        return response.code

    def test_no_reachable_peer_ends_syncing_after_the_first_discovery_round(self):
        """With only unreachable seeds the node stops `syncing` once the first discovery round is over."""
        me = self.me(main_chain()[:3], [url(5001), url(5002)])
        started_at = self.clock.seconds()
        svc = self.service(me)
        self.assertFalse(me.node.syncing)
        self.assertGreaterEqual(svc.discovery.rounds, 1)
        self.assertEqual(self.clock.seconds(), started_at)
        self.assertIsNone(self.successResultOf(svc.startup_done))
        self.assertEqual(self.template_status(me), 200)
        self.assertEqual(len([u for u in self.network.refused if u.endswith("/status")]), 2)

    def test_syncing_until_the_catch_up_with_a_peer_ahead_is_over(self):
        """With a peer ahead the node stays `syncing`, answering /mining/template with 503, until every
        block is in; then it serves templates on the peer's tip."""
        peer = self.network.add(NodePeer(url(5001), self.clock, main_chain()[:261]))
        peer.held.add("/blocks")
        me = self.me(main_chain()[:11], [peer.url])
        svc = self.service(me)
        heights = []
        while me.node.syncing:  # each held /blocks answer is released by hand
            self.assertNoResult(svc.startup_done)
            self.assertEqual(self.template_status(me), 503)
            self.assertRaises(Unavailable, me.node.block_template, ALICE.address)
            heights.append(me.node.chain.height)
            self.assertGreater(peer.release(), 0)
            self.network.flush()
        self.assertEqual(heights[0], 10)
        self.assertGreaterEqual(len(heights), 2)
        self.assertEqual(heights, sorted(set(heights)))
        self.assertFalse(me.node.syncing)
        self.assertIsNone(self.successResultOf(svc.startup_done))
        self.assertEqual(me.tip(), peer.tip())
        self.assertEqual(self.template_status(me), 200)

    def test_stop_leaves_no_delayed_calls(self):
        """A running service with its timers started, stopped, leaves nothing on the clock."""
        peer = self.network.add(NodePeer(url(5001), self.clock, main_chain()[:11]))
        me = self.me(main_chain()[:11], [peer.url])
        svc = self.service(me)
        self.clock.pump([DISCOVERY_INTERVAL_S] * 5)
        self.assertGreater(svc.discovery.rounds, 3)
        self.assertNotEqual(self.clock.getDelayedCalls(), [])
        self.successResultOf(me.service.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_during_startup_catch_up_leaves_no_delayed_calls(self):
        """Stopping while the start-up catch-up waits on a peer cancels it and leaves nothing scheduled."""
        peer = self.network.add(NodePeer(url(5001), self.clock, main_chain()[:261]))
        peer.held.add("/blocks")
        me = self.me(main_chain()[:11], [peer.url])
        svc = self.service(me)
        self.assertTrue(me.node.syncing)
        self.successResultOf(me.service.stopService())
        self.assertTrue(svc.startup_done.called)  # cancelled, not left waiting
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(me.node.syncing)
        self.assertEqual(me.node.chain.height, 10)
