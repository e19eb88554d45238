"""The whole story with real processes: three twistd nodes, the wallet and miner CLIs, a crash, a split and a heal.

Everything runs as an operator would run it: `twistd -n chaincore` on free
loopback ports, `chaincore-wallet` and `chaincore-miner` as subprocesses (the
scripts beside this interpreter), and the nodes are watched over HTTP with
treq (one connection pool per test, closed in cleanup).  Waiting is always
polling until a condition holds, never sleeping.  Every balance is checked
to the base unit on every node.
"""

import json
import os
import re
import signal
import sys
from urllib.parse import urlsplit

from twisted.internet import error, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from ..support.processes import OutputProcess, child_env, node_http_client
from ..support.waiting import free_ports, wait_until

COIN = 100_000_000
REWARD = 50 * COIN           # regtest: 50 coins, halving every 150 blocks (these tests stay below 150)
MATURITY = 100               # regtest coinbase maturity
BIN = os.path.dirname(sys.executable)
STEP_TIMEOUT_S = 20

class NodeProcess(OutputProcess):
    """One `twistd -n chaincore` child: its output, and `ended`, which fires with the exit reason."""

    def __init__(self, port: int, datadir: str):
        super().__init__()
        self.port, self.datadir = port, datadir
        self.url = f"http://127.0.0.1:{port}"
        self.transport = None


