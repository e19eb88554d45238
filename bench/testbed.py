"""Network figures on the testbed, run by hand as root: N hosts in namespaces, 40 ms links (docs/benchmarks.md).

Each host runs `twistd chaincore`, seeded with the previous host, and finds
the others by peer exchange.  Host h0 is funded with mature coinbases, then
blocks of signed transactions are mined there in two modes:
  relayed  the transactions go to h0 first and the block follows once every
           mempool holds them (what compact relay would exploit);
  fresh    the block carries transactions no node has seen.
For each block it prints the time until each host accepted it (from the
nodes' JSON log lines, so watching costs the hosts nothing) beside the floor
(hops on the shortest path from h0 in the peer graph x one-way latency), and
the bytes each node received from other hosts while it spread (the switch's
counters, until every tip matched plus SETTLE_S) beside the block's canonical
size, and where those bytes went: per request kind (`POST /announce`, its
answer, `GET /compact/<hash>`, ...), bare TCP acknowledgements and connection
set-up, as the switch read them from the frames.  Last, the bytes the idle
network carries per minute per peer link.

    sudo python bench/testbed.py [--hosts 10] [--delay 40] [--jitter 0] [--loss 0]
                                 [--blocks 3] [--txs 100] [--idle 60] [--idle-warmup 160]
                                 [--stagger 0] [--funding-wait-s 120]
"""

import argparse
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import deque

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chaincore.core.block import Block, Header, merkle_root  # noqa: E402
from chaincore.core.jsonview import block_to_json, parse_block, tx_to_json  # noqa: E402
from chaincore.core.keys import PrivateKey, payload_of  # noqa: E402
from chaincore.core.params import REGTEST  # noqa: E402
from chaincore.core.tx import Transaction, TxIn, TxOut, make_coinbase  # noqa: E402
from chaincore.testbed import Testbed, unavailable_reason  # noqa: E402

KEY = PrivateKey.from_secret(4242)
PAYLOAD = payload_of(KEY.public_key)
FEE = 1000
SETTLE_S = 0.5
FANOUT = 250                      # outputs per funding transaction
FANOUT_FEE = 100_000              # at least 1 per byte of it


def http_json(url: str, body=None, timeout_s: float = 10, tries: int = 30):
    """The JSON answer of url (a POST of body when given); a 429 is tried again after its Retry-After (the
    benchmark is a stranger to the nodes and mines faster than a stranger's request budget allows)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        if e.code == 429 and tries > 1:
            time.sleep(float(e.headers.get("Retry-After") or 1))
            return http_json(url, body, timeout_s, tries - 1)
        raise SystemExit(f"bench: {url} answered {e.code}: {e.read()[:200]!r}")


def try_json(url: str, timeout_s: float = 10):
    """http_json, or None when the node does not answer (a busy node may drop connections)."""
    try:
        return http_json(url, timeout_s=timeout_s)
    except (OSError, ValueError):
        return None


def wait_for(predicate, timeout_s: float, what: str, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
    return value


def signed(spends, outputs) -> Transaction:
    """A transaction spending [(tx_id, index)] of KEY's to [(payload, amount)], signed."""
    tx = Transaction(1, tuple(TxIn(t, i, KEY.public_key, b"") for t, i in spends),
                     tuple(TxOut(a, p) for p, a in outputs), 0)
    return tx.with_signatures([KEY.sign(tx.sighash)] * len(spends))


def solved(block: Block) -> Block:
    nonce = 0
    while not block.header.with_nonce(nonce).has_valid_pow:
        nonce += 1
    return block.with_nonce(nonce)


class Network:
    def __init__(self, bed: Testbed):
        self.bed = bed
        self.origin = bed.hosts[0]

    def tips(self) -> list:
        return [(self.bed.status(h) or {}).get("tip_hash") for h in self.bed.hosts]

    def template(self) -> Block:
        return parse_block(http_json(f"{self.origin.url}/mining/template?address={KEY.address}")["block"])

    def submit(self, block: Block) -> float:
        """POST the block to h0; the wall time just before (log times are wall times too)."""
        t0 = time.time()
        answer = http_json(self.origin.url + "/submit_block", {"block": block_to_json(block)})
        if answer.get("status") != "accepted":
            raise SystemExit(f"bench: h0 did not accept the block: {answer}")
        return t0

    def mine_template(self) -> Block:
        block = solved(self.template())
        self.submit(block)
        return block

    def block_with(self, txs) -> Block:
        """A block on h0's tip holding txs (built here, so no node has seen them)."""
        t = self.template().header
        fees = FEE * len(txs)
        coinbase = make_coinbase(t.height, [(PAYLOAD, REGTEST.block_reward(t.height) + fees)], b"")
        all_txs = (coinbase, *txs)
        header = Header(1, t.height, t.previous_hash, merkle_root([x.tx_id for x in all_txs]), t.timestamp, t.target, 0)
        return solved(Block(header, all_txs))

    def wait_all_at(self, block_hash: str, timeout_s: float = 60) -> None:
        # the times come from the nodes' logs, not from these polls: polled every 20 ms, the benchmark took
        # about half a CPU of the two the nodes were measured on while a block spread
        wait_for(lambda: set(self.tips()) == {block_hash}, timeout_s, f"every host at {block_hash[:16]}", 0.25)

    def peer_graph(self) -> dict:
        urls = {h.url: h.name for h in self.bed.hosts}
        graph = {h.name: set() for h in self.bed.hosts}
        for h in self.bed.hosts:
            answer = wait_for(lambda: try_json(h.url + "/peers"), 60, f"{h.name}'s /peers")
            for url in answer.get("relay_peers", answer["active_peers"]):  # whom blocks go to
                if url in urls:
                    graph[h.name].add(urls[url])
                    graph[urls[url]].add(h.name)
        return graph


