"""Announce, then fetch: compact blocks rebuilt from mempools, missing transactions fetched alone, the whole
block when a compact form does not fit; outbound degree, loopback filtering, conditional polls and the idle
cost they leave."""

import json

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import compact as compact_blocks
from chaincore.core.jsonview import tx_to_json
from chaincore.core.params import REGTEST
from chaincore.core.peer_url import is_loopback_url
from chaincore.p2p.client import PeerClient
from chaincore.p2p.peers import PollSchedule, choose_outbound
from tests.support.api import APIClient, funded_chain, funded_node, mature_outpoint
from tests.support.builders import ALICE, BOB, make_block, signed_tx
from tests.support.nodes import settled

from .fakes import FakeNetwork, NodePeer
from .test_sync import SyncTestCase, url

COIN = 100_000_000


def payments(n: int, first_height: int = 1) -> list:
    """n signed transactions, each spending one mature coinbase of the funded chain."""
    return [signed_tx([(mature_outpoint(first_height + i), ALICE)], [(BOB, COIN), (ALICE, 49 * COIN - 10_000)])
            for i in range(n)]


class CompactRelayTests(SyncTestCase):
    def test_synced_mempools_rebuild_the_block_from_its_compact_form(self):
        """With every transaction already relayed, a block reaches the peer as one announcement carrying its
        compact form: no transaction, compact or block is fetched, and the bytes sent are a small part of it."""
        a, b = self.pair()
        txs = payments(10)
        for tx in txs:
            settled(a.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)
        self.assertTrue(all(tx.tx_id in b.node.mempool for tx in txs))
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        before = a.client.bytes_sent(b.url)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual([p for m, p in b.requests if m == "POST"][-1:], ["/announce"])
        self.assertEqual([p for m, p in a.requests if p.startswith(("/compact", "/block"))], [])
        self.assertEqual(b.relay.counts.compact_rebuilt, 1)
        sent = a.client.bytes_sent(b.url) - before
        self.assertLess(sent, 450 + 15 * len(txs) + len(json.dumps(tx_to_json(block.transactions[0]))))

    def test_missing_transaction_alone_is_fetched(self):
        """A peer whose mempool lacks one of the block's transactions (one the sender believes it has: told of
        it, then dropped) asks for that one by index."""
        a, b = self.pair()
        txs = payments(5)
        for tx in txs[:4]:
            settled(a.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)
        a.relay.known.add(b.url, txs[4].tx_id)
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual([body["indexes"] for path, body in a.posted if path == "/block_txs"], [[5]])
        self.assertEqual((b.relay.counts.txs_fetched, b.relay.counts.full_fallbacks), (1, 0))

    def test_header_only_announcement_fetches_the_compact_form(self):
        """A peer announced to without the compact form fetches it (GET /compact/<hash>) and rebuilds."""
        a, b = self.pair()
        a.relay.compact_push, a.relay.origin_push_all = 0, False
        block = make_block(funded_chain()[-1], payments(3), pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual(a.count(f"/compact/{block.hash.hex()}"), 1)
        self.assertEqual(a.count("/block_txs", "POST"), 1)

    def test_short_id_collision_falls_back_to_the_whole_block(self):
        """A compact form in which two transactions share a short id is not guessed at: the whole block is
        fetched from the announcer and accepted."""
        block = make_block(funded_chain()[-1], payments(3), pay_to=BOB)
        a = self.network.add(NodePeer(url(5001), self.clock, funded_chain() + (block,), network=self.network))
        c = self.network.add(NodePeer(url(5003), self.clock, funded_chain(), network=self.network))
        compact = compact_blocks.compact_to_json(block)
        ids = compact["short_ids"]
        compact["short_ids"] = ids[:12] + ids[:12] + ids[24:]  # slot 2 repeats slot 1's id
        parsed = compact_blocks.parse_compact(compact)
        self.assertEqual(c.relay.announced(a.url, block.header, parsed), "fetching")
        self.assertEqual(c.tip(), block.hash)
        self.assertEqual(a.count(f"/block/{block.hash.hex()}"), 1)
        self.assertEqual((c.relay.counts.full_fallbacks, c.relay.counts.compact_rebuilt), (1, 0))

    def test_a_pushed_compact_form_does_not_wait_for_a_fetch_under_way(self):
        """A block announced first by its header alone is being fetched (its compact form asked for) when
        another peer pushes the compact form: the fetch goes on from that at once (the transactions it lacks
        asked of the pusher), and the first announcer's answer, when it comes, asks for nothing more."""
        chain = funded_chain()
        block = make_block(chain[-1], payments(2), pay_to=BOB)   # transactions we do not hold: asked for
        a = self.network.add(NodePeer(url(5001), self.clock, chain + (block,), network=self.network))
        b = self.network.add(NodePeer(url(5002), self.clock, chain + (block,), network=self.network))
        me = self.me(chain, a, b)
        a.held.add(f"/compact/{block.hash.hex()}")
        b.held.add("/block_txs")
        self.assertEqual(me.relay.announced(a.url, block.header), "fetching")
        pushed = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(block), REGTEST.max_block_size)
        self.assertEqual(me.relay.announced(b.url, block.header, pushed), "fetching")
        self.assertEqual(b.count("/block_txs", "POST"), 1)
        self.assertEqual(a.release(), 1)        # the compact form asked of a arrives: nothing follows
        self.network.flush()
        self.assertEqual(a.count("/block_txs", "POST"), 0)
        self.assertNotEqual(me.tip(), block.hash)
        self.assertEqual(b.release(), 1)
        self.network.flush()
        self.assertEqual(me.tip(), block.hash)
        self.assertEqual(me.relay.fetching, {})
        self.assertEqual(me.relay.counts.compact_rebuilt, 1)
        self.assertEqual(me.relay.announced(b.url, block.header, pushed), "known")

    def test_a_pusher_that_fails_after_taking_over_leaves_the_first_announcer_to_ask(self):
        """The peer whose pushed form took the fetch over then fails to serve the missing transactions: the
        block is fetched from the peer that announced it first, not left to the next poll."""
        chain = funded_chain()
        block = make_block(chain[-1], payments(2), pay_to=BOB)
        a = self.network.add(NodePeer(url(5001), self.clock, chain + (block,), network=self.network))
        b = self.network.add(NodePeer(url(5002), self.clock, chain + (block,), network=self.network))
        me = self.me(chain, a, b)
        a.held.add(f"/compact/{block.hash.hex()}")
        b.canned["/block_txs"] = lambda request: (503, {"error": "busy"})
        self.assertEqual(me.relay.announced(a.url, block.header), "fetching")
        pushed = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(block), REGTEST.max_block_size)
        self.assertEqual(me.relay.announced(b.url, block.header, pushed), "fetching")
        self.assertNotEqual(me.tip(), block.hash)
        self.assertEqual(a.release(), 2)  # the first fetch's compact form, and the retry's
        self.network.flush()
        self.assertEqual(me.tip(), block.hash)
        self.assertEqual(a.count("/block_txs", "POST"), 1)
        self.assertEqual(me.relay.fetching, {})

    def test_a_block_that_arrives_while_its_compact_form_is_fetched_is_not_fetched_again(self):
        """The block comes another way (a catch-up) while its compact form is on its way: the compact form,
        when it arrives, asks for nothing (the block's transactions left the mempool with it, so a rebuild
        would ask the peer for every one of them: the block's size again)."""
        chain = funded_chain()
        txs = payments(3)
        block = make_block(chain[-1], txs, pay_to=BOB)
        a = self.network.add(NodePeer(url(5001), self.clock, chain + (block,), network=self.network))
        me = self.me(chain, a)
        for tx in txs:
            settled(me.node.submit_tx(tx))
        a.held.add(f"/compact/{block.hash.hex()}")
        self.assertEqual(me.relay.announced(a.url, block.header), "fetching")
        self.assertEqual(settled(me.node.submit_block(block, source=a.url)).status, "accepted")
        self.assertEqual(len(me.node.mempool), 0)
        self.assertEqual(a.release(), 1)
        self.network.flush()
        self.assertEqual((a.count("/block_txs", "POST"), a.count(f"/block/{block.hash.hex()}")), (0, 0))
        self.assertEqual(me.relay.fetching, {})
        self.assertEqual(me.tip(), block.hash)

    def test_a_sync_round_leaves_a_block_relay_is_fetching_to_relay(self):
        """A peer's /status shows as its tip the block relay is fetching from it: the round does not download
        that block a second time, whole (the peer is asked again next round); relay's fetch brings it."""
        chain = funded_chain()
        block = make_block(chain[-1], payments(2), pay_to=BOB)
        a = self.network.add(NodePeer(url(5001), self.clock, chain + (block,), network=self.network))
        me = self.me(chain, a)
        a.held.add(f"/compact/{block.hash.hex()}")
        self.assertEqual(me.relay.announced(a.url, block.header), "fetching")
        me.sync.poll.retry(a.url)  # its poll is due now
        self.successResultOf(me.sync.sync_round())
        self.assertEqual(a.count("/status"), 1)
        self.assertEqual([p for m, p in a.requests if p.startswith(("/headers", "/blocks", "/block/"))], [])
        self.assertEqual(a.release(), 1)
        self.network.flush()
        self.assertEqual(me.tip(), block.hash)
        self.assertEqual([p for m, p in a.requests if p.startswith(("/headers", "/blocks", "/block/"))], [])

    def test_a_peer_added_again_soon_is_not_asked_for_its_whole_mempool_again(self):
        """A peer that drops and is added again within a minute (a loaded machine's timeouts) costs a status
        poll, not its whole mempool each time; one added again later is asked again."""
        chain = funded_chain()
        a = self.network.add(NodePeer(url(5001), self.clock, chain, network=self.network))
        me = self.me(chain, a)
        network = me.service.peers
        for _ in range(3):
            self.successResultOf(network._peer_added(a.url, {}))
        self.assertEqual(a.count("/transactions"), 1)
        self.clock.advance(61)
        self.successResultOf(network._peer_added(a.url, {}))
        self.assertEqual(a.count("/transactions"), 2)
        for n in range(2000):  # peers coming and going under many URLs: the record stays bounded
            network._mempool_due(url(7000 + n))
        self.assertLessEqual(len(network._mempool_asked), 1024)

    def test_reconstruct_reports_a_mempool_collision(self):
        """Two mempool transactions under one short id make the rebuild report a collision, not a guess."""
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        parsed = compact_blocks.parse_compact(compact_blocks.compact_to_json(block))
        same = lambda key, tx_id: b"\0" * 6  # noqa: E731 -- every id collides
        forged = compact_blocks.CompactBlock(parsed.header, (parsed.slots[0], b"\0" * 6))
        self.assertTrue(compact_blocks.reconstruct(forged, payments(2), same).collision)
        self.assertFalse(compact_blocks.reconstruct(forged, payments(1), same).collision)

    def test_old_peer_gets_the_whole_block(self):
        """A peer that answers 404 to /announce is sent the whole block at /submit_block instead."""
        a, b = self.pair()
        b.canned["/announce"] = lambda request: (404, {"error": "no such endpoint: /announce"})
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.tip(), block.hash)
        self.assertEqual(b.count("/submit_block", "POST"), 1)
        self.assertIn(b.url, a.relay.legacy)
        a.service.peers._peer_lost(b.url)  # it went away; when it comes back it may have been upgraded
        self.assertNotIn(b.url, a.relay.legacy)

    def test_transactions_are_announced_by_id_and_fetched_once(self):
        """Transactions accepted together go out as one announcement of ids, and the peer fetches them once."""
        a, b = self.pair()
        txs = payments(4)
        for tx in txs:
            settled(a.node.submit_tx(tx))
        self.clock.advance(0.05)
        self.assertEqual(b.count("/announce_txs", "POST"), 1)
        self.assertEqual(a.count("/txs", "POST"), 1)
        self.assertTrue(all(tx.tx_id in b.node.mempool for tx in txs))
        self.assertEqual(b.count("/add_transaction", "POST"), 0)


