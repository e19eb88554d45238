"""Catch-up between real `twistd -n chaincore` processes on loopback: a deep fork reorganises, a lying peer
is penalised while the honest tip is reached, and full blocks sync with bounded memory on both sides.

Chains are mined directly with the builders and loaded into the datadirs before the nodes start (one store
batch), so each test spends its time on the sync itself.  Memory is read from /proc (VmRSS, VmHWM).
"""

import json
import os
import sys

from klein import Klein
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from chaincore.core import jsonview
from chaincore.core.params import REGTEST

from ..support.builders import make_block, regtest_chain
from ..support.fullblocks import full_chain, load_datadir, memory_kb
from ..support.processes import OutputProcess, child_env, node_http_client
from ..support.waiting import free_ports, wait_until

BIN = os.path.dirname(sys.executable)
HUGE_WORK = "f" * 64


def quick_chain(n: int, extra: bytes) -> list:
    """n regtest blocks on genesis a second apart (60 s apart, 2,300 blocks would run ahead of the clock)."""
    blocks = [REGTEST.genesis]
    for _ in range(n):
        blocks.append(make_block(blocks[-1], extra=extra, timestamp=blocks[-1].header.timestamp + 1))
    return blocks


class LyingPeer:
    """A small HTTP server that claims huge chainwork and answers /headers with duplicates, then
    unconnected headers, counting what it was asked."""

    def __init__(self, port: int, honest_chain):
        self.url = f"http://127.0.0.1:{port}"
        self.asked = []
        junk = regtest_chain(6, extra=b"junk")
        headers = [jsonview.header_to_json(b.header) for b in honest_chain[1:4]]
        self.answers = [headers + headers, [jsonview.header_to_json(b.header) for b in junk[3:]]]
        app = Klein()

        @app.route("/", branch=True)
        def answer(request):
            path = request.path.decode()
            self.asked.append(path)
            request.setHeader(b"Content-Type", b"application/json")
            if path == "/status":
                return json.dumps({"node_id": "liar", "version": "0.1.0", "network": "regtest",
                                   "genesis_hash": REGTEST.genesis_hash.hex(), "height": 10 ** 6,
                                   "blockchain_length": 10 ** 6 + 1, "tip_hash": "00" * 32, "chainwork": HUGE_WORK,
                                   "target": "7f" + "ff" * 31, "peer_count": 0, "mempool_size": 0,
                                   "coinbase_maturity": 100, "block_reward": 5_000_000_000, "url": self.url,
                                   "syncing": False}).encode()
            if path == "/headers":
                n = sum(1 for p in self.asked if p == "/headers") - 1
                return json.dumps({"headers": self.answers[n % 2], "more": False}).encode()
            if path in ("/peers", "/transactions"):
                return json.dumps({"peers": [], "active_peers": [], "peer_count": 0, "transactions": []}).encode()
            request.setResponseCode(404)
            return json.dumps({"error": "no"}).encode()

        self.resource = app.resource()


