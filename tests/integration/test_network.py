"""Several real nodes on loopback in one reactor: discovery, relay, sync, restarts, reorganisations."""

from twisted.trial.unittest import TestCase

from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from tests.support.builders import ALICE, BOB, CAROL, signed_tx
from tests.support.network import start_node, start_nodes
from tests.support.waiting import free_ports, wait_until

COIN = 100_000_000


def same_tip(nodes) -> bool:
    return len({n.tip() for n in nodes}) == 1


class MeshTests(TestCase):
    timeout = 60

    async def test_four_nodes_find_each_other_by_port_probing(self):
        """Four nodes started on the probed ports all become active peers of each other."""
        nodes = await start_nodes(self, 4)
        await wait_until(lambda: all(len(n.active_peers()) == 3 for n in nodes), 15, what="a full mesh")
        for n in nodes:
            self.assertNotIn(n.url, n.active_peers())

    async def test_block_and_transaction_reach_every_node(self):
        """A block mined on one of four nodes becomes every tip; a transaction reaches every mempool."""
        nodes = await start_nodes(self, 4)
        await wait_until(lambda: all(len(n.active_peers()) == 3 for n in nodes), 15, what="a full mesh")
        first = await nodes[0].mine_one(ALICE.address)
        await wait_until(lambda: all(n.tip() == first.hash for n in nodes), 10, what="the block everywhere")
        for _ in range(REGTEST.coinbase_maturity):
            await nodes[1].mine_one(BOB.address)
        await wait_until(lambda: same_tip(nodes) and nodes[0].height() == 101, 20, what="101 blocks everywhere")
        tx = signed_tx([(OutPoint(first.transactions[0].tx_id, 0), ALICE)], [(CAROL, 10 * COIN),
                                                                             (ALICE, 40 * COIN - 10_000)])
        await nodes[2].node.submit_tx(tx)
        await wait_until(lambda: all(tx.tx_id in n.node.mempool for n in nodes), 10, what="the tx everywhere")
        block = await nodes[3].mine_one(BOB.address)
        self.assertIn(tx.tx_id, [t.tx_id for t in block.transactions])
        await wait_until(lambda: all(n.tip() == block.hash and len(n.node.mempool) == 0 for n in nodes), 10,
                         what="the confirming block everywhere")

    async def test_late_node_syncs_a_long_chain(self):
        """A node started after 300 blocks were mined catches up with them."""
        (a,) = await start_nodes(self, 1, discover=False)
        for _ in range(300):
            await a.mine_one(ALICE.address)
        (port,) = free_ports(1)
        late = await start_node(self, port, peers=[a.url])
        self.assertFalse(late.node.syncing)
        await wait_until(lambda: late.tip() == a.tip(), 20, what="the late node to catch up")
        self.assertEqual(late.height(), 300)

    async def test_restarted_node_reconverges(self):
        """A node stopped and restarted on its datadir keeps its chain and catches up with what it missed."""
        a, b = await start_nodes(self, 2)
        await wait_until(lambda: len(a.active_peers()) == 1 and len(b.active_peers()) == 1, 15, what="peers")
        for _ in range(5):
            await a.mine_one(ALICE.address)
        await wait_until(lambda: same_tip([a, b]), 10, what="b to follow")
        await b.stop()
        for _ in range(5):
            await a.mine_one(ALICE.address)
        b2 = await start_node(self, b.port, datadir=b.datadir, peers=[a.url])
        self.assertGreaterEqual(b2.height(), 5)
        await wait_until(lambda: b2.tip() == a.tip(), 15, what="the restarted node to reconverge")
        self.assertEqual(b2.height(), 10)

    async def test_split_groups_converge_on_the_heavier_branch(self):
        """Two groups that mined apart converge on the heavier branch when joined; the loser's txs come back."""
        a, b = await start_nodes(self, 2, discover=False)
        shared = [await a.mine_one(ALICE.address) for _ in range(REGTEST.coinbase_maturity + 1)]
        b.peers.add(a.url)  # b starts empty: it gets the shared history by joining a
        await wait_until(lambda: b.tip() == a.tip(), 20, what="b to get the shared history")
        # the split: each forgets the other (neither probes ports, so neither finds the other again)
        for n, other in ((a, b), (b, a)):
            n.peers.discovery.table.forget(other.url)
        tx = signed_tx([(OutPoint(shared[0].transactions[0].tx_id, 0), ALICE)],
                       [(CAROL, 5 * COIN), (ALICE, 45 * COIN - 10_000)])
        await a.node.submit_tx(tx)
        a_branch = await a.mine_one(ALICE.address)
        self.assertIn(tx.tx_id, [t.tx_id for t in a_branch.transactions])
        for _ in range(3):
            await b.mine_one(BOB.address)
        self.assertNotEqual(a.tip(), b.tip())
        b.peers.add(a.url)
        a.peers.add(b.url)
        await wait_until(lambda: same_tip([a, b]) and a.height() == REGTEST.coinbase_maturity + 4, 20,
                         what="convergence on the heavier branch")
        self.assertEqual(a.tip(), b.tip())
        await wait_until(lambda: tx.tx_id in a.node.mempool, 5, what="the losing branch's tx back in the mempool")
        await wait_until(lambda: tx.tx_id in b.node.mempool, 10, what="the tx relayed to b")

    async def test_peer_of_another_network_is_refused(self):
        """A main-network node on a probed port never becomes a peer of a regtest node."""
        ports = free_ports(2)
        spec = ",".join(map(str, ports))
        reg = await start_node(self, ports[0], discover_ports=spec)
        main = await start_node(self, ports[1], discover_ports=spec, network="main")
        await wait_until(lambda: reg.peers.discovery.rounds >= 3 and main.peers.discovery.rounds >= 3, 15,
                         what="a few discovery rounds")
        self.assertEqual(reg.active_peers(), [])
        self.assertEqual(main.active_peers(), [])