class DegreeAndLoopbackTests(SynchronousTestCase):
    def test_outbound_degree_and_diversity(self):
        """At most `degree` outbound peers, current ones kept, and other subnets chosen before a crowded one."""
        crowded = [f"http://10.0.0.{i}:5000" for i in range(1, 20)]
        others = ["http://10.0.1.1:5000", "http://10.0.2.1:5000", "http://10.0.3.1:5000"]
        chosen = choose_outbound([], crowded + others, 4)
        self.assertEqual(len(chosen), 4)
        self.assertTrue(set(others) <= set(chosen))
        kept = choose_outbound([crowded[5]], crowded + others, 2)
        self.assertIn(crowded[5], kept)
        self.assertEqual(len(choose_outbound([], crowded[:3], 8)), 3)

    def test_peers_answer_hides_loopback_urls_from_other_hosts(self):
        """GET /peers lists loopback peers to a loopback client but never to a client on another host."""
        service = funded_node(advertise_url="http://198.18.0.1:5000")
        service.peers.discovery.table.add("http://localhost:5009", 0)
        service.peers.discovery.table.add("http://198.18.0.3:5000", 0)
        local = APIClient(self, service).get_json("/peers")
        remote = APIClient(self, service, client_address="198.18.0.7").get_json("/peers")
        self.assertIn("http://localhost:5009", local["peers"])
        self.assertEqual(remote["peers"], ["http://198.18.0.3:5000"])
        self.assertFalse([u for u in remote["peers"] + remote["active_peers"] if is_loopback_url(u)])

    def test_loopback_node_does_not_name_itself_to_another_host(self):
        """A node advertising a loopback URL sends no X-ChainCore-Peer header to a peer on another host."""
        network = FakeNetwork()
        from .fakes import FakePeer  # the fake is needed by this test only
        remote, local = network.add(FakePeer("http://198.18.0.2:5000")), network.add(FakePeer("http://localhost:5001"))
        clock = _clock()
        client = PeerClient(network.client(), clock, "http://localhost:5000")
        self.successResultOf(client.status(remote.url))
        self.successResultOf(client.status(local.url))
        self.assertEqual([r[2] for r in remote.requests], [None])
        self.assertEqual([r[2] for r in local.requests], ["http://localhost:5000"])

    def test_node_off_loopback_takes_no_loopback_urls_by_exchange(self):
        """A node on a routable address neither probes its local ports nor keeps loopback URLs a peer offers."""
        network = FakeNetwork()
        from .fakes import FakePeer  # the fake is needed by this test only
        seed = network.add(FakePeer("http://198.18.0.2:5000", "node-2", peers=["http://localhost:5003",
                                                                                "http://198.18.0.4:5000"]))
        network.add(FakePeer("http://198.18.0.4:5000", "node-4"))
        me = NodePeer("http://198.18.0.1:5000", _clock(), network=network, seeds=[seed.url])
        self.assertEqual(me.discovery._port_urls, [])
        self.successResultOf(me.discovery.run_once())
        self.assertEqual(me.discovery.table.known_urls(), ["http://198.18.0.2:5000", "http://198.18.0.4:5000"])