class EndToEndTests(TestCase):
    timeout = 120

    def setUp(self):
        missing = [name for name in ("twistd", "chaincore-wallet", "chaincore-miner")
                   if not os.access(os.path.join(BIN, name), os.X_OK)]
        if missing:
            raise SkipTest(f"{', '.join(missing)} not installed beside {sys.executable} (pip install . first)")
        self.http = node_http_client(self)
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    # processes

    def start_node(self, port: int, datadir: str, discover_ports: list) -> NodeProcess:
        """Spawn `twistd -n chaincore` on port; a cleanup stops it (SIGTERM, then SIGKILL) if still running."""
        node = NodeProcess(port, datadir)
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "chaincore", "--port", str(port),
                "--network", "regtest", "--datadir", datadir,
                "--discover-ports", ",".join(str(p) for p in discover_ports)]
        node.transport = reactor.spawnProcess(node, argv[0], argv, env=child_env(CHAINCORE_WALLET_PASSPHRASE=""), path=self.workdir)
        self.addCleanup(self.stop_node, node, check=False)
        return node

    async def stop_node(self, node: NodeProcess, check: bool = True) -> None:
        """SIGTERM, wait up to 10 s, then SIGKILL; with check, the stop must have been clean."""
        if node.ended.called:
            return
        if not await node.stop():
            self.assertFalse(check, f"{node.url} ignored SIGTERM:\n{node.log()}")
        if check:
            reason = node.ended.result
            self.assertIsInstance(reason, error.ProcessTerminated, node.log())
            self.assertEqual(reason.signal, signal.SIGTERM, node.log())  # twistd re-raises SIGTERM once clean
            self.assertNotIn("Traceback", node.log())

    async def kill_node(self, node: NodeProcess) -> None:
        """SIGKILL: a crash, with no chance to close anything."""
        node.transport.signalProcess("KILL")
        await node.ended

    async def run_cli(self, name: str, *args) -> str:
        """Run a console script to completion; its stdout, or a test failure with its output."""
        out, err, code = await getProcessOutputAndValue(os.path.join(BIN, name), args, env=child_env(CHAINCORE_WALLET_PASSPHRASE=""),
                                                        path=self.workdir)
        text = out.decode(errors="replace")
        self.assertEqual(code, 0, f"{name} {' '.join(args)} failed:\n{text}{err.decode(errors='replace')}")
        return text

    async def new_wallet(self, name: str) -> tuple:
        """A new unencrypted wallet file made by chaincore-wallet, and its address."""
        path = os.path.join(self.workdir, name + ".json")
        await self.run_cli("chaincore-wallet", "create", "--wallet", path)
        return path, (await self.run_cli("chaincore-wallet", "address", "--wallet", path)).strip()

    async def mine(self, node: NodeProcess, address: str, blocks: int) -> None:
        """chaincore-miner with one worker on node until it has had `blocks` blocks accepted."""
        out = await self.run_cli("chaincore-miner", "--node", node.url, "--address", address,
                                 "--workers", "1", "--blocks", str(blocks))
        self.assertIn(f"mined {blocks} block", out)

    async def send(self, wallet: str, node: NodeProcess, to: str, amount: str, fee: str) -> str:
        """chaincore-wallet send through node; the accepted transaction's tx_id."""
        out = await self.run_cli("chaincore-wallet", "send", "--wallet", wallet, "--node", node.url,
                                 "--to", to, "--amount", amount, "--fee", fee)
        self.assertIn("accepted", out)
        return re.search(r"\b[0-9a-f]{64}\b", out).group(0)

    # HTTP

    async def get_json(self, url: str):
        response = await self.http.get(url, timeout=5)
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, (url, body))
        return body

    async def post_json(self, url: str, body: dict):
        response = await self.http.post(url, data=json.dumps(body).encode(), timeout=5,
                                        headers={b"Content-Type": [b"application/json"]})
        return response.code, json.loads(await response.content())

    async def status(self, node: NodeProcess):
        """/status, or None while the node is not answering (a node that exited fails the test)."""
        if node.ended.called:
            self.fail(f"{node.url} exited:\n{node.log()}")
        try:
            return await self.get_json(node.url + "/status")
        except Exception:  # refused or cut while it starts
            return None

    async def wait_for(self, condition, what: str):
        try:
            return await wait_until(condition, STEP_TIMEOUT_S, interval_s=0.1)
        except TimeoutError:
            self.fail(f"timed out waiting for {what}")

    async def in_mempool(self, node: NodeProcess, tx_id: str) -> bool:
        body = await self.get_json(node.url + "/transactions")
        return tx_id in [t["tx_id"] for t in body["transactions"]]

    async def tips(self, nodes) -> list:
        return [(s or {}).get("tip_hash") for s in [await self.status(n) for n in nodes]]

    async def wait_same_tip(self, nodes, height: int, tip: str = None) -> str:
        """Wait until every node is at height on one tip (tip, if given); return that tip."""
        async def agreed():
            statuses = [await self.status(n) for n in nodes]
            if any(s is None for s in statuses):
                return None
            found = {(s["height"], s["tip_hash"]) for s in statuses}
            return found == {(height, tip or statuses[0]["tip_hash"])} and statuses[0]["tip_hash"]
        try:
            return await wait_until(agreed, STEP_TIMEOUT_S, interval_s=0.1)
        except TimeoutError:
            seen = [(n.url, s and (s["height"], s["tip_hash"][:16], s["peer_count"]))
                    for n, s in zip(nodes, [await self.status(n) for n in nodes])]
            logs = "\n".join(f"--- {n.url}\n{n.log()}" for n in nodes)
            self.fail(f"timed out waiting for height {height} on one tip; (url, (height, tip, peers)): {seen}\n{logs}")

    async def wait_active_peers(self, node: NodeProcess, urls) -> None:
        async def linked():
            if await self.status(node) is None:
                return False
            active = (await self.get_json(node.url + "/peers"))["active_peers"]
            return {urlsplit(u).port for u in urls} <= {urlsplit(a).port for a in active}
        await self.wait_for(linked, f"{node.url} to have {urls} as active peers")

    async def assertBalances(self, nodes, expected: dict) -> None:
        """Every node reports exactly the expected confirmed amount (base units) for each address."""
        for node in nodes:
            for address, amount in expected.items():
                body = await self.get_json(f"{node.url}/balance/{address}")
                self.assertEqual(body["confirmed"], amount, f"{address} on {node.url}")

    # the story

    async def test_payment_crash_split_and_heal(self):
        """Three nodes mine, confirm a payment, survive a SIGKILL, and after a split converge on the longer
        branch with exact balances everywhere; the losing branch's payment goes back to the mempool."""
        p1, p2, p3, p3_alone = free_ports(4)
        ports = [p1, p2, p3]
        datadirs = [os.path.join(self.workdir, f"node{i}") for i in (1, 2, 3)]
        n1, n2, n3 = (self.start_node(p, d, ports) for p, d in zip(ports, datadirs))
        for node in (n1, n2, n3):
            await self.wait_for(lambda node=node: self.status(node), f"{node.url} to answer")
        for node, others in ((n1, (n2, n3)), (n2, (n1, n3)), (n3, (n1, n2))):
            await self.wait_active_peers(node, [o.url for o in others])

        wallet_a, alice = await self.new_wallet("a")
        wallet_b, bob = await self.new_wallet("b")
        _, miner = await self.new_wallet("m")

        # 101 blocks to A: the first coinbase matures, and every node follows
        await self.mine(n1, alice, MATURITY + 1)
        await self.wait_same_tip([n1, n2, n3], MATURITY + 1)
        await self.assertBalances([n1, n2, n3], {alice: (MATURITY + 1) * REWARD, bob: 0})

        # A pays B through node 2; node 3 mines it, paying the block to M
        amount, fee = 1050 * COIN // 100, COIN // 1000          # 10.5 and 0.001 coins
        paid = await self.send(wallet_a, n2, bob, "10.5", "0.001")
        await self.wait_for(lambda: self.in_mempool(n3, paid), "the payment to reach node 3")
        await self.mine(n3, miner, 1)
        shared_tip = await self.wait_same_tip([n1, n2, n3], MATURITY + 2)
        settled = {alice: (MATURITY + 1) * REWARD - amount - fee, bob: amount, miner: REWARD + fee}
        await self.assertBalances([n1, n2, n3], settled)
        tx = await self.get_json(f"{n1.url}/tx/{paid}")
        self.assertEqual(tx["confirmations"], 1)

        # a crash: SIGKILL node 2, restart it on its datadir, same tip
        await self.kill_node(n2)
        n2 = self.start_node(p2, datadirs[1], ports)
        await self.wait_same_tip([n2], MATURITY + 2, shared_tip)
        await self.assertBalances([n2], settled)

        # the split: node 3 stops; nodes 1-2 mine 3 blocks, the first with a second payment A -> B
        await self.stop_node(n3)
        os.remove(os.path.join(datadirs[2], "peers.json"))   # restarted alone: no remembered peers
        lost = await self.send(wallet_a, n1, bob, "1", "0.001")
        await self.mine(n1, miner, 3)
        short_tip = await self.wait_same_tip([n1, n2], MATURITY + 5)
        await self.assertBalances([n1, n2], {alice: settled[alice] - COIN - fee, bob: amount + COIN,
                                             miner: settled[miner] + 3 * REWARD + fee})

        # node 3 comes back alone on another port (nodes 1-2 still probe its old one) and mines 5 blocks to B
        n3 = self.start_node(p3_alone, datadirs[2], [])
        await self.wait_same_tip([n3], MATURITY + 2, shared_tip)
        await self.mine(n3, bob, 5)
        long_tip = await self.wait_same_tip([n3], MATURITY + 7)
        self.assertEqual(await self.tips([n1, n2]), [short_tip, short_tip])  # still apart
        self.assertEqual((await self.get_json(n3.url + "/peers"))["peers"], [])

        # the heal, from loopback: nodes 1 and 2 are told about node 3, and everyone takes the longer branch
        for node in (n1, n2):
            code, body = await self.post_json(node.url + "/peers", {"url": f"http://localhost:{p3_alone}"})
            self.assertEqual(code, 200, body)
        await self.wait_same_tip([n1, n2, n3], MATURITY + 7, long_tip)
        await self.assertBalances([n1, n2, n3], {alice: settled[alice], bob: amount + 5 * REWARD,
                                                 miner: settled[miner]})
        # the payment of the losing branch is still valid: it is back in the mempool, unconfirmed
        await self.wait_for(lambda: self.in_mempool(n1, lost), "the lost payment to return to node 1's mempool")
        balance = await self.get_json(f"{n1.url}/balance/{bob}")
        self.assertEqual((balance["confirmed"], balance["unconfirmed"]), (amount + 5 * REWARD, COIN))
        out = await self.run_cli("chaincore-wallet", "balance", "--wallet", wallet_b, "--node", n3.url)
        self.assertRegex(out, r"confirmed\s+260\.50000000")

        for node in (n1, n2, n3):
            await self.stop_node(node)
