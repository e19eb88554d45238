"""A node under abuse, run by hand (docs/benchmarks.md, "Under abuse").

Starts a real node (`twistd -n chaincore --network regtest`) on a free port of
127.0.0.1, funds it through its own API (a chain mined from /mining/template,
one coinbase split into thousands of coins of one key), and then, one
scenario at a time, measures an honest client's `GET /status` latency (one
keep-alive connection from 127.0.0.1, a request every 5 ms) beside the same
figure without attack, while attackers on 127.0.0.2 and up (so the honest
client keeps its own connection cap):

- idle:       hold 1,000 idle connections;
- slowloris:  200 clients trickle request headers, one byte a second;
- gets:       8 clients flood the most expensive GETs (/chain, /blocks,
              /utxos and /history of the busy address, /explorer pages);
- tx-flood:   8 clients post distinct invalid transactions (real coins, bad signatures);
- amplify:    2 clients post, again and again, one transaction of thousands of
              inputs that share one signature, the last one bad (the mempool's
              101 kB limit refuses it before any signature is checked);
- amplify-sig: the same with as many inputs as fit in 101 kB, so its signatures
              are checked (once: identical checks are verified once).

Per scenario it prints p50/p99 with and without attack and their ratio, the
node's CPU seconds (its worker processes apart) and its peak RSS, the
attackers' answers by status, and what the scenario promises: slow clients
closed within 15 s, a refused transaction under 1 ms of node CPU after the
first refusal.  The attackers run in a process of their own, so the honest
client's clock is not theirs.

The attackers come from loopback addresses, which the node would meter as its
operator; the node is started with `--loopback-budget 120/20`, the budget of
a stranger, so they are metered as a remote attacker would be (the honest
client asks only /status, which costs no tokens).

    python bench/hostile.py --duration 10
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from chaincore.core import jsonview
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.mempool import MAX_ANCESTOR_BYTES
from chaincore.core.tx import Transaction, TxIn, TxOut

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api import call, free_port, mine_one, wait_for  # noqa: E402  bench/api.py, beside this script
from machine import children_of, cpu_seconds, describe, memory_of  # noqa: E402

MINER = PrivateKey.from_secret(9100)
BUSY = PrivateKey.from_secret(9101)   # owns the fan-out's thousands of coins: the busy address
SINK = PrivateKey.from_secret(9102)
FEE_RATE = 2


def attacker_host(n: int) -> str:
    """The n-th attacker address: 127.0.0.2, 127.0.0.3, ..."""
    return f"127.0.{(n + 2) // 256}.{(n + 2) % 256}"


# -- the node ----------------------------------------------------------------------------

def start_node(port: int, datadir: str, profile: str | None = None) -> subprocess.Popen:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    argv = [sys.executable, twistd, "-n", "--pidfile=", "--logfile", os.path.join(datadir, "node.log")]
    if profile:
        argv += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
    argv += ["chaincore", "--port", str(port), "--network", "regtest", "--datadir", datadir,
            "--discover-ports", "", "--loopback-budget", "120/20"]

    def more_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))

    # the node runs the chaincore beside this script, not whichever one is installed
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(argv, cwd=datadir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=more_files, env=env)


def fund(base: str, blocks: int, fanout: int) -> tuple:
    """Mine `blocks` blocks to MINER, split one mature coinbase into `fanout` coins of BUSY, confirm it;
    ([(tx_id, index, amount)] of BUSY's coins, [(tx_id, amount)] of MINER's spendable coinbases)."""
    coinbases = []
    for _ in range(blocks):
        template = mine_one(base, MINER)
        cb = template["block"]["transactions"][0]
        coinbases.append((bytes.fromhex(cb["tx_id"]), cb["outputs"][0]["amount"]))
    tx_id, amount = coinbases[0]
    share = (amount - 200 * fanout) // fanout
    split = Transaction(1, (TxIn(tx_id, 0, MINER.public_key),),
                        tuple(TxOut(share, payload_of(BUSY.public_key)) for _ in range(fanout)), 0)
    split = split.with_signatures([MINER.sign(split.sighash)])
    status, body = call(base, "/add_transaction", {"transaction": jsonview.tx_to_json(split)})
    assert status == 200, body
    mine_one(base, SINK)
    return [(split.tx_id, n, share) for n in range(fanout)], coinbases[1:blocks - 100]


def post(host: str, body: bytes) -> bytes:
    return (b"POST /add_transaction HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))


def invalid_transactions(coins, host: str, n: int) -> list:
    """n distinct POSTs of transactions spending MINER's real coinbases with a bad signature each."""
    out = []
    for i in range(n):
        tx_id, amount = coins[i % len(coins)]
        tx = Transaction(1, (TxIn(tx_id, 0, MINER.public_key),), (TxOut(amount - 10_000, payload_of(SINK.public_key)),),
                         0)
        sig = bytearray(MINER.sign(tx.sighash))
        sig[10 + (i // len(coins)) % 50] ^= 1 + (i // len(coins)) // 50 % 255
        tx = tx.with_signatures([bytes(sig)])
        out.append(post(host, json.dumps({"transaction": jsonview.tx_to_json(tx)}).encode()))
    return out


def amplifier(coins, host: str, max_bytes: int | None = None) -> tuple:
    """One POST of a transaction spending the coins of BUSY (one signature shared by all inputs, the last
    input's signature bad), and its number of inputs: all the coins, or as many as fit in max_bytes."""
    if max_bytes is not None:
        coins = coins[:max(1, max_bytes // 160)]  # an input takes some 170 bytes: shrink from above
        while True:
            post_body, n = amplifier(coins, host)
            if _tx_size(post_body) <= max_bytes:
                return post_body, n
            coins = coins[:len(coins) * 19 // 20]
    total = sum(amount for _, _, amount in coins)
    tx = Transaction(1, tuple(TxIn(t, i, BUSY.public_key) for t, i, _ in coins),
                     (TxOut(total - total // 10, payload_of(SINK.public_key)),), 0)
    sig = BUSY.sign(tx.sighash)
    bad = bytearray(sig)
    bad[7] ^= 1
    tx = tx.with_signatures([sig] * (len(coins) - 1) + [bytes(bad)])
    return post(host, json.dumps({"transaction": jsonview.tx_to_json(tx)}).encode()), len(coins)


def _tx_size(post_body: bytes) -> int:
    return jsonview.parse_tx(json.loads(post_body.split(b"\r\n\r\n", 1)[1])["transaction"]).size


# -- measuring ---------------------------------------------------------------------------







def probe(port: int, duration_s: float, node_pid: int, interval_s: float = 0.005) -> dict:
    """GET /status on one keep-alive connection from 127.0.0.1 for duration_s: latencies (ms), peak RSS."""
    request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    latencies, failures, peak = [], 0, memory_of(node_pid)["rss"]
    sock = None
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        start = time.perf_counter()
        try:
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b"transfer-encoding: chunked" in head.lower():  # Klein streams: read to the last chunk
                done = lambda: body.endswith(b"0\r\n\r\n")  # noqa: E731
            else:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                done = lambda: len(body) >= length  # noqa: E731
            while not done():
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                body += chunk
            if not head.startswith(b"HTTP/1.1 200"):
                raise ConnectionError(head[:40])
            latencies.append((time.perf_counter() - start) * 1000)
        except (OSError, ConnectionError, IndexError, ValueError):
            failures += 1
            sock.close()
            sock = None
        peak = max(peak, memory_of(node_pid)["rss"])
        time.sleep(interval_s)
    if sock is not None:
        sock.close()
    return {"latencies": latencies, "failures": failures, "peak_rss_mb": peak}


def send_once(port: int, raw: bytes) -> tuple:
    """POST raw on a new connection: (status, code) of the answer; the node may answer (and close)
    from the headers alone, before the body is sent."""
    head, _, body = raw.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n\r\n")
        sock.settimeout(0.5)
        try:
            answer = sock.recv(65536)
        except socket.timeout:
            answer = b""
        sock.settimeout(30)
        if not answer:
            sock.sendall(body)
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith((b"}", b"0")):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    code = answer.split(b'"code":', 1)[1].split(b'"')[1].decode() if b'"code":' in answer else "-"
    return int(answer.split(b" ", 2)[1]), code


def percentile(values, p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))] if values else float("nan")


# -- the attackers (a process of their own, asyncio) --------------------------------------------

async def read_answer(reader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":", 1)[1]))
    return int(head.split(b" ", 2)[1])


async def hold_idle(port, n, stop_at, stats):
    conns = []
    for i in range(n):
        try:
            conns.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(attacker_host(i // 250), 0)))
        except OSError:
            stats["refused"] = stats.get("refused", 0) + 1
    stats["opened"] = len(conns)
    stats["ready_at"] = time.time()
    await asyncio.sleep(max(0, stop_at - time.time()))
    stats["still_open"] = sum(1 for r, _ in conns if not r.at_eof())
    for _, w in conns:
        w.close()


async def slow_headers(port, n, stop_at, stats):
    closed_after = []

    async def one(i):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(attacker_host(i % 8), 0))
        except OSError:
            stats["refused"] = stats.get("refused", 0) + 1
            return
        start = time.time()
        writer.write(b"GET /status HTTP/1.1\r\n")
        answer = b""
        while time.time() < stop_at:
            try:
                answer += await asyncio.wait_for(reader.read(4096), 1.0)
                if reader.at_eof():
                    closed_after.append(time.time() - start)
                    stats[answer[:12].decode(errors="replace")] = stats.get(answer[:12].decode(errors="replace"), 0) + 1
                    break
            except asyncio.TimeoutError:
                pass
            except OSError:
                closed_after.append(time.time() - start)
                break
            try:
                writer.write(b"X")
            except OSError:
                closed_after.append(time.time() - start)
                break
        writer.close()

    stats["ready_at"] = time.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    stats["closed"] = len(closed_after)
    stats["closed_within_s"] = max(closed_after) if closed_after else None


async def flood(port, requests_of, clients, stop_at, stats):
    async def one(i):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(attacker_host(i), 0))
        except OSError:
            stats["refused"] = stats.get("refused", 0) + 1
            return
        requests = requests_of(i)
        while time.time() < stop_at:
            try:
                raw = next(requests)
                head, _, body = raw.partition(b"\r\n\r\n")
                writer.write(head + b"\r\n\r\n")
                if body:
                    writer.write(body)
                status = await read_answer(reader)
                stats[status] = stats.get(status, 0) + 1
                if status == 429:
                    await asyncio.sleep(0.05)  # a flooder that reads Retry-After would wait longer still
                if status == 413:  # answered from the headers and closed: come back on a new connection
                    raise ConnectionResetError
            except (OSError, asyncio.IncompleteReadError):
                stats["reconnects"] = stats.get("reconnects", 0) + 1
                writer.close()
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port,
                                                                   local_addr=(attacker_host(i), 0))
                except OSError:
                    stats["refused"] = stats.get("refused", 0) + 1
                    await asyncio.sleep(0.1)
        writer.close()

    stats["ready_at"] = time.time()
    await asyncio.gather(*(one(i) for i in range(clients)))


def cycle(items):
    while True:
        yield from items


def attack(scenario: str, port: int, stop_at: float, payload, queue) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))
    stats = {}
    if scenario == "idle":
        job = hold_idle(port, 1000, stop_at, stats)
    elif scenario == "slowloris":
        job = slow_headers(port, 200, stop_at, stats)
    elif scenario == "gets":
        job = flood(port, lambda i: cycle(payload[i % len(payload):] + payload[:i % len(payload)]), 8, stop_at,
                    stats)
    elif scenario == "tx-flood":
        job = flood(port, lambda i: cycle(payload[i::8]), 8, stop_at, stats)
    else:  # amplify, amplify-sig
        job = flood(port, lambda i: cycle([payload]), 2, stop_at, stats)
    asyncio.run(job)
    queue.put(stats)


# -- the run -----------------------------------------------------------------------------

def run_scenario(name, port, proc, payload, duration_s, warmup_s):
    """Start the attackers, let them settle, probe /status; (probe result, attack stats, node CPU s, workers' CPU s)."""
    queue = multiprocessing.Queue()
    stop_at = time.time() + warmup_s + max(duration_s, 16 if name == "slowloris" else 0) + 1
    workers0 = {p: cpu_seconds(p) for p, _ in children_of(proc.pid)}
    cpu0 = cpu_seconds(proc.pid)
    attacker = multiprocessing.Process(target=attack, args=(name, port, stop_at, payload, queue))
    attacker.start()
    time.sleep(warmup_s)
    result = probe(port, duration_s, proc.pid)
    if name == "slowloris":  # the attackers go on until their connections are closed (or 16 s)
        time.sleep(max(0.0, stop_at - time.time()))
    stats = queue.get(timeout=duration_s + warmup_s + 60)
    attacker.join()
    cpu = cpu_seconds(proc.pid) - cpu0
    workers = sum(cpu_seconds(p) - workers0.get(p, 0.0) for p, _ in children_of(proc.pid))
    time.sleep(1)  # connections the attackers left are closed before the next scenario
    return result, stats, cpu, workers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of probing per scenario")
    parser.add_argument("--blocks", type=int, default=600, help="blocks mined before the attacks")
    parser.add_argument("--inputs", type=int, default=2000, help="inputs of the amplification transaction")
    parser.add_argument("--profile", help="run the node under cProfile, writing stats to this file")
    parser.add_argument("--scenarios", default="idle,slowloris,gets,tx-flood,amplify,amplify-sig")
    args = parser.parse_args()

    print(f"machine: {describe()}")
    datadir = tempfile.mkdtemp(prefix="chaincore-hostile-")
    port = free_port()
    base, host = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
    proc = start_node(port, datadir, args.profile)
    try:
        wait_for(base, proc)
        t0 = time.perf_counter()
        busy_coins, coinbases = fund(base, args.blocks, args.inputs)
        print(f"funded: height {call(base, '/status')[1]['height']}, {len(busy_coins)} coins of the busy "
              f"address, in {time.perf_counter() - t0:.1f} s")
        gets = [b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()) for path in
                ["/chain", f"/utxos/{BUSY.address}", "/blocks?start=0&limit=500", f"/history/{MINER.address}",
                 "/explorer/blocks", f"/explorer/address/{MINER.address}", "/transactions", "/chain"]]
        invalid = invalid_transactions(coinbases, host, 4000)
        amp, n_inputs = amplifier(busy_coins, host)
        # the mempool takes no transaction over 101 kB (its own ancestor bytes): the biggest that reaches
        # the signature check has some hundreds of inputs
        amp_sig, n_sig = amplifier(busy_coins, host, max_bytes=MAX_ANCESTOR_BYTES)
        payloads = {"idle": None, "slowloris": None, "gets": gets, "tx-flood": invalid, "amplify": amp,
                    "amplify-sig": amp_sig}

        # the first refusal of each amplifier, alone: what it costs before the node remembers it
        for body, n in ((amp, n_inputs), (amp_sig, n_sig)):
            cpu0, workers0 = cpu_seconds(proc.pid), sum(cpu_seconds(p) for p, _ in children_of(proc.pid))
            t0 = time.perf_counter()
            first = send_once(port, body)
            first_wall, first_cpu = time.perf_counter() - t0, cpu_seconds(proc.pid) - cpu0
            workers = sum(cpu_seconds(p) for p, _ in children_of(proc.pid)) - workers0
            print(f"amplifier: {n} inputs, {len(body) // 1024} KiB of JSON, first refusal {first[0]} "
                  f"{first[1]} in {first_wall * 1000:.0f} ms wall, {first_cpu * 1000:.0f} ms node CPU, "
                  f"{workers * 1000:.0f} ms workers' CPU")

        baseline = probe(port, args.duration, proc.pid)
        b50, b99 = percentile(baseline["latencies"], 50), percentile(baseline["latencies"], 99)
        print(f"baseline /status: p50 {b50:.2f} ms  p99 {b99:.2f} ms  ({len(baseline['latencies'])} requests)")
        print()
        print(f"{'scenario':10} {'p50 ms':>7} {'p99 ms':>7} {'p99/base':>8} {'fails':>5} {'node CPU s':>10} "
              f"{'workers s':>9} {'peak RSS MB':>11}  attackers")
        for name in args.scenarios.split(","):
            warmup = {"idle": 4.0, "slowloris": 2.0}.get(name, 1.0)
            result, stats, cpu, workers = run_scenario(name, port, proc, payloads[name], args.duration, warmup)
            lat = result["latencies"]
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            stats.pop("ready_at", None)
            extra = ""
            if name.startswith("amplify"):
                refused = sum(v for k, v in stats.items() if isinstance(k, int) and k != 200)
                refused = refused or stats.get("reconnects", 0)
                extra = f"  -> {cpu / refused * 1000:.2f} ms node CPU per refusal" if refused else ""
            if name == "tx-flood":
                refused = sum(v for k, v in stats.items() if isinstance(k, int))
                extra = f"  -> {cpu / refused * 1000:.2f} ms node CPU per transaction" if refused else ""
            print(f"{name:10} {p50:7.2f} {p99:7.2f} {p99 / b99:8.1f} {result['failures']:5d} {cpu:10.2f} "
                  f"{workers:9.2f} {result['peak_rss_mb']:11.0f}  {stats}{extra}")
        metrics = urlopen_text(base + "/metrics")
        print()
        for line in metrics.splitlines():
            if line.startswith(("chaincore_connections_refused_total", "chaincore_slow_clients_closed_total",
                                "chaincore_rate_limited_total", "chaincore_recent_reject_hits_total",
                                "chaincore_signature_cache_hits_total")):
                print(line)
        print(f"goals: p99 under attack <= 5x baseline ({5 * b99:.1f} ms) and < 50 ms; slow clients closed "
              f"within 15 s; a refused transaction < 1 ms of node CPU after the first refusal")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(datadir, ignore_errors=True)


def urlopen_text(url: str) -> str:
    import urllib.request  # only for the final /metrics read
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


if __name__ == "__main__":
    main()