def hops_from(graph: dict, start: str) -> dict:
    hops, queue = {start: 0}, deque([start])
    while queue:
        node = queue.popleft()
        for other in graph[node]:
            if other not in hops:
                hops[other] = hops[node] + 1
                queue.append(other)
    return hops


def accept_times(bed: Testbed, block_hash: str) -> dict:
    """host name -> wall time its node logged accepting the block (first line naming it)."""
    short, times = block_hash[:16], {}
    for h in bed.hosts:
        with open(h.log, errors="replace") as f:
            for line in f:
                if short in line and line.startswith("{"):
                    record = json.loads(line)
                    msg = record["msg"]
                    if msg.startswith(("block ", "accepted block", "mined block")) and "side-chain" not in msg \
                            and "rebuilt" not in msg:
                        times[h.name] = record["t"]
                        break
    return times


STAGES = (("announced", "announcement of block "), ("compact fetched", "compact form of block "),
          ("rebuilt", None), ("accepted", None), ("relayed", "announcing block "))


def stage_times(bed: Testbed, block_hash: str) -> dict:
    """host name -> {stage: wall time} from the nodes' JSON log lines (relay's at debug level): the first
    announcement heard, the compact form fetched (when not pushed), the block rebuilt, accepted, announced on."""
    short, out = block_hash[:16], {}
    for h in bed.hosts:
        seen = {}
        with open(h.log, errors="replace") as f:
            for line in f:
                if short not in line or not line.startswith("{"):
                    continue
                record = json.loads(line)
                msg = record["msg"]
                for stage, prefix in STAGES:
                    if prefix and msg.startswith(prefix + short):
                        seen.setdefault(stage, record["t"])
                if msg.startswith(f"block {short}") and "rebuilt" in msg:
                    seen.setdefault("rebuilt", record["t"])
                elif msg.startswith(("block ", "accepted block", "mined block")) and "side-chain" not in msg \
                        and "rebuilt" not in msg:
                    seen.setdefault("accepted", record["t"])
        out[h.name] = seen
    return out


def timeline(stages: list, t0s: list) -> str:
    """Median ms after the submission to h0 at which the other hosts reached each stage, and h0's own."""
    parts = []
    for stage, _ in STAGES:
        own = [s["h0"][stage] - t0 for s, t0 in zip(stages, t0s) if stage in s.get("h0", {})]
        other = [t[stage] - t0 for s, t0 in zip(stages, t0s) for name, t in s.items() if name != "h0" and stage in t]
        if own:
            parts.append(f"h0 {stage} {statistics.median(own) * 1000:.0f}")
        if other:
            parts.append(f"{stage} {statistics.median(other) * 1000:.0f} (n={len(other)})")
    return "per-hop timeline, median ms after the submission: " + ", ".join(parts)


def percentile(values, q: float) -> float:
    """The nearest-rank q-quantile (q=0.5 of two values is the lower one)."""
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def breakdown(rows, receivers: int) -> str:
    """Where the bytes the nodes received went, per kind, as a mean per node per block beside the block's size."""
    total = {}
    for _, _, _, _, kinds in rows:
        for kind, (n, frames) in kinds.items():
            b, f = total.get(kind, (0, 0))
            total[kind] = (b + n, f + frames)
    per = len(rows) * receivers
    size = statistics.mean(b.size for _, b, _, _, _ in rows)
    lines = [f"{'':>10}{'received per node per block':<34}{'B':>10} {'frames':>7} {'of block':>9}"]
    for kind, (n, frames) in sorted(total.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"{'':>10}{kind:<34}{n / per:>10,.0f} {frames / per:>7.1f} {n / per / size:>8.2%}")
    all_bytes = sum(n for n, _ in total.values())
    lines.append(f"{'':>10}{'all':<34}{all_bytes / per:>10,.0f} {sum(f for _, f in total.values()) / per:>7.1f} "
                 f"{all_bytes / per / size:>8.2%}")
    return "\n".join(lines)


