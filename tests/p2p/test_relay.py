"""Relay between real nodes on a fake network: who receives a new block or transaction, how often, what is
not sent back, orphans that trigger a catch-up, and catch-ups that announce only their final tip."""

from chaincore.core import jsonview
from chaincore.core.tx import OutPoint
from chaincore.p2p.client import PeerClient
from tests.support.api import funded_chain
from tests.support.builders import ALICE, BOB, make_block, signed_tx

from .fakes import NodePeer
from .test_compact_relay import payments
from .test_sync import ME, SyncTestCase, main_chain, url
from tests.support.nodes import settled

COIN = 100_000_000


def submissions(peer: NodePeer) -> list:
    """Hashes of the blocks announced (POST /announce) or posted whole (POST /submit_block) to peer, in order."""
    return [body["block"]["hash"] for path, body in peer.posted if path in ("/announce", "/submit_block")]


class RelayTests(SyncTestCase):
    def test_new_block_goes_to_every_active_peer_but_its_source_once(self):
        """A block from A reaches B and C once each and never A; hearing of it again sends nothing more."""
        chain = main_chain()[:11]
        a, b, c = (self.peer(5001 + i, chain) for i in range(3))
        me = self.me(chain, a, b, c)
        me.relay.push_to.update({b.url, c.url})  # they asked for compact forms (they cannot reach us to fetch)
        block = make_block(chain[-1], pay_to=BOB)
        settled(me.node.submit_block(block, source=a.url))
        self.assertEqual([submissions(p) for p in (a, b, c)], [[], [block.hash.hex()], [block.hash.hex()]])
        self.assertEqual((b.tip(), c.tip()), (block.hash, block.hash))
        me.relay.on_block(block, b.url)
        settled(me.node.submit_block(block, source=c.url))
        self.assertEqual([len(submissions(p)) for p in (a, b, c)], [0, 1, 1])
        mined = make_block(block)
        settled(me.node.submit_block(mined, local=True))
        self.assertEqual([submissions(p)[-1] for p in (a, b, c)], [mined.hash.hex()] * 3)

    def test_side_branch_block_is_not_relayed(self):
        """A block that does not become our tip is stored but not passed on."""
        chain = main_chain()[:11]
        a, b = self.peer(5001, chain), self.peer(5002, chain)
        me = self.me(chain, a, b)
        side = make_block(chain[-2], pay_to=BOB)
        settled(me.node.submit_block(side, source=a.url))
        self.assertEqual(me.tip(), chain[-1].hash)
        self.assertEqual(submissions(b), [])

    def test_line_of_relaying_nodes_never_sends_an_item_back(self):
        """On a line A-B-C of relaying nodes a block mined on A and a transaction made on C reach the far
        end, each node receives each item once, and no item goes back to the node it came from."""
        chain = funded_chain()
        seeds = {5001: [url(5002)], 5002: [url(5001), url(5003)], 5003: [url(5002)]}
        a, b, c = (self.network.add(NodePeer(url(port), self.clock, chain, network=self.network, seeds=seeds[port]))
                   for port in (5001, 5002, 5003))
        for node in (a, b, c):  # no peer exchange, so the line stays a line
            node.canned["/peers"] = lambda request: (200, {"peers": [], "active_peers": []})
        for node in (a, b, c):
            self.successResultOf(node.discovery.run_once())
        self.assertEqual([p.discovery.active_peers() for p in (a, b, c)], [[b.url], [a.url, c.url], [b.url]])
        block = make_block(chain[-1], pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual({p.tip() for p in (a, b, c)}, {block.hash})
        self.assertEqual([len(submissions(p)) for p in (a, b, c)], [0, 1, 1])
        coinbase = chain[1].transactions[0]
        tx = signed_tx([(OutPoint(coinbase.tx_id, 0), ALICE)],
                       [(BOB, COIN), (ALICE, coinbase.output_total - COIN - 10_000)])
        settled(c.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)  # each hop's announcement waits for its batch
        self.assertTrue(all(tx.tx_id in p.node.mempool for p in (a, b, c)))
        self.assertEqual([p.count("/announce_txs", "POST") for p in (a, b, c)], [1, 1, 0])
        self.assertEqual([p.count("/txs", "POST") for p in (a, b, c)], [0, 1, 1])

    def test_orphan_block_triggers_catch_up_with_its_sender(self):
        """A block whose parent we lack is answered 202 and makes the node fetch the missing blocks from the
        peer that sent it."""
        sender = self.peer(5001, main_chain()[:31])
        me = self.me(main_chain()[:11], sender)
        client = PeerClient(self.network.client(), self.clock, sender.url)
        code, answer = self.successResultOf(
            client.post_json(ME, "/submit_block", {"block": jsonview.block_to_json(main_chain()[30])}))
        self.assertEqual((code, answer["status"]), (202, "orphan"))
        self.assertEqual(me.tip(), sender.tip())
        self.assertEqual(sender.count("/headers"), 1)
        self.assertLessEqual(sender.count("/blocks"), 2)  # the first asks for a few blocks until sizes are known

    def test_orphan_from_a_stranger_triggers_nothing(self):
        """An orphan posted by a node that is not an active peer starts no catch-up."""
        peer = self.peer(5001, main_chain()[:31])
        me = self.me(main_chain()[:11], peer)
        client = PeerClient(self.network.client(), self.clock, url(5999))
        code, _ = self.successResultOf(
            client.post_json(ME, "/submit_block", {"block": jsonview.block_to_json(main_chain()[30])}))
        self.assertEqual(code, 202)
        self.assertEqual(peer.requests, [])
        self.assertEqual(me.node.chain.height, 10)

    def test_catch_up_announces_only_its_final_tip(self):
        """Blocks connected in bulk during a catch-up are not relayed one by one: other peers hear of the
        new tip once, and the peer we caught up with hears nothing."""
        ahead = self.peer(5001, main_chain()[:261])
        other = self.peer(5002, main_chain()[:11])
        me = self.me(main_chain()[:11], ahead, other)
        self.round(me)
        self.assertEqual(me.tip(), ahead.tip())
        self.assertEqual(submissions(other), [ahead.tip().hex()])
        self.assertEqual(submissions(ahead), [])


class AnnouncementFailureTests(SyncTestCase):
    def test_a_lost_announcement_leaves_the_peer_active_and_polled_next_round(self):
        """An announcement POST that gets no answer in time (lost on a lossy link) keeps the peer active and
        makes its tip polled at the next round."""
        a, b = self.pair()
        for _ in range(4):  # a polled b a few times and backed off
            self.successResultOf(a.sync.sync_round())
            self.clock.advance(a.sync.poll.max_s)
        self.successResultOf(a.sync.sync_round())
        b.stalled.add("/announce")
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        settled(a.node.submit_block(block, local=True))
        self.assertEqual(b.count("/announce", "POST"), 1)
        self.assertEqual(a.sync.poll.due([b.url], self.clock.seconds()), [])
        self.clock.advance(6)  # past the announcement's 5 s deadline, well before the poll's backoff
        self.assertEqual(a.discovery.active_peers(), [b.url])
        self.assertEqual(a.sync.poll.due([b.url], self.clock.seconds()), [b.url])
        self.assertNotEqual(b.tip(), block.hash)

    def test_a_refused_announcement_drops_the_peer(self):
        """An announcement whose connection is refused (nobody listens there now) drops the peer from the active
        set, as a failed probe does; only a lost or late answer keeps it."""
        a, b = self.pair()
        b.reachable = False
        settled(a.node.submit_block(make_block(funded_chain()[-1], payments(1), pay_to=BOB), local=True))
        self.assertEqual(a.discovery.active_peers(), [])
