"""Chain state connect and reopen speed, run by hand (docs/benchmarks.md, "Chain state").

Builds coinbase-only regtest blocks in memory, decodes them afresh from their
bytes (so no hash cached while building is reused), then connects them one by
one through ChainState.accept_block into a fresh SqliteStore in a temporary
datadir, exactly as a node syncing a chain does (one atomic store update per
block).  Then it closes the store and times a reopen: a new SqliteStore plus a
new ChainState on it.  The reopen is timed at two chain lengths to show that it
does not grow with the chain.  A MemoryStore run gives the store-free figure.

    /tmp/venv/bin/python bench/chainstate.py --blocks 10000 --small 1000

With --full F it instead times what a joiner's reactor does per transaction
while catching up on F blocks of about 1 MB of signed transactions (the chain
of bench/network.py (d)): decoding the framed /blocks answers, the node's
preverify (checks built and sent; the workers are replaced by an instant
"verified"), and Node.submit_blocks into a fresh SqliteStore, in runs of
about 2 MB as the catch-up hands them over.  --profile adds a cProfile of it.

    PYTHONPATH=. python bench/chainstate.py --full 30 [--profile]
"""

import argparse
import contextlib
import gc
import os
import tempfile
import time

from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.chainstate import ChainState
from chaincore.core.params import REGTEST
from chaincore.core.store import CachedStore, MemoryStore
from chaincore.core.tx import make_coinbase
from machine import describe  # bench/machine.py, beside this script

try:
    from chaincore.storage.sqlite import SqliteStore
except ImportError:
    SqliteStore = None

PAYLOAD = bytes((0x1C,)) + bytes(range(20))
SPACING_S = 60
PARAMS = REGTEST  # past height 4,950 the reward is gone and coinbases pay 0, which is valid


def build(n: int) -> list:
    """Raw bytes of n coinbase-only regtest blocks on the regtest genesis."""
    parent, out = REGTEST.genesis.header, []
    for height in range(1, n + 1):
        coinbase = make_coinbase(height, [(PAYLOAD, PARAMS.block_reward(height))])
        header = Header(1, height, parent.hash, merkle_root([coinbase.tx_id]),
                        parent.timestamp + SPACING_S, REGTEST.pow_limit, 0)
        nonce = 0
        while not header.with_nonce(nonce).has_valid_pow:
            nonce += 1
        header = header.with_nonce(nonce)
        out.append(Block(header, (coinbase,)).raw)
        parent = header
    return out


def connect(store, raw_blocks, batch: int = 0) -> dict:
    """Accept every block into a ChainState over store: wall and CPU seconds, transactions.

    With batch > 0, every `batch` blocks share one store transaction (SqliteStore.batch(),
    meant for initial sync); otherwise each block is its own atomic update, as on relay.
    """
    blocks = [Block.decode(raw) for raw in raw_blocks]
    now = blocks[-1].header.timestamp
    cs = ChainState(store, PARAMS)
    step = batch or 1
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(blocks), step):
        with (store.batch() if batch else contextlib.nullcontext()):
            for block in blocks[i:i + step]:
                if not cs.accept_block(block, now).main_chain:
                    raise SystemExit(f"block {block.height} did not extend the chain")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert cs.height == len(blocks)
    return {"wall": wall, "cpu": cpu, "blocks": len(blocks), "txs": sum(len(b.transactions) for b in blocks)}


def rates(run: dict) -> str:
    return (f"{run['blocks'] / run['wall']:,.0f} blocks/s, {run['txs'] / run['wall']:,.0f} tx/s "
            f"({run['wall']:.2f} s wall; by CPU time {run['blocks'] / run['cpu']:,.0f} blocks/s)")


def disk_bytes(datadir: str) -> int:
    return sum(os.path.getsize(os.path.join(datadir, name)) for name in os.listdir(datadir))


