"""HTTP API throughput, run by hand (docs/benchmarks.md, "HTTP API").

Starts a real node with `twistd -n chaincore --network regtest` on a free
loopback port and a temporary datadir, funds it through its own API (blocks
mined from /mining/template to several keys, then fan-out transactions that
split mature coinbases into many small coins, confirmed in further blocks),
pre-builds one signed transaction per small coin, and then measures, with N
concurrent keep-alive clients for a fixed duration:

- GET /status requests per second;
- POST /add_transaction requests per second, each a valid transaction
  spending a distinct coin (the mempool accepts every one), as JSON and as
  canonical bytes (application/octet-stream);

once per installed signature backend (the node started with CHAINCORE_CRYPTO),
beside that backend's bare verify rate (pre-parsed key) measured in the same
run, and the ratios: POST /add_transaction against GET /status with the same
clients (goal >= 0.7: the HTTP limit, not the signatures), and against the
bare verify rate.  Rates are also given per CPU-second of the
node process (from /proc) and of the verify loop, which stays meaningful when
the machine is shared and the node gets less than a whole core.  The client is a small asyncio loop writing
pre-encoded requests, so it costs far less CPU than the server it measures.

    PYTHONPATH=. python bench/api.py --duration 4 --clients 8 [--backend NAME]
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from chaincore.core import jsonview, keys
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.tx import Transaction, TxIn, TxOut
from machine import cpu_seconds, describe  # bench/machine.py, beside this script
from validation import bare_verify_rate as bare_rate  # bench/validation.py, beside this script

KEYS = [PrivateKey.from_secret(7000 + i) for i in range(8)]
FEE = 1_000
SINK = KEYS[-1]


# -- the node ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(port: int, datadir: str, profile: str | None, backend: str) -> subprocess.Popen:
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    argv = [sys.executable, twistd, "-n", "--pidfile=", "--logfile", os.path.join(datadir, "node.log")]
    if profile:
        argv += ["--profile", profile, "--profiler", "cprofile", "--savestats"]
    argv += ["chaincore", "--port", str(port), "--network", "regtest", "--datadir", datadir,
             "--discover-ports", ""]
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, CHAINCORE_CRYPTO=backend,
               PYTHONPATH=os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen(argv, cwd=datadir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def call(base: str, path: str, body=None, timeout_s: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_for(base: str, proc: subprocess.Popen, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with status {proc.returncode}")
        try:
            return call(base, "/status", timeout_s=1)[1]
        except OSError:
            time.sleep(0.05)  # a script polling a subprocess; no reactor here
    raise SystemExit("the node did not answer /status in time")


def mine_one(base: str, key: PrivateKey) -> dict:
    """One block from the node's template paying key, nonce searched here, posted back."""
    import hashlib

    status, template = call(base, f"/mining/template?address={key.address}")
    assert status == 200, template
    header = bytearray(bytes.fromhex(template["header_hex"]))
    offset, size, target = template["nonce_offset"], template["nonce_size"], int(template["target"], 16)
    nonce = 0
    while True:
        header[offset:offset + size] = nonce.to_bytes(size, "little")
        if int.from_bytes(hashlib.sha256(hashlib.sha256(bytes(header)).digest()).digest(), "big") <= target:
            break
        nonce += 1
    status, body = call(base, "/submit_block", {"block": dict(template["block"], nonce=nonce)})
    assert status == 200 and body["status"] == "accepted", body
    return template


def fund(base: str, coinbases: int, fanout: int) -> list:
    """[(tx_id, index, amount, key)]: coinbases x fanout confirmed small coins, ready to spend."""
    owners = {}
    for height in range(1, coinbases + 101):
        key = KEYS[height % (len(KEYS) - 1)]
        template = mine_one(base, key)
        cb = template["block"]["transactions"][0]
        owners[height] = (bytes.fromhex(cb["tx_id"]), cb["outputs"][0]["amount"], key)
    coins = []
    for height in range(1, coinbases + 1):
        tx_id, amount, key = owners[height]
        share = (amount - FEE * fanout) // fanout
        tx = Transaction(1, (TxIn(tx_id, 0, key.public_key),),
                         tuple(TxOut(share, payload_of(KEYS[n % (len(KEYS) - 1)].public_key))
                               for n in range(fanout)), 0)
        tx = tx.with_signatures([key.sign(tx.sighash)])
        status, body = call(base, "/add_transaction", {"transaction": jsonview.tx_to_json(tx)})
        assert status == 200, body
        coins += [(tx.tx_id, n, share, KEYS[n % (len(KEYS) - 1)]) for n in range(fanout)]
    while call(base, "/status")[1]["mempool_size"]:
        mine_one(base, SINK)
    return coins