class IdleCostTests(SyncTestCase):
    def test_status_answers_304_to_its_own_etag(self):
        """GET /status with the ETag it gave answers 304 with no body; after a change, 200 and a new tag."""
        service = funded_node()
        client = APIClient(self, service)
        first = client.get("/status")
        etag = first.header("ETag")
        self.assertTrue(etag)
        again = client.get("/status", headers={"If-None-Match": etag})
        self.assertEqual((again.status, again.body), (304, b""))
        settled(service.node.submit_tx(payments(1)[0]))
        changed = client.get("/status", headers={"If-None-Match": etag})
        self.assertEqual(changed.status, 200)
        self.assertNotEqual(changed.header("ETag"), etag)

    def test_idle_peers_cost_a_poll_every_two_minutes_and_no_bodies(self):
        """Two in-sync nodes left idle for ten minutes exchange at most two requests per minute per peer,
        and the answers carry almost no body bytes (304s), where every 5 s a full /status went before."""
        chain = funded_chain()[:11]
        a = self.network.add(NodePeer(url(5001), self.clock, chain, network=self.network, seeds=[url(5002)]))
        b = self.network.add(NodePeer(url(5002), self.clock, chain, network=self.network, seeds=[url(5001)]))
        for node in (a, b):
            node.service.startService()
            self.addCleanup(node.service.stopService)
        self.clock.pump([1.0] * 300)  # warm up: the polls back off
        before = [(n.client.total_traffic().requests, n.client.total_traffic().bytes_received) for n in (a, b)]
        self.clock.pump([1.0] * 600)
        after = [(n.client.total_traffic().requests, n.client.total_traffic().bytes_received) for n in (a, b)]
        for (r0, b0), (r1, b1) in zip(before, after):
            self.assertLessEqual((r1 - r0) / 10, 2.0)
            self.assertLess((b1 - b0) / 10, 200)

    def test_poll_schedule_backs_off_and_announcements_push_it_back(self):
        """Polls that show nothing new back off from 5 s to 120 s; news makes the next poll come after 5 s."""
        schedule = PollSchedule()
        now, gaps = 0.0, []
        for _ in range(8):
            schedule.polled("p", now, changed=False)
            nxt = min(t for t in (now + s / 10 for s in range(1, 2000)) if schedule.due(["p"], t))
            gaps.append(round(nxt - now))
            now = nxt
        self.assertEqual(gaps, [5, 10, 20, 40, 80, 120, 120, 120])
        schedule.polled("p", now, changed=True)
        self.assertFalse(schedule.due(["p"], now + 4.9))
        self.assertTrue(schedule.due(["p"], now + 5))


