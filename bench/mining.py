"""Mining speed, run by hand: python bench/mining.py [--count N] [--repeats R] [--workers 1,2].

Per worker it compares chaincore.core.pow.search_nonce (impossible target, so
every nonce is hashed) with a bare hashlib double SHA-256 loop over the same
120-byte header in the same run; the goal is a ratio of at least 0.8.  Then it
measures the rate of N worker processes fed the miner's nonce ranges, as
chaincore-miner runs them.  Results go to docs/benchmarks.md, "Mining".
"""

import argparse
import concurrent.futures
import hashlib
import os
import platform
import statistics
import time

from chaincore.cli.miner import CHUNK_NONCES, default_mp_context
from chaincore.core.block import NONCE_OFFSET, NONCE_SIZE
from chaincore.core.params import MAIN
from chaincore.core.pow import search_nonce
from machine import cpu_model  # bench/machine.py, beside this script

HEADER = MAIN.genesis.header.raw
IMPOSSIBLE = 0


def bare_loop(count: int) -> float:
    """Seconds for count double SHA-256 hashes of the header, the plainest hashlib loop."""
    sha256, header = hashlib.sha256, HEADER
    started = time.perf_counter()
    for _ in range(count):
        sha256(sha256(header).digest()).digest()
    return time.perf_counter() - started


def search(count: int) -> float:
    """Seconds for search_nonce to try count nonces."""
    started = time.perf_counter()
    assert search_nonce(HEADER, NONCE_OFFSET, NONCE_SIZE, IMPOSSIBLE, 0, count) is None
    return time.perf_counter() - started


def pool_rates(workers: int, seconds_per_worker: float, rate_hint: float, repeats: int) -> list:
    """Hashes per second of `workers` processes searching the miner's ranges, as chaincore-miner does, per run."""
    chunks = max(workers * 2, int(workers * seconds_per_worker * rate_hint / CHUNK_NONCES))
    args = [(HEADER, NONCE_OFFSET, NONCE_SIZE, IMPOSSIBLE, n * CHUNK_NONCES, CHUNK_NONCES) for n in range(chunks)]
    rates = []
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=default_mp_context()) as pool:
        list(pool.map(search_nonce, *zip(*[(HEADER, NONCE_OFFSET, NONCE_SIZE, IMPOSSIBLE, 0, 1000)] * workers)))
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(search_nonce, *zip(*args)))
            rates.append(chunks * CHUNK_NONCES / (time.perf_counter() - started))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="hashes per single-process run")
    parser.add_argument("--repeats", type=int, default=15, help="alternating runs of each single-process loop")
    parser.add_argument("--workers", default=",".join(str(n) for n in range(1, (os.cpu_count() or 1) + 1)),
                        help="comma-separated worker counts for the pool runs")
    parser.add_argument("--pool-seconds", type=float, default=1.5, help="work per worker in each pool run")
    parser.add_argument("--pool-repeats", type=int, default=3, help="pool runs per worker count")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    bare, ours = [], []
    for _ in range(args.repeats):  # alternated, so drift in the machine's speed hits both alike
        bare.append(args.count / bare_loop(args.count))
        ours.append(args.count / search(args.count))
    # Best runs compare speeds (as timeit does: other load only ever slows a run); medians show the noise.
    b, s = max(bare), max(ours)
    print(f"bare hashlib sha256d loop : {b / 1e6:.3f} MH/s best of {args.repeats} x {args.count:,} "
          f"(median {statistics.median(bare) / 1e6:.3f})")
    print(f"pow.search_nonce          : {s / 1e6:.3f} MH/s best of {args.repeats} x {args.count:,} "
          f"(median {statistics.median(ours) / 1e6:.3f})")
    print(f"ratio search/bare         : {s / b:.2f} best, {statistics.median(ours) / statistics.median(bare):.2f} "
          "median (goal >= 0.8)")
    for workers in (int(w) for w in args.workers.split(",")):
        rates = pool_rates(workers, args.pool_seconds, s, args.pool_repeats)
        print(f"{workers} worker process{'es' if workers > 1 else ''}: {max(rates) / 1e6:.3f} MH/s best of "
              f"{len(rates)} (median {statistics.median(rates) / 1e6:.3f}; {max(rates) / s:.2f}x the best "
              f"in-process search; ranges of {CHUNK_NONCES:,} nonces)")


if __name__ == "__main__":
    main()