def spend_requests(coins, host: str, binary: bool = False) -> list:
    """One pre-encoded POST /add_transaction per coin, each a 1-in 1-out signed transaction (JSON, or its
    canonical bytes as application/octet-stream)."""
    out = []
    for tx_id, index, amount, key in coins:
        tx = Transaction(1, (TxIn(tx_id, index, key.public_key),), (TxOut(amount - FEE, payload_of(SINK.public_key)),), 0)
        tx = tx.with_signatures([key.sign(tx.sighash)])
        if binary:
            body, ctype = tx.raw, b"application/octet-stream"
        else:
            body, ctype = json.dumps({"transaction": jsonview.tx_to_json(tx)}).encode(), b"application/json"
        out.append(b"POST /add_transaction HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (host.encode(), ctype, len(body), body))
    return out


# -- the load ----------------------------------------------------------------------------

async def read_body(reader, head: bytes) -> bytes:
    """The response body after head: by Content-Length, or chunked (Klein streams its answers)."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                return b"".join(parts)
    for line in lower.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":", 1)[1]))
    return b""


async def one_client(port: int, requests, deadline: float, counts: dict) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            try:
                raw = next(requests)
            except StopIteration:
                counts["exhausted"] = True
                return
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            body = await read_body(reader, head)
            counts[status] = counts.get(status, 0) + 1
            if status != 200 and "sample" not in counts:
                counts["sample"] = body[:200]
    finally:
        writer.close()


async def load(port: int, requests, clients: int, duration_s: float) -> tuple:
    counts = {}
    start = time.perf_counter()
    await asyncio.gather(*(one_client(port, requests, start + duration_s, counts) for _ in range(clients)))
    return counts, time.perf_counter() - start




def measured(proc, port, requests, clients, duration_s) -> tuple:
    """(counts, wall rate of 200s, 200s per second of the node's own CPU time)."""
    cpu0 = cpu_seconds(proc.pid)
    counts, elapsed = asyncio.run(load(port, requests, clients, duration_s))
    cpu = cpu_seconds(proc.pid) - cpu0
    ok = counts.get(200, 0)
    return counts, ok / elapsed, ok / cpu if cpu else float("nan")


def repeat(raw: bytes):
    while True:
        yield raw


def bare_verify_rate(backend: str, n: int = 20_000) -> tuple:
    """The backend's bare verify rate on one core (validation.bare_verify_rate): (per wall s, per CPU s)."""
    cpu = time.process_time()
    wall = time.perf_counter()
    bare_rate(backend, n)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def run_backend(backend: str, args) -> dict:
    """Every figure of one backend: a node started with CHAINCORE_CRYPTO=backend, funded, then loaded."""
    datadir = tempfile.mkdtemp(prefix="chaincore-bench-")
    port = free_port()
    base, host = f"http://127.0.0.1:{port}", f"127.0.0.1:{port}"
    proc = start_node(port, datadir, args.profile, backend)
    out = {}
    try:
        wait_for(base, proc)
        t0 = time.perf_counter()
        coins = fund(base, args.coinbases, args.fanout)
        print(f"[{backend}] funded: {len(coins)} coins at height {call(base, '/status')[1]['height']} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        half = len(coins) // 2
        json_spends = spend_requests(coins[:half], host)
        binary_spends = spend_requests(coins[half:], host, binary=True)
        out["bare"] = bare_verify_rate(backend)
        status_raw = b"GET /status HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()
        out["status"] = measured(proc, port, repeat(status_raw), args.clients, args.duration)
        out["json"] = measured(proc, port, iter(json_spends), args.clients, args.duration)
        out["binary"] = measured(proc, port, iter(binary_spends), args.clients, args.duration)
        out["mempool"] = call(base, "/status")[1]["mempool_size"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if not args.profile:
            shutil.rmtree(datadir, ignore_errors=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of load per endpoint")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--coinbases", type=int, default=30, help="mature coinbases split by fan-out")
    parser.add_argument("--fanout", type=int, default=1100, help="outputs of each fan-out transaction")
    parser.add_argument("--backend", action="append", choices=keys.BACKEND_NAMES,
                        help="measure only this backend (repeatable); default every one installed")
    parser.add_argument("--profile", help="run the node under cProfile, writing stats to this file")
    args = parser.parse_args()

    print(f"machine: {describe()}")
    backends = args.backend or keys.available_backends()
    results = {b: run_backend(b, args) for b in backends}
    print()
    for backend, r in results.items():
        (bare, bare_cpu) = r["bare"]
        counts, status_rate, status_cpu = r["status"]
        print(f"[{backend}] bare verify (1 core): {bare:8.0f} /s   ({bare_cpu:.0f} per CPU-second)")
        print(f"[{backend}] GET /status ({args.clients} clients): {status_rate:8.0f} req/s   "
              f"({status_cpu:.0f} per node CPU-second) {_other(counts)}")
        for kind in ("json", "binary"):
            counts_tx, tx_rate, tx_cpu = r[kind]
            print(f"[{backend}] POST /add_transaction, {kind:6}: {tx_rate:8.0f} req/s   "
                  f"({tx_cpu:.0f} per node CPU-second) {_other(counts_tx)}")
            print(f"[{backend}]   vs GET /status: {tx_rate / status_rate:.2f} wall, "
                  f"{tx_cpu / status_cpu:.2f} per node CPU-second (goal >= 0.70); "
                  f"vs bare verify: {tx_rate / bare:.2f} wall, {tx_cpu / bare_cpu:.2f} per CPU-second")
            if counts_tx.get("exhausted"):
                print(f"[{backend}]   note: ran out of pre-built transactions before the duration ended; "
                      "raise --coinbases")
        print(f"[{backend}] mempool at the end: {r['mempool']}")
    if args.profile:
        print(f"node profile: {args.profile}")


def _other(counts: dict) -> str:
    rest = {k: v for k, v in counts.items() if k not in (200, "exhausted", "sample")}
    return f"non-200: {rest} {counts.get('sample', b'').decode(errors='replace')}" if rest else ""


if __name__ == "__main__":
    main()