def _clock():
    from twisted.internet.task import Clock  # one per test, as SyncTestCase has
    return Clock()


class InboundTests(SyncTestCase):
    def test_only_peers_that_chose_us_are_inbound(self):
        """A discovery probe does not make a peer inbound; a poll as an outbound peer does, and then we
        announce to it although it is not among our own outbound peers."""
        chain = funded_chain()[:11]
        a = self.network.add(NodePeer(url(5001), self.clock, chain, network=self.network, seeds=[url(5002)]))
        b = self.network.add(NodePeer(url(5002), self.clock, chain, network=self.network, seeds=[url(5001)]))
        b.discovery.degree = 0  # b chooses nobody: a reaches it only as a's outbound peer
        self.successResultOf(b.discovery.run_once())  # b probes a, and a probes b back (the hint)
        self.assertEqual(b.discovery.active_peers(), [a.url])
        self.assertEqual((b.discovery.outbound_peers(), b.discovery.inbound_peers()), ([], []))
        self.successResultOf(a.discovery.run_once())  # a takes b as outbound and polls it (GET /status?outbound=1)
        self.assertIn(("/status", {"outbound": "1"}), b.queries)
        self.assertEqual(b.discovery.inbound_peers(), [a.url])
        block = make_block(chain[-1], pay_to=BOB)
        settled(b.node.submit_block(block, local=True))
        self.assertEqual(a.tip(), block.hash)
