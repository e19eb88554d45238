"""Discovery rounds over a fake network, driven by a Clock: who becomes a peer, who is refused, when retries happen."""

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.errors import BadProofOfWork
from chaincore.p2p.client import PeerClient
from chaincore.p2p.discovery import Discovery, NodeIdentity
from chaincore.p2p.peers import BAN_S, PeerTable

from .fakes import GENESIS_HEX, FakeNetwork, FakePeer

ME = "http://localhost:5000"


class DiscoveryTests(SynchronousTestCase):
    def setUp(self):
        self.clock, self.network = Clock(), FakeNetwork()
        self.added, self.lost = [], []

    def discovery(self, ports=(), seeds=(), recheck_s=30, **kwargs):
        identity = NodeIdentity("me", "regtest", GENESIS_HEX, ME)
        self.table = PeerTable(recheck_s=recheck_s)
        return Discovery(PeerClient(self.network.client(), self.clock, ME), self.table, self.clock, identity,
                         discover_ports=ports, seeds=seeds,
                         on_peer_added=lambda url, status: self.added.append((url, status["node_id"])),
                         on_peer_lost=self.lost.append, **kwargs)

    def round(self, discovery):
        self.successResultOf(discovery.run_once())

    def test_finds_same_network_peers_and_refuses_others(self):
        """Probing the port range adds the node of our network and genesis, and no one else."""
        me = self.network.add(FakePeer(ME, "me"))
        good = self.network.add(FakePeer("http://localhost:5001"))
        other_net = self.network.add(FakePeer("http://localhost:5002", network="main"))
        other_genesis = self.network.add(FakePeer("http://localhost:5003", genesis_hash="ab" * 32))
        discovery = self.discovery(ports=range(5000, 5005))
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [good.url])
        self.assertEqual(self.added, [(good.url, good.node_id)])
        self.assertEqual(me.probes, 0)
        self.assertEqual((other_net.probes, other_genesis.probes), (1, 1))
        self.assertEqual(good.requests[0][2], ME)

    def test_a_url_the_client_cannot_ask_fails_alone_not_the_round(self):
        """A probe that raises something unexpected (a URL the HTTP client cannot encode) fails that URL; the
        round goes on to exchange peer lists with the others, and no round failure is logged."""
        good = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery(ports=[5001, 5002])
        real_status = discovery.client.status

        def status(url, *args, **kwargs):
            if url.endswith(":5002"):
                raise ValueError("cannot encode this host")
            return real_status(url, *args, **kwargs)

        discovery.client.status = status
        with capturedLogs() as events:
            self.round(discovery)
        self.assertEqual(discovery.active_peers(), [good.url])
        self.assertEqual([r[1] for r in good.requests if r[1] == "/peers"], ["/peers"])
        self.assertEqual([formatEvent(e) for e in events if "round failed" in formatEvent(e)], [])

    def test_refused_peers_are_not_reprobed_and_logged_once(self):
        """A node of another network is probed once, logged once, then left alone for an hour."""
        other = self.network.add(FakePeer("http://localhost:5002", network="main"))
        discovery = self.discovery(ports=[5002])
        with capturedLogs() as events:
            for _ in range(5):
                self.round(discovery)
                self.clock.advance(10)
        self.assertEqual(other.probes, 1)
        refusals = [formatEvent(e) for e in events if "not peering" in formatEvent(e)]
        self.assertEqual(len(refusals), 1)
        self.assertIn("network 'main'", refusals[0])
        self.clock.advance(3600)
        self.round(discovery)
        self.assertEqual(other.probes, 2)

    def test_non_chaincore_server_is_refused(self):
        """Something answering /status with garbage or without our fields is refused, not banned."""
        odd = self.network.add(FakePeer("http://localhost:5001"))
        odd.canned["/status"] = (200, b"<html></html>")
        partial = self.network.add(FakePeer("http://localhost:5002"))
        partial.canned["/status"] = (200, b'{"hello": "world"}')
        discovery = self.discovery(ports=[5001, 5002])
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [])
        self.assertEqual(self.table.get(odd.url).score, 0)
        self.assertIsNotNone(self.table.get(partial.url).refused)

    def test_never_adds_itself_under_another_url(self):
        """A URL answering with our node_id is dropped and never probed again."""
        mirror = self.network.add(FakePeer("http://127.0.0.1:5000", "me"))
        discovery = self.discovery(seeds=[mirror.url])
        for _ in range(3):
            self.round(discovery)
            self.clock.advance(60)
        self.assertEqual(mirror.probes, 1)
        self.assertEqual(discovery.active_peers(), [])
        self.assertEqual(self.added, [])
        self.assertFalse(discovery.remember(mirror.url))

    def test_same_node_under_two_urls_is_one_peer(self):
        """A node reached as localhost and as 127.0.0.1 counts once."""
        peer = self.network.add(FakePeer("http://localhost:5001"), "http://127.0.0.1:5001")
        discovery = self.discovery(ports=[5001], seeds=["http://127.0.0.1:5001"])
        self.round(discovery)
        self.assertEqual(len(discovery.active_peers()), 1)
        self.assertEqual(len(self.added), 1)
        self.assertEqual(self.added[0][1], peer.node_id)

    def test_unreachable_peer_is_retried_with_backoff(self):
        """A peer that fails is probed again 2, 4, 8 s later, not sooner, however often rounds run."""
        peer = self.network.add(FakePeer("http://localhost:5001", reachable=False))
        discovery = self.discovery(ports=[5001])
        probed_at = []
        for t in range(0, 15):
            before = peer.probes
            self.round(discovery)
            if peer.probes > before:
                probed_at.append(t)
            self.clock.advance(1)
        self.assertEqual(probed_at, [0, 2, 6, 14])
        self.assertEqual(discovery.active_peers(), [])

    def test_peer_going_away_leaves_and_comes_back(self):
        """An active peer that stops answering leaves (on_peer_lost) and returns after its backoff."""
        peer = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery(ports=[5001], recheck_s=10)
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [peer.url])
        peer.reachable = False
        self.clock.advance(10)
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [])
        self.assertEqual(self.lost, [peer.url])
        peer.reachable = True
        self.clock.advance(1.9)
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [])
        self.clock.advance(0.1)
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [peer.url])
        self.assertEqual([url for url, _ in self.added], [peer.url, peer.url])

    def test_stalled_peer_is_dropped_after_the_health_timeout(self):
        """A peer whose /status never answers fails after 2 s and is not active."""
        peer = self.network.add(FakePeer("http://localhost:5001"))
        peer.stalled.add("/status")
        discovery = self.discovery(ports=[5001])
        d = discovery.run_once()
        self.assertNoResult(d)
        self.clock.advance(2)
        self.network.flush()
        self.successResultOf(d)
        self.assertEqual(self.table.get(peer.url).failures, 1)

    def test_peer_exchange(self):
        """Peers named in a peer's /peers answer are probed in the same round; dead ones back off."""
        b = self.network.add(FakePeer("http://localhost:5002"))
        dead = "http://localhost:5003"
        a = self.network.add(FakePeer("http://localhost:5001", peers=[b.url, dead, "not a url", ME]))
        discovery = self.discovery(seeds=[a.url])
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [a.url, b.url])
        self.assertEqual(self.table.get(dead).failures, 1)
        self.assertNotIn(ME, self.table)

    def test_peer_exchange_is_bounded(self):
        """At most exchange_limit new URLs are taken from one answer."""
        many = [f"http://localhost:{6000 + i}" for i in range(50)]
        a = self.network.add(FakePeer("http://localhost:5001", peers=many))
        discovery = self.discovery(seeds=[a.url], exchange_limit=5)
        self.round(discovery)
        self.assertEqual(len(self.table), 6)

    def test_garbage_peer_list_is_penalised(self):
        """A /peers answer whose lists are not lists costs the peer the malformed penalty."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        a.canned["/peers"] = (200, b'{"peers": "everyone"}')
        discovery = self.discovery(seeds=[a.url])
        self.round(discovery)
        self.assertEqual(self.table.get(a.url).score, 20)

    def test_deeply_nested_answer_is_penalised_and_the_round_goes_on(self):
        """A /peers answer nested 100,000 deep costs that peer the malformed penalty; the others still join."""
        deep = b'{"peers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        a = self.network.add(FakePeer("http://localhost:5001"))
        b = self.network.add(FakePeer("http://localhost:5002"))
        a.canned["/peers"] = (200, deep)
        discovery = self.discovery(seeds=[a.url, b.url])
        self.round(discovery)
        self.assertEqual(self.table.get(a.url).score, 20)
        self.assertEqual(discovery.active_peers(), [a.url, b.url])

    def test_misbehaving_peer_is_banned_until_the_ban_expires(self):
        """Two invalid blocks ban a peer: it leaves, is not probed for an hour, then comes back."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery(seeds=[a.url], recheck_s=10)
        self.round(discovery)
        self.assertFalse(discovery.report_misbehaviour(a.url, BadProofOfWork("no")))
        self.assertTrue(discovery.report_misbehaviour(a.url, "bad-merkle-root"))
        self.assertEqual(self.lost, [a.url])
        self.assertEqual(discovery.active_peers(), [])
        probes = a.probes
        self.clock.advance(BAN_S - 1)
        self.round(discovery)
        self.assertEqual(a.probes, probes)
        self.assertFalse(discovery.remember(a.url))
        self.clock.advance(1)
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [a.url])

    def test_report_failure_drops_an_active_peer(self):
        """report_failure from sync or relay takes the peer out of the active set and calls on_peer_lost."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery(seeds=[a.url])
        self.round(discovery)
        discovery.report_failure(a.url, "timeout fetching blocks")
        self.assertEqual(discovery.active_peers(), [])
        self.assertEqual(self.lost, [a.url])
        self.assertEqual(self.table.next_probe_at(a.url), 2)

    def test_remembered_url_is_probed_next_round(self):
        """remember() takes a URL from POST /peers or the peer header; bad URLs are ignored."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery()
        self.assertTrue(discovery.remember(a.url + "/"))
        self.assertFalse(discovery.remember(a.url))
        self.assertFalse(discovery.remember("javascript:alert(1)"))
        self.assertFalse(discovery.remember(ME))
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [a.url])

    def test_failing_callback_is_logged_and_round_goes_on(self):
        """An on_peer_added that raises is logged; the peer is still added."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        discovery = self.discovery(seeds=[a.url])
        discovery.on_peer_added = lambda url, status: 1 / 0
        self.round(discovery)
        self.assertEqual(discovery.active_peers(), [a.url])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_overlapping_rounds_share_one(self):
        """run_once during a round waits for it instead of probing twice."""
        a = self.network.add(FakePeer("http://localhost:5001"))
        a.stalled.add("/status")
        discovery = self.discovery(seeds=[a.url])
        first, second = discovery.run_once(), discovery.run_once()
        self.assertEqual(a.probes, 1)
        self.clock.advance(2)
        self.network.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(discovery.rounds, 1)