def reopen_s(path: str, height: int, repeats: int = 5) -> float:
    """Best-of time to open the store and a ChainState on it."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
        cs = ChainState(store, PARAMS)
        best = min(best, time.perf_counter() - start)
        assert cs.height == height
        store.close()
    return best


def sqlite_run(raw_blocks, batch: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as datadir:
        path = os.path.join(datadir, "chain.sqlite")
        store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
        run = connect(store, raw_blocks, batch)
        store.close()
        run.update(disk=disk_bytes(datadir), reopen=reopen_s(path, len(raw_blocks)))
        return run


class _Verified:
    """An offloader whose every batch comes back verified at once: the workers' time is not the reactor's."""

    workers = 2

    def run(self, fn, *args):
        from twisted.internet import defer
        return defer.succeed(-1)

    def shutdown(self):
        from twisted.internet import defer
        return defer.succeed(None)


def full_catch_up(n_full: int, profile: bool = False, run_bytes: int = 2_000_000, cached: bool = True,
                  gc_tuned: bool = True) -> None:
    """CPU microseconds per transaction of a joiner's reactor over n_full full blocks, by part."""
    import cProfile
    import pstats
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from twisted.internet.task import Clock
    from chaincore.core import wire
    from chaincore.p2p.sync import CATCH_UP_GC_THRESHOLD
    from chaincore.service.node import Node
    from tests.support.fullblocks import full_chain

    chain = full_chain(n_full, "many")
    runs, run = [], []
    for block in chain[1:]:
        run.append(block.raw)
        if sum(map(len, run)) >= run_bytes:
            runs.append(wire.frame_list(run))
            run = []
    if run:
        runs.append(wire.frame_list(run))
    n_txs = sum(len(b.transactions) for b in chain[1:])
    del chain
    clock = Clock()
    with tempfile.TemporaryDirectory() as datadir:
        store = open_store(os.path.join(datadir, "chain.sqlite"), cached)
        clock.advance(2_000_000_000)
        node = Node(store, PARAMS, clock, advertise_url="http://bench", offloader=_Verified())
        parts = {"decode": 0.0, "preverify": 0.0, "submit": 0.0, "flush": 0.0}
        gc.set_threshold(*(CATCH_UP_GC_THRESHOLD if gc_tuned else (700, 10, 10)))  # as a catch-up sets it
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        for framed in runs:
            t = time.process_time()
            blocks = wire.decode_blocks(framed, 1_000_000)
            parts["decode"] += time.process_time() - t
            t = time.process_time()
            node.preverify_blocks(blocks)
            parts["preverify"] += time.process_time() - t
            t = time.process_time()
            results = []
            node.submit_blocks(blocks, requested=True).addCallback(results.append)
            parts["submit"] += time.process_time() - t
            assert results and results[0][1] is None, results
        t = time.process_time()
        flush = getattr(node, "flush_chain", None)
        if flush is not None:
            flush()
        parts["flush"] += time.process_time() - t
        if profiler:
            profiler.disable()
        store.close()
    total = sum(parts.values())
    print(f"joiner reactor CPU over {n_txs:,} transactions ({n_full} full blocks): {1e6 * total / n_txs:.1f} us a "
          "transaction: " + ", ".join(f"{k} {1e6 * v / n_txs:.1f}" for k, v in parts.items()))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def open_store(path: str, cached: bool = True):
    """The store a node opens in its datadir: a SqliteStore, behind a CachedStore as service/wiring.py puts it."""
    store = SqliteStore(path, REGTEST.name, REGTEST.genesis_hash)
    return CachedStore(store) if cached else store


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000, help="the shorter chain for the reopen comparison")
    parser.add_argument("--batch", type=int, default=100, help="blocks per store transaction in the batched run")
    parser.add_argument("--full", type=int, default=0, help="time a joiner's reactor on this many full blocks instead")
    parser.add_argument("--profile", action="store_true", help="with --full: print a cProfile of it")
    parser.add_argument("--no-cache", action="store_true", help="with --full: the SqliteStore alone, no CachedStore")
    parser.add_argument("--default-gc", action="store_true", help="with --full: Python's GC thresholds, not a catch-up's")
    args = parser.parse_args(argv)

    print(f"machine: {describe()}")
    if args.full:
        full_catch_up(args.full, args.profile, cached=not args.no_cache, gc_tuned=not args.default_gc)
        return
    print("network: regtest")
    start = time.perf_counter()
    raw = build(args.blocks)
    print(f"built {args.blocks} coinbase-only blocks in {time.perf_counter() - start:.1f} s")

    print(f"MemoryStore: {rates(connect(MemoryStore(), raw))}")
    if SqliteStore is None:
        print("SqliteStore: NOT AVAILABLE (chaincore.storage.sqlite missing); only the MemoryStore figure above")
        return
    big = sqlite_run(raw)
    print(f"SqliteStore, one transaction per block: {rates(big)}")
    print(f"SqliteStore, {args.batch} blocks per transaction: {rates(sqlite_run(raw, args.batch))}")
    print(f"on disk: {big['disk'] / 1e6:.2f} MB for {args.blocks} blocks ({big['disk'] / args.blocks:.0f} bytes/block)")
    small = sqlite_run(raw[:args.small])
    print(f"reopen (SqliteStore + ChainState), best of 5: {big['reopen'] * 1e3:.2f} ms at {args.blocks} blocks, "
          f"{small['reopen'] * 1e3:.2f} ms at {args.small} blocks")


if __name__ == "__main__":
    main()
