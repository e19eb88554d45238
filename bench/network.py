"""Network figures, run by hand: real nodes in this process on loopback ports (docs/benchmarks.md, "Network").

(a) Propagation: N nodes (8 by default) linked only as a ring plus chords
    (`--peer` both ways, `--discover-ports ""`, no peer exchange, so the links
    stay the topology's); blocks are mined on varying nodes (template, solve,
    accept_block as `--mine` does) and the time until every node's tip is the
    new block is recorded, from each node's block listeners.
(b) Join sync: a fresh node started against a peer holding B coinbase-only
    blocks; the time until its start-up sync is over, and blocks per second.
(c) In-sync round: the bytes one sync round costs per peer when all agree,
    PeerClient's body counters plus the HTTP heads measured on a raw socket.
(d) Join sync of full blocks: two `twistd -n chaincore` processes; the server's
    datadir holds F blocks of about 1 MB of signed transactions (about 4,500
    signatures each), a fresh joiner is given it as a peer; the signatures per
    second of the whole catch-up beside the bare libsecp256k1 verify rate of
    this run on all cores (one process per core), the peak RSS (VmHWM) of
    both processes over what each held once started, and the CPU time the
    joiner's node process and its worker processes spent on the catch-up.

(e) Join sync of binary blocks, in process: a fresh node joining a peer that
    holds blocks of signed one-input transactions (each spending a coin of a
    distinct key); signatures per second beside the bare verify rate of the
    backend in the same run, and the bytes the joiner received beside the
    blocks' canonical bytes (binary transfer; goal <= 1.05x) and beside what
    the same blocks weigh as JSON.

    PYTHONPATH=. python bench/network.py [--nodes 8] [--blocks 30] [--join-blocks 5000] [--full-blocks 50] \
        [--binary-blocks 20 --txs 1000] [--backend NAME] [--only-full]
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, task, threads

from chaincore.core import jsonview, keys
from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.params import REGTEST
from chaincore.core.tx import Transaction, TxIn, TxOut, make_coinbase
from chaincore.p2p.client import PEER_HEADER
from chaincore.service.wiring import make_node_service
from chaincore.service.tap import Options
from machine import cpu_model  # bench/machine.py, beside this script
from validation import bare_verify_rate  # bench/validation.py, beside this script

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: tests.support
from tests.support.fullblocks import full_chain, load_datadir, memory_kb  # noqa: E402
from tests.support.processes import OutputProcess, child_env  # noqa: E402

MINER_KEY = PrivateKey.from_secret(4242)
ADDRESS = MINER_KEY.address


def free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def topology(n: int) -> set:
    """Links of a ring of n nodes plus chords across it (i to i + n/2 for every other i)."""
    links = {frozenset((i, (i + 1) % n)) for i in range(n)}
    if n >= 6:
        links |= {frozenset((i, i + n // 2)) for i in range(0, n // 2, 2)}
    return links


def solve(header: Header) -> Header:
    nonce = 0
    while not header.with_nonce(nonce).has_valid_pow:
        nonce += 1
    return header.with_nonce(nonce)


def coinbase_chain(n: int, payload: bytes) -> list:
    """n coinbase-only regtest blocks on genesis, one second apart (so none is in the future)."""
    blocks, parent = [], REGTEST.genesis.header
    for height in range(1, n + 1):
        coinbase = make_coinbase(height, [(payload, REGTEST.block_reward(height))], b"")
        header = Header(1, height, parent.hash, merkle_root([coinbase.tx_id]), parent.timestamp + 1,
                        REGTEST.pow_limit, 0)
        parent = solve(header)
        blocks.append(Block(parent, (coinbase,)))
    return blocks


def signed_chain(n_blocks: int, txs_per_block: int, fan_out: int = 1000, seed: int = 3) -> list:
    """Blocks on genesis: coinbases to maturity, one block of fan-out transactions paying fan_out coins
    each to distinct keys, then n_blocks blocks of txs_per_block signed 1-in 1-out transactions."""
    rng = random.Random(seed)
    funder = payload_of(MINER_KEY.public_key)
    n_fans = -(-n_blocks * txs_per_block // fan_out)
    blocks = coinbase_chain(n_fans + REGTEST.coinbase_maturity, funder)
    coins, fans = [], []
    for height in range(1, n_fans + 1):
        reward = REGTEST.block_reward(height)
        owners = [PrivateKey.from_secret(rng.randrange(1, keys.ORDER)) for _ in range(fan_out)]
        share = (reward - 100_000) // fan_out
        coinbase_id = blocks[height - 1].transactions[0].tx_id
        tx = Transaction(1, (TxIn(coinbase_id, 0, MINER_KEY.public_key),),
                         tuple(TxOut(share, payload_of(k.public_key)) for k in owners), 0)
        tx = tx.with_signatures([MINER_KEY.sign(tx.sighash)])
        fans.append(tx)
        coins += [(tx.tx_id, i, share, k) for i, k in enumerate(owners)]
    blocks.append(_block(blocks[-1], fans, sum(REGTEST.block_reward(h) for h in range(1, n_fans + 1))
                         - sum(t.output_total for t in fans)))
    fee = 1_000
    for b in range(n_blocks):
        txs = []
        for tx_id, index, amount, key in coins[b * txs_per_block:(b + 1) * txs_per_block]:
            tx = Transaction(1, (TxIn(tx_id, index, key.public_key),), (TxOut(amount - fee, funder),), 0)
            txs.append(tx.with_signatures([key.sign(tx.sighash)]))
        blocks.append(_block(blocks[-1], txs, fee * len(txs)))
    return blocks


def _block(parent: Block, txs: list, fees: int) -> Block:
    height = parent.height + 1
    coinbase = make_coinbase(height, [(payload_of(MINER_KEY.public_key), REGTEST.block_reward(height) + fees)], b"")
    all_txs = (coinbase,) + tuple(txs)
    header = Header(1, height, parent.hash, merkle_root([t.tx_id for t in all_txs]), parent.header.timestamp + 1,
                    REGTEST.pow_limit, 0)
    return Block(solve(header), all_txs)


class Bench:
    def __init__(self, reactor):
        self.reactor = reactor
        self.services = []
        self.datadirs = []

    def start(self, port: int, peers=()):
        datadir = tempfile.mkdtemp(prefix="chaincore-bench-")
        self.datadirs.append(datadir)
        args = ["--port", str(port), "--network", "regtest", "--datadir", datadir, "--discover-ports", ""]
        for url in peers:
            args += ["--peer", url]
        options = Options()
        options.parseOptions(args)
        service = make_node_service(options, self.reactor)
        service.peers.discovery._exchange_limit = 0  # no peer exchange: the links stay the topology's
        service.startService()
        self.services.append(service)
        return service

    @defer.inlineCallbacks
    def stop(self):
        for service in self.services:
            if service.running:
                yield service.stopService()
        for datadir in self.datadirs:
            shutil.rmtree(datadir, True)

    @defer.inlineCallbacks
    def wait_until(self, predicate, timeout_s: float, what: str):
        deadline = time.perf_counter() + timeout_s
        while not predicate():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
            yield task.deferLater(self.reactor, 0.005, lambda: None)

    # -- (a) ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def propagation(self, n: int, n_blocks: int):
        ports = free_ports(n)
        links = topology(n)
        urls = [f"http://localhost:{p}" for p in ports]
        neighbours = {i: sorted(j for link in links if i in link for j in link if j != i) for i in range(n)}
        nodes = [self.start(ports[i], [urls[j] for j in neighbours[i]]) for i in range(n)]
        yield defer.gatherResults([s.peers.startup_done for s in nodes])
        yield self.wait_until(lambda: all(len(s.peers.discovery.active_peers()) == len(neighbours[i])
                                          for i, s in enumerate(nodes)), 30, "the topology's links")
        arrived = {}

        def listener_for(i):
            def on_block(block, source):
                if nodes[i].node.chain.tip.hash == block.hash:
                    arrived.setdefault(block.hash, {}).setdefault(i, time.perf_counter())
            return on_block

        for i, s in enumerate(nodes):
            s.node.block_listeners.append(listener_for(i))
        times = []
        for k in range(n_blocks + 1):
            miner = nodes[(k * 3) % n].node
            template = miner.block_template(ADDRESS)
            block = template.with_nonce(solve(template.header).nonce)
            started = time.perf_counter()
            yield miner.submit_block(block, local=True)
            yield self.wait_until(lambda: len(arrived.get(block.hash, ())) == n, 10, "the block everywhere")
            if k:  # the first block also warms every connection up
                times.append(max(arrived[block.hash].values()) - started)
            yield task.deferLater(self.reactor, 0.02, lambda: None)
        diameter = _diameter(n, links)
        print(f"(a) propagation, {n} nodes, {len(links)} links (ring + chords, diameter {diameter} hops), "
              f"{n_blocks} blocks mined on varying nodes:")
        print(f"    time until every tip is the new block: p50 {1000 * statistics.median(times):.1f} ms, "
              f"p90 {1000 * _quantile(times, 0.9):.1f} ms, max {1000 * max(times):.1f} ms "
              f"(goal p50 < 100 ms)")
        return nodes

    # -- (c) ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def in_sync_round(self, nodes):
        peers = nodes[0].peers
        urls = peers.discovery.active_peers()
        before = {u: peers.client.traffic(u) for u in urls}
        best = yield peers.sync.sync_round()
        assert best is None, "the nodes were not in step"
        body = []
        for u in urls:
            after = peers.client.traffic(u)
            body.append((after.requests - before[u].requests, after.bytes_sent - before[u].bytes_sent,
                         after.bytes_received - before[u].bytes_received))
        requests = {r for r, _, _ in body}
        sent = max(s for _, s, _ in body)
        received = max(r for _, _, r in body)
        port = int(urls[0].rsplit(":", 1)[1])
        wire_out, wire_in = yield threads.deferToThread(_raw_status, port, nodes[0].node.advertise_url)
        print(f"(c) one in-sync round, per peer ({len(urls)} peers): {sorted(requests)} request(s); "
              f"bodies {sent} B out, {received} B in; on the wire (heads included) {wire_out} B out + "
              f"{wire_in} B in = {wire_out + wire_in} B (goal < 2 KB)")

    # -- (b) ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def join_sync(self, n_blocks: int):
        built = time.perf_counter()
        blocks = coinbase_chain(n_blocks, payload_of(MINER_KEY.public_key))
        built = time.perf_counter() - built
        holder_port, joiner_port = free_ports(2)
        holder = self.start(holder_port)
        yield holder.peers.startup_done
        yield holder.node.submit_blocks(blocks)
        assert holder.node.chain.height == n_blocks
        started = time.perf_counter()
        joiner = self.start(joiner_port, [holder.node.advertise_url])
        yield joiner.peers.startup_done
        elapsed = time.perf_counter() - started
        assert joiner.node.chain.tip.hash == holder.node.chain.tip.hash, "the joiner did not catch up"
        print(f"(b) join sync of {n_blocks} coinbase-only blocks (built in {built:.1f} s): {elapsed:.2f} s "
              f"from start to the end of start-up sync, {n_blocks / elapsed:.0f} blocks/s (goal < 10 s)")


    # -- (d) ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def full_join_sync(self, n_blocks: int):
        from treq import get, post  # the bench's own HTTP client, only here
        built = time.perf_counter()
        blocks = full_chain(n_blocks, "many")
        built = time.perf_counter() - built
        signatures = sum(len(tx.inputs) for b in blocks[102:] for tx in b.transactions[1:])
        megabytes = sum(b.size for b in blocks[102:]) / 1e6
        workdir = tempfile.mkdtemp(prefix="chaincore-bench-full-")
        procs = []
        try:
            load_datadir(os.path.join(workdir, "server"), blocks)
            ports = free_ports(2)
            for port, name in zip(ports, ("server", "joiner")):
                proc = OutputProcess()
                argv = [os.path.join(os.path.dirname(sys.executable), "twistd"), "-n", "--pidfile=", "chaincore",
                        "--port", str(port), "--network", "regtest", "--datadir", os.path.join(workdir, name),
                        "--discover-ports", ""]
                proc.transport = self.reactor.spawnProcess(proc, argv[0], argv, env=child_env(), path=workdir)
                procs.append(proc)
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            statuses = [None, None]


            @defer.inlineCallbacks
            def status(i):
                try:
                    response = yield get(urls[i] + "/status", timeout=5)
                    statuses[i] = yield response.json()
                except Exception:  # still starting
                    statuses[i] = None
                return statuses[i]

            for i in (0, 1):
                while (yield status(i)) is None:
                    yield task.deferLater(self.reactor, 0.2, lambda: None)
            started = [memory_kb(p.transport.pid) for p in procs]
            cpu_before = _cpu_seconds(procs[1].transport.pid)
            t0 = time.perf_counter()
            yield post(urls[1] + "/peers", data=json.dumps({"url": urls[0]}).encode(),
                       headers={b"Content-Type": [b"application/json"]}, timeout=5)
            while True:
                s = yield status(1)
                if s is not None and s["tip_hash"] == blocks[-1].hash.hex():
                    break
                if time.perf_counter() - t0 > 600:
                    raise RuntimeError("the joiner did not catch up in 600 s:\n" + procs[1].log())
                yield task.deferLater(self.reactor, 0.1, lambda: None)
            elapsed = time.perf_counter() - t0
            peaks = [memory_kb(p.transport.pid) for p in procs]
            cpu_after = _cpu_seconds(procs[1].transport.pid)
        finally:
            for p in procs:
                if not p.ended.called:
                    p.transport.signalProcess("TERM")
            for p in procs:
                yield p.ended
            shutil.rmtree(workdir, ignore_errors=True)
        cores = os.cpu_count()
        with multiprocessing.get_context("spawn").Pool(cores) as pool:
            bare = sum(pool.starmap(bare_verify_rate, [(keys.backend_name(), 20_000)] * cores))
        rate = signatures / elapsed
        growth = [(peak["VmHWM"] - start["VmRSS"]) / 1024 for peak, start in zip(peaks, started)]
        print(f"(d) join sync of {n_blocks} full blocks ({megabytes:.1f} MB, {signatures:,} signatures, built in "
              f"{built:.0f} s): {elapsed:.1f} s, {rate:,.0f} signatures/s; bare verify on {cores} cores in this "
              f"run {bare:,.0f}/s: {rate / bare:.2f} of it (goal >= 0.8); peak RSS over started: server "
              f"+{growth[0]:.0f} MB (peak {peaks[0]['VmHWM'] / 1024:.0f} MB), joiner +{growth[1]:.0f} MB "
              f"(peak {peaks[1]['VmHWM'] / 1024:.0f} MB) (goal < 100 MB)")
        node_s, workers_s = (after - before for after, before in zip(cpu_after, cpu_before))
        print(f"    joiner CPU during the catch-up: node process {node_s:.1f} s ({1e6 * node_s / signatures:.0f} us "
              f"a signature; {node_s / elapsed:.0%} of the wall time), its worker processes {workers_s:.1f} s "
              f"({1e6 * workers_s / signatures:.0f} us a signature); bare verify {1e6 * cores / bare:.0f} us a "
              f"signature")

    # -- (e) ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def join_binary(self, n_blocks: int, txs_per_block: int):
        built = time.perf_counter()
        blocks = signed_chain(n_blocks, txs_per_block)
        built = time.perf_counter() - built
        signatures = sum(len(tx.inputs) for b in blocks for tx in b.transactions[1:])
        holder_port, joiner_port = free_ports(2)
        holder = self.start(holder_port)
        yield holder.peers.startup_done
        for i in range(0, len(blocks), 100):
            yield holder.node.submit_blocks(blocks[i:i + 100])
        assert holder.node.chain.height == len(blocks), "the holder did not take the chain"
        bare = bare_verify_rate(keys.backend_name(), 4000)
        started = time.perf_counter()
        joiner = self.start(joiner_port, [holder.node.advertise_url])
        yield joiner.peers.startup_done
        elapsed = time.perf_counter() - started
        assert joiner.node.chain.tip.hash == holder.node.chain.tip.hash, "the joiner did not catch up"
        received = joiner.peers.client.traffic(holder.node.advertise_url).bytes_received
        canonical = sum(len(b.raw) for b in blocks)
        as_json = sum(len(json.dumps({"blocks": [jsonview.block_to_json(b) for b in blocks[i:i + 100]]},
                                     separators=(",", ":"))) for i in range(0, len(blocks), 100))
        rate = signatures / elapsed
        print(f"(e) join sync of {len(blocks)} blocks holding {signatures:,} signatures (built in {built:.1f} s), "
              f"backend {keys.backend_name()}:")
        print(f"    {elapsed:.2f} s, {rate:,.0f} signatures/s; bare verify {bare:,.0f}/s on 1 core: "
              f"{rate / bare:.2f}x one core, {rate / (2 * bare):.2f} of the 2-core limit (goal >= 0.8)")
        print(f"    bytes received from the peer (bodies) {received:,} for {canonical:,} canonical block bytes: "
              f"{received / canonical:.3f}x (goal <= 1.05); the same blocks as JSON: {as_json:,} B "
              f"({as_json / canonical:.2f}x)")


def _cpu_seconds(pid: int) -> tuple:
    """(CPU seconds of process pid, CPU seconds of its live descendants: the forkserver and the workers)."""
    def stat(p):
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # ppid, utime+stime

    children, own = {}, 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid, seconds = stat(int(entry))
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append((int(entry), seconds))
            if int(entry) == pid:
                own = seconds
    descendants, frontier = 0.0, [pid]
    while frontier:
        for child, seconds in children.get(frontier.pop(), []):
            descendants += seconds
            frontier.append(child)
    return own, descendants


def _raw_status(port: int, advertise_url: str) -> tuple:
    """(bytes sent, bytes received) of one keep-alive GET /status with PeerClient's headers."""
    request = (f"GET /status HTTP/1.1\r\nHost: localhost:{port}\r\n"
               f"{PEER_HEADER.decode()}: {advertise_url}\r\nAccept: application/json\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            received += s.recv(65536)
        head, _, body = received.partition(b"\r\n\r\n")
        lengths = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")]
        # Klein answers after render returns, so twisted.web sends a chunked body without a length
        while (len(body) < lengths[0]) if lengths else not body.endswith(b"0\r\n\r\n"):
            body += s.recv(65536)
    return len(request), len(head) + 4 + len(body)


def _diameter(n: int, links) -> int:
    best = 0
    for start in range(n):
        seen, frontier, depth = {start}, {start}, 0
        while len(seen) < n:
            frontier = {j for i in frontier for link in links if i in link for j in link} - seen
            seen |= frontier
            depth += 1
        best = max(best, depth)
    return best


def _quantile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(reactor, argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--join-blocks", type=int, default=5000)
    parser.add_argument("--full-blocks", type=int, default=50)
    parser.add_argument("--only-full", action="store_true", help="run (d) and (e) alone")
    parser.add_argument("--binary-blocks", type=int, default=20, help="blocks of signed transactions for (e)")
    parser.add_argument("--txs", type=int, default=1000, help="transactions per block for (e)")
    parser.add_argument("--backend", choices=keys.BACKEND_NAMES, help="measure this backend only (in this process)")
    args = parser.parse_args(argv)
    keys.use_backend(args.backend)
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}; signature backend {keys.backend_name()}", flush=True)
    bench = Bench(reactor)

    @defer.inlineCallbacks
    def run():
        try:
            if not args.only_full:
                nodes = yield bench.propagation(args.nodes, args.blocks)
                yield bench.in_sync_round(nodes)
                for service in nodes:
                    yield service.stopService()
                yield bench.join_sync(args.join_blocks)
            if args.full_blocks:
                yield bench.full_join_sync(args.full_blocks)
            if args.binary_blocks:
                yield bench.join_binary(args.binary_blocks, args.txs)
        finally:
            yield bench.stop()

    return run()


def each_backend(argv) -> None:
    """Run this script once per installed backend, CHAINCORE_CRYPTO set for the nodes and their workers."""
    for backend in keys.available_backends():
        print(f"=== {backend} ===", flush=True)
        env = dict(os.environ, CHAINCORE_CRYPTO=backend)
        subprocess.run([sys.executable, __file__, "--backend", backend] + argv, env=env, check=True)


if __name__ == "__main__":
    if "--backend" in sys.argv:
        task.react(main)
    else:
        each_backend(sys.argv[1:])
