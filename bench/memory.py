"""Memory of an idle node and of its worker processes, run by hand (docs/benchmarks.md, "Memory").

Builds regtest chains of coinbase-only blocks straight into datadirs (a
SqliteStore under a ChainState, many blocks per store transaction, no node
running), then starts a real node on each with `twistd -n chaincore --network
regtest`, waits until it answers /status at the expected height, lets it idle,
and reads its current and peak resident memory (VmRSS, VmHWM) from /proc.  On
the longer chains one transaction spending a mature coinbase is posted, which
makes the node start its signature worker (`python -m
chaincore.service.workerproc`, fed through pipes); each child process is read
the same way.  Beside them, in the same run, a bare `python -c "import
twisted.internet.reactor"`: the floor every Twisted process pays.

    PYTHONPATH=. python bench/memory.py --heights 0,10000,50000 [--keep DIR]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from chaincore.core import jsonview
from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.chainstate import ChainState
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.params import REGTEST
from chaincore.core.tx import Transaction, TxIn, TxOut, make_coinbase
from chaincore.storage.sqlite import SqliteStore
from api import call, free_port  # bench/api.py, beside this script
from machine import children_of, describe, memory_of  # bench/machine.py

STORE_FILE = "chain.sqlite"  # as the node names it in its datadir
MINER = PrivateKey.from_secret(4242)
SPACING_S = 1  # keeps 50,000 blocks within a day of genesis
BATCH = 1000
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- chains ---------------------------------------------------------------------------------

def blocks_after(parent: Header, count: int):
    """count coinbase-only regtest blocks after parent, each paying its reward to MINER."""
    payload = payload_of(MINER.public_key)
    for _ in range(count):
        height = parent.height + 1
        coinbase = make_coinbase(height, [(payload, REGTEST.block_reward(height))])
        header = Header(1, height, parent.hash, merkle_root([coinbase.tx_id]), parent.timestamp + SPACING_S,
                        REGTEST.pow_limit, 0)
        nonce = 0
        while not header.with_nonce(nonce).has_valid_pow:
            nonce += 1
        parent = header.with_nonce(nonce)
        yield Block(parent, (coinbase,))


def build_datadirs(root: str, heights: list) -> dict:
    """{height: datadir} holding regtest chains of those heights; reuses datadirs already built under root."""
    out, wanted = {}, sorted(set(heights))
    work = os.path.join(root, "building")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    store = SqliteStore(os.path.join(work, STORE_FILE), REGTEST.name, REGTEST.genesis_hash)
    chain = ChainState(store, REGTEST)
    try:
        for height in wanted:
            datadir = os.path.join(root, f"height-{height}")
            if os.path.exists(os.path.join(datadir, STORE_FILE)):
                out[height] = datadir
                continue
            started = time.perf_counter()
            todo = height - chain.height
            blocks = blocks_after(chain.block(chain.tip.hash).header, todo) if todo > 0 else iter(())
            while chain.height < height:
                with store.batch():
                    for _, block in zip(range(BATCH), blocks):
                        chain.accept_block(block, block.header.timestamp)
            store.close()
            shutil.copytree(work, datadir)
            print(f"  built height {height} in {time.perf_counter() - started:.0f} s", flush=True)
            store = SqliteStore(os.path.join(work, STORE_FILE), REGTEST.name, REGTEST.genesis_hash)
            chain = ChainState(store, REGTEST)
            out[height] = datadir
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


# -- processes ------------------------------------------------------------------------------





def bare_reactor(idle_s: float) -> dict:
    """Memory of `python -c "import twisted.internet.reactor"`, held open while it is read."""
    code = "import sys, twisted.internet.reactor; print('ready', flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdout.readline()
        time.sleep(idle_s)
        return memory_of(proc.pid)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)






def wait_for_height(base: str, proc: subprocess.Popen, height: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the node exited with status {proc.returncode}")
        try:
            if call(base, "/status", timeout_s=2)[1]["height"] == height:
                return
        except OSError:
            pass
        time.sleep(0.1)  # a script polling a subprocess; no reactor here
    raise SystemExit(f"the node did not answer /status at height {height} in time")


def spend_first_coinbase(base: str) -> None:
    """Post a transaction spending the height-1 coinbase, so the node verifies it in its workers."""
    coinbase = make_coinbase(1, [(payload_of(MINER.public_key), REGTEST.block_reward(1))])
    tx = Transaction(1, (TxIn(coinbase.tx_id, 0, MINER.public_key),),
                     (TxOut(REGTEST.block_reward(1) - 10_000, payload_of(MINER.public_key)),), 0)
    tx = tx.with_signatures([MINER.sign(tx.sighash)])
    status, body = call(base, "/add_transaction", {"transaction": jsonview.tx_to_json(tx)})
    if status != 200:
        raise SystemExit(f"the node refused the transaction: {body}")


def measure_node(datadir: str, height: int, idle_s: float, workers: bool) -> list:
    """[(what, memory)] for an idle node on datadir and, when asked, its worker processes."""
    port = free_port()
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")])))
    argv = [sys.executable, twistd, "-n", "--pidfile=", "--logfile", os.path.join(datadir, "node.log"),
            "chaincore", "--port", str(port), "--network", "regtest", "--datadir", datadir, "--discover-ports", ""]
    proc = subprocess.Popen(argv, cwd=datadir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_height(base, proc, height)
        time.sleep(idle_s)
        rows = [(f"node, idle at height {height:,}", memory_of(proc.pid))]
        if workers:
            spend_first_coinbase(base)
            time.sleep(idle_s)
            rows.append(("node, after one transaction", memory_of(proc.pid)))
            # workers are children of the node (spawn) or of its forkserver: walk the whole tree
            tree = [(pid, cmdline, "") for pid, cmdline in children_of(proc.pid)]
            tree += [(child, line, "  ") for pid, cmdline, _ in list(tree) if "forkserver" in cmdline
                     for child, line in children_of(pid)]
            for pid, cmdline, indent in tree:
                kind = "worker" if "spawn_main" in cmdline or indent else "helper"
                if "chaincore.service.workerproc" in cmdline:
                    kind = "signature worker"
                elif "resource_tracker" in cmdline:
                    kind = "resource tracker"
                elif "forkserver" in cmdline and not indent:
                    kind = "forkserver"
                rows.append((f"  {indent}its {kind} process {pid}", memory_of(pid)))
        return rows
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heights", default="0,10000,50000", help="chain heights to measure, comma-separated")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds the node idles before it is read")
    parser.add_argument("--keep", metavar="DIR", help="build the datadirs here and reuse them in later runs")
    args = parser.parse_args()
    heights = [int(h) for h in args.heights.split(",") if h.strip()]

    print(f"machine: {describe()}")
    root = args.keep or tempfile.mkdtemp(prefix="chaincore-memory-")
    os.makedirs(root, exist_ok=True)
    try:
        print(f"building datadirs in {root} ...", flush=True)
        datadirs = build_datadirs(root, heights)
        bare = bare_reactor(args.idle)
        rows = [('python -c "import twisted.internet.reactor"', bare)]
        for height in heights:
            # the workers only start for a transaction that passes every cheap rule: a mature coin is needed
            rows += measure_node(datadirs[height], height, args.idle, workers=height > REGTEST.coinbase_maturity)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(f"{'process':48}{'RSS MB':>9}{'peak MB':>9}{'PSS MB':>9}{'RSS - bare':>12}")
    for what, mem in rows:
        versus = "" if what.startswith(" ") else f"{mem['rss'] - bare['rss']:+12.1f}"  # a child is not the node
        print(f"{what:48}{mem['rss']:9.1f}{mem['peak']:9.1f}{mem['pss']:9.1f}{versus}")
    print("goals: node <= bare + 15 MB idle, flat from 10,000 to 50,000 blocks; worker <= 25 MB")


if __name__ == "__main__":
    main()