def nodes_cpu_s(bed: Testbed) -> float:
    """CPU seconds (user and system) the hosts' processes (nodes and their workers) have used so far."""
    from chaincore.testbed.bed import netns_pids
    total, tick = 0, os.sysconf("SC_CLK_TCK")
    for h in bed.hosts:
        for pid in netns_pids(h.netns):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except (FileNotFoundError, IndexError, ValueError):
                pass
    return total / tick


def rss_mb(bed: Testbed) -> float:
    from chaincore.testbed.bed import netns_pids
    total = 0
    for h in bed.hosts:
        for pid in netns_pids(h.netns):
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            except (FileNotFoundError, StopIteration):
                pass
    return total / 1024


def run(args) -> None:
    workdir = tempfile.mkdtemp(prefix="chaincore-testbed-bench-")
    delay = args.delay
    with Testbed(args.hosts, workdir, delay_ms=delay, jitter_ms=args.jitter, loss=args.loss, seed=1) as bed:
        net = Network(bed)
        started = time.monotonic()
        for i in range(args.hosts):
            bed.start_node(i, peers=[(i - 1) % args.hosts] if args.hosts > 1 else [],
                           twistd_args=["--logger=chaincore.logs.json_lines"], env={"CHAINCORE_LOG_LEVEL": "debug"})
            time.sleep(args.stagger)  # many nodes starting at once on few CPUs answer each other too slowly
        bed.wait_ready(timeout_s=120 + args.hosts * 2)
        print(f"{args.hosts} hosts up in {time.monotonic() - started:.1f} s; nodes' RSS {rss_mb(bed):.0f} MB in all")
        everyone = {h.url for h in bed.hosts}
        def everyone_peers() -> bool:
            for h in bed.hosts:
                answer = try_json(h.url + "/peers")
                if answer is None or not set(answer["active_peers"]) >= everyone - {h.url}:
                    return False
            return True

        wait_for(lambda: everyone_peers() or time.monotonic() - started > args.discovery_s, args.discovery_s + 60,
                 "discovery", 0.5)
        graph = net.peer_graph()
        hops = hops_from(graph, "h0")
        degrees = [len(v) for v in graph.values()]
        print(f"peer graph after {time.monotonic() - started:.1f} s: degree mean {statistics.mean(degrees):.1f} "
              f"min {min(degrees)}, hops from h0 max {max(hops.values())}, unreachable {args.hosts - len(hops)}")

        # funding: mature coinbases, then fan-out transactions into many small coins
        needed = 2 * args.blocks * args.txs * args.inputs
        funders = -(-needed // FANOUT)
        blocks = [net.mine_template() for _ in range(REGTEST.coinbase_maturity + funders)]
        coins = []
        for b in blocks[:funders]:
            cb = b.transactions[0]
            share = (cb.outputs[0].amount - FANOUT_FEE) // FANOUT
            fan = signed([(cb.tx_id, 0)], [(PAYLOAD, share)] * FANOUT)
            http_json(net.origin.url + "/add_transaction", {"transaction": tx_to_json(fan)})
            coins += [(fan.tx_id, i, share) for i in range(FANOUT)]
        tip = net.mine_template()
        net.wait_all_at(tip.hash.hex(), args.funding_wait_s)
        print(f"funded: {len(blocks) + 1} blocks, {len(coins)} coins; every host at height {tip.height}")

        rows, stages = [], {}
        for mode in ("relayed", "fresh") * args.blocks:
            txs = []
            for _ in range(args.txs):
                spent, coins[:args.inputs] = coins[:args.inputs], []
                total = sum(amount for _, _, amount in spent) - FEE
                pays = [total // args.outputs] * (args.outputs - 1)
                txs.append(signed([(t, i) for t, i, _ in spent], [(PAYLOAD, a) for a in pays + [total - sum(pays)]]))
            if mode == "relayed":
                for tx in txs:
                    http_json(net.origin.url + "/add_transaction", {"transaction": tx_to_json(tx)})
                wait_for(lambda: all((bed.status(h) or {}).get("mempool_size") == len(txs) for h in bed.hosts),
                         60 + len(txs) / 10, "every mempool holding the transactions", 0.1)
                block = solved(net.template())
            else:
                block = net.block_with(txs)
            time.sleep(SETTLE_S)
            before, cpu_before = bed.traffic(), nodes_cpu_s(bed)
            t0 = net.submit(block)
            net.wait_all_at(block.hash.hex())
            time.sleep(SETTLE_S)
            spent = bed.traffic() - before
            cpu = nodes_cpu_s(bed) - cpu_before
            times = accept_times(bed, block.hash.hex())
            arrivals = {name: (t - t0) * 1000 for name, t in times.items() if name != "h0"}
            received = [spent.received_from_hosts(h.name) for h in bed.hosts[1:]]
            kinds = spent.received_by_kind([h.name for h in bed.hosts[1:]])
            rows.append((mode, block, arrivals, received, kinds))
            stages.setdefault(mode, []).append((stage_times(bed, block.hash.hex()), t0))
            print(f"{mode:>8} height {block.height} {len(block.transactions) - 1} txs {block.size:>8,} B: "
                  f"all hosts in {max(arrivals.values()):6.0f} ms (floor {max(hops.values()) * delay:.0f}); "
                  f"received per node mean {statistics.mean(received):>9,.0f} B "
                  f"({statistics.mean(received) / block.size:.2f}x size), max {max(received):,}; "
                  f"switch {spent.cpu_s:.2f} s CPU, frames {spent.mean_late_ms:.1f} ms late on average; "
                  f"nodes {cpu:.2f} s CPU in all until {SETTLE_S} s after the last host")

        print()
        floors = [hops[h.name] * delay for h in bed.hosts[1:] if h.name in hops]
        for mode in ("relayed", "fresh"):
            mine = [r for r in rows if r[0] == mode]
            each = [ms for _, _, arrivals, _, _ in mine for ms in arrivals.values()]
            to_all = [max(arrivals.values()) for _, _, arrivals, _, _ in mine]
            ratio = [statistics.mean(received) / block.size for _, block, _, received, _ in mine]
            print(f"{mode:>8}: propagation to each host p50 {percentile(each, .5):.0f} ms p90 {percentile(each, .9):.0f} ms "
                  f"(floor p50 {percentile(floors, .5):.0f} p90 {percentile(floors, .9):.0f} ms); "
                  f"to all hosts p50 {percentile(to_all, .5):.0f} ms p90 {percentile(to_all, .9):.0f} ms "
                  f"(floor {max(floors):.0f} ms)")
            print(f"{'':>8}  bytes received per node per block {statistics.mean(ratio):.2f}x the block's canonical size "
                  f"(blocks of {statistics.mean(b.size for _, b, _, _, _ in mine):,.0f} B)")
            print(breakdown(mine, args.hosts - 1))
            print(f"{'':>10}" + timeline([x for x, _ in stages[mode]], [t for _, t in stages[mode]]))

        time.sleep(args.idle_warmup)  # polls back off from 5 s to their 2-minute pace after the last block
        before = bed.traffic()
        time.sleep(args.idle)
        idle = bed.traffic() - before
        links = idle.link_bytes()
        minutes = idle.time / 60
        per_link = sum(links.values()) / max(1, len(links)) / minutes
        per_peer = statistics.mean(idle.received_from_hosts(h) / max(1, len(graph[h])) / minutes
                                   for h in idle.host_names)
        print(f"idle: {per_link:,.0f} B per minute per peer link (both ways; {len(links)} links, {idle.time:.0f} s); "
              f"each node receives {per_peer:,.0f} B per minute per peer")
        print(f"nodes' RSS at the end {rss_mb(bed):.0f} MB in all")


def main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--delay", type=float, default=40, help="one-way delay per host link, ms")
    parser.add_argument("--jitter", type=float, default=0)
    parser.add_argument("--loss", type=float, default=0)
    parser.add_argument("--blocks", type=int, default=3, help="blocks per mode")
    parser.add_argument("--txs", type=int, default=100, help="signed transactions per block")
    parser.add_argument("--inputs", type=int, default=1, help="signed inputs per transaction")
    parser.add_argument("--outputs", type=int, default=1, help="outputs per transaction")
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle network measured")
    parser.add_argument("--idle-warmup", type=float, default=160,
                        help="seconds of quiet before the idle measurement starts")
    parser.add_argument("--funding-wait-s", type=float, default=120,
                        help="at most this long for every host to reach the funded tip")
    parser.add_argument("--stagger", type=float, default=0, help="seconds between starting one node and the next")
    parser.add_argument("--discovery-s", type=float, default=60, help="at most this long for peers to find each other")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"bench: {reason}")
    signal.signal(signal.SIGTERM, _terminated)
    run(args)


def _terminated(*_):
    """SIGTERM unwinds (so the testbed is removed); a second one, as `timeout` or a process group sends
    it, is ignored, or it would cut that removal short and leave namespaces and nodes behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit("bench: terminated")


if __name__ == "__main__":
    main(sys.argv[1:])
