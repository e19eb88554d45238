"""Mining against real nodes: the bundled miner on a live regtest node, and --mine keeping the API responsive."""

import os
import statistics
import sys
import time

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from chaincore.service.wiring import make_node_service
from chaincore.service.tap import Options
from tests.support.builders import ALICE, BOB
from tests.support.network import RunningNode, start_node
from tests.support.processes import node_http_client
from tests.support.waiting import free_ports, wait_until


class MinerAgainstNodeTests(TestCase):
    timeout = 60

    async def test_miner_finds_blocks_on_a_real_node(self):
        """chaincore-miner --blocks 3 against a live regtest node adds three blocks paying its address."""
        (port,) = free_ports(1)
        node = await start_node(self, port)
        script = os.path.join(os.path.dirname(sys.executable), "chaincore-miner")
        out, err, code = await getProcessOutputAndValue(
            script, ["--node", node.url, "--address", BOB.address, "--blocks", "3", "--workers", "1"],
            env=os.environ)
        self.assertEqual(code, 0, err.decode())
        self.assertIn(b"mined 3 blocks", out)
        self.assertEqual(node.height(), 3)
        self.assertEqual(node.node.balance(BOB.address)["confirmed"], 3 * 50 * 100_000_000)


class MineOptionTests(TestCase):
    timeout = 60

    async def test_status_stays_fast_while_mining(self):
        """With --mine the node mines blocks in a worker process and still answers /status promptly."""
        (port,) = free_ports(1)
        options = Options()
        options.parseOptions(["--port", str(port), "--network", "regtest", "--datadir", self.mktemp(),
                              "--discover-ports", "", "--mine", ALICE.address])
        service = make_node_service(options, reactor)
        running = RunningNode(service, port, options["datadir"])
        service.startService()
        self.addCleanup(running.stop)
        await service.peers.startup_done
        http = node_http_client(self)
        await wait_until(lambda: running.height() >= 2, 30, what="two mined blocks")
        latencies = []
        for _ in range(30):
            started = time.monotonic()
            response = await http.get(running.url + "/status")
            body = await response.json()
            latencies.append(time.monotonic() - started)
            self.assertEqual(response.code, 200)
            self.assertEqual(body["network"], "regtest")
        self.assertLess(statistics.median(latencies), 0.1)
        self.assertLess(max(latencies), 1.0)
        self.assertEqual(running.node.balance(ALICE.address)["confirmed"] // (50 * 100_000_000),
                         running.height())
