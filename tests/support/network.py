"""Real nodes on loopback ports inside the trial reactor, for integration tests."""

import shutil
import tempfile

from twisted.internet import defer, reactor

from chaincore.service.tap import Options
from chaincore.service.wiring import make_node_service
from tests.support.builders import solve
from tests.support.waiting import free_ports




class RunningNode:
    """One node service running in this process, with handles on its parts."""

    def __init__(self, service, port: int, datadir: str):
        self.service = service
        self.port = port
        self.datadir = datadir
        self.url = f"http://localhost:{port}"

    @property
    def node(self):
        return self.service.node

    @property
    def peers(self):
        return self.service.peers

    def tip(self) -> bytes:
        return self.node.chain.tip.hash

    def height(self) -> int:
        return self.node.chain.height

    def active_peers(self) -> list:
        return self.peers.discovery.active_peers()

    async def mine_one(self, address: str):
        """Build a template, solve it and hand it to the node (which relays it); the block, once the node took
        it (a block it passes on to peers before checking it is taken a reactor turn or two later)."""
        block = self.node.block_template(address)
        solved = block.with_nonce(solve(block.header).nonce)
        await self.node.submit_block(solved, local=True)
        return solved

    def stop(self) -> defer.Deferred:
        """Stop the node's service (a no-op if stopped already)."""
        if self.service.running:
            return defer.maybeDeferred(self.service.stopService)
        return defer.succeed(None)


async def start_node(test, port: int, *, network: str = "regtest", discover_ports=None, peers=(),
                     datadir: str = None) -> RunningNode:
    """Start a node on port; registers a cleanup that stops it."""
    if datadir is None:
        datadir = tempfile.mkdtemp(prefix="chaincore-node-")
        test.addCleanup(shutil.rmtree, datadir, True)
    args = ["--port", str(port), "--network", network, "--datadir", datadir,
            "--discover-ports", discover_ports if discover_ports is not None else ""]
    for p in peers:
        args += ["--peer", p]
    options = Options()
    options.parseOptions(args)
    service = make_node_service(options, reactor)
    running = RunningNode(service, port, datadir)
    service.startService()
    test.addCleanup(running.stop)
    await service.peers.startup_done
    return running


async def start_nodes(test, n: int, *, discover: bool = True, network: str = "regtest") -> list:
    """n nodes on fresh ports that find each other by probing those ports."""
    ports = free_ports(n)
    spec = ",".join(str(p) for p in ports) if discover else ""
    return [await start_node(test, p, discover_ports=spec, network=network) for p in ports]