class SyncProcessTests(TestCase):
    timeout = 120

    def setUp(self):
        if not os.access(os.path.join(BIN, "twistd"), os.X_OK):
            raise SkipTest(f"twistd not installed beside {sys.executable}")
        self.http = node_http_client(self)
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)

    def start_node(self, port: int, name: str, blocks=None, peers=()) -> OutputProcess:
        datadir = os.path.join(self.workdir, name)
        if blocks is not None:
            load_datadir(datadir, blocks)
        node = OutputProcess()
        node.url = f"http://127.0.0.1:{port}"
        argv = [os.path.join(BIN, "twistd"), "-n", "--pidfile=", "chaincore", "--port", str(port),
                "--network", "regtest", "--datadir", datadir, "--discover-ports", ""]
        for peer in peers:
            argv += ["--peer", peer]
        node.transport = reactor.spawnProcess(node, argv[0], argv, env=child_env(), path=self.workdir)
        self.addCleanup(self.stop_node, node)
        return node

    async def stop_node(self, node) -> None:
        await node.stop()

    async def status(self, node):
        if node.ended.called:
            self.fail(f"{node.url} exited:\n{node.log()}")
        try:
            response = await self.http.get(node.url + "/status", timeout=5)
            return json.loads(await response.content())
        except Exception:  # refused while it starts
            return None

    async def wait_tip(self, node, tip: bytes, timeout_s: float, *others) -> None:
        async def there():
            status = await self.status(node)
            return status is not None and status["tip_hash"] == tip.hex() and not status["syncing"]
        try:
            await wait_until(there, timeout_s, interval_s=0.2)
        except TimeoutError:
            logs = "\n".join(f"--- {n.url}\n{n.log(6000)}" for n in (node,) + others)
            self.fail(f"{node.url} did not reach {tip.hex()[:16]} in {timeout_s} s: {await self.status(node)}\n{logs}")

    async def test_deep_fork_reorganises(self):
        """A node holding 2,100 blocks joins a peer on a 2,300-block branch forked at genesis and reorganises."""
        ours, theirs = quick_chain(2100, b"ours"), quick_chain(2300, b"theirs")
        port_a, port_b = free_ports(2)
        b = self.start_node(port_b, "b", theirs)
        await wait_until(lambda: self.status(b), 20, interval_s=0.2)
        a = self.start_node(port_a, "a", ours, peers=[b.url])
        await self.wait_tip(a, theirs[-1].hash, 60, b)
        self.assertIn("reorganisation: 2100 blocks off", a.log(10 ** 6))
        self.assertRegex(a.log(10 ** 6), r"catch-up over: height 2100 -> 2300, 2300 blocks downloaded")

    async def test_lying_peer_is_penalised_and_the_honest_tip_reached(self):
        """A fresh node that knows a liar (huge claimed work, duplicate then unconnected headers) and an honest
        node reaches the honest tip, penalises the liar and asks it for no block."""
        honest_chain = regtest_chain(300)
        port_liar, port_honest, port_fresh = free_ports(3)
        liar = LyingPeer(port_liar, honest_chain)
        listening = await TCP4ServerEndpoint(reactor, port_liar, interface="127.0.0.1").listen(Site(liar.resource))
        self.addCleanup(listening.stopListening)
        honest = self.start_node(port_honest, "honest", honest_chain)
        await wait_until(lambda: self.status(honest), 20, interval_s=0.2)
        fresh = self.start_node(port_fresh, "fresh", peers=[liar.url, honest.url])
        await self.wait_tip(fresh, honest_chain[-1].hash, 40, honest)
        dropped = f"peer {liar.url} dropped from catch-up: "
        await wait_until(lambda: all(dropped + code in fresh.log(10 ** 6)  # each round asks it again
                                     for code in ("duplicate-headers", "unconnected-headers")), 30, interval_s=0.2)
        log = fresh.log(10 ** 6)
        self.assertIn(f"peer {liar.url} dropped from catch-up: duplicate-headers", log)
        self.assertIn(f"peer {liar.url} dropped from catch-up: unconnected-headers", log)
        self.assertNotIn("/blocks", liar.asked)

    async def test_full_blocks_sync_with_bounded_memory(self):
        """50 blocks of about 1 MB of signed transactions sync to a fresh node; neither side's peak RSS grows
        by more than 150 MB over what it held once started."""
        chain = full_chain(50)
        self.assertGreater(min(b.size for b in chain[-50:]), 900_000)
        port_server, port_joiner = free_ports(2)
        server = self.start_node(port_server, "server", chain)
        await wait_until(lambda: self.status(server), 30, interval_s=0.2)
        joiner = self.start_node(port_joiner, "joiner")
        await wait_until(lambda: self.status(joiner), 30, interval_s=0.2)
        started = {n: memory_kb(n.transport.pid) for n in (server, joiner)}
        response = await self.http.post(joiner.url + "/peers", data=json.dumps({"url": server.url}).encode(),
                                        headers={b"Content-Type": [b"application/json"]}, timeout=5)
        self.assertEqual(response.code, 200, await response.content())
        await self.wait_tip(joiner, chain[-1].hash, 90, server)
        growth_mb = {n.url: (memory_kb(n.transport.pid)["VmHWM"] - started[n]["VmRSS"]) / 1024
                     for n in (server, joiner)}
        for url, mb in growth_mb.items():
            self.assertLess(mb, 150, f"{url} grew {mb:.0f} MB: {growth_mb}")
