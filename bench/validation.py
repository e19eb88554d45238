"""Signature-bound block validation throughput, run by hand (docs/benchmarks.md, "Validation").

Builds regtest blocks full of signed one-input transactions, each spending a
coin of a distinct key (so the public-key cache never helps), then validates
them with the consensus core exactly as a node does: check_block_sanity, then
connect_block against an in-memory coin dict.  The blocks are decoded afresh
from their bytes before timing, so no hash cached while building them is
reused.  Beside it, the bare pycryptodome verify rate in the same run, and a
mode that hands the signatures to a process pool through connect_block's
`verify` parameter.

    /tmp/venv/bin/python bench/validation.py --blocks 4 --txs 1000
"""

import argparse
import concurrent.futures
import os
import platform
import random
import time

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from Crypto.Signature import DSS

from chaincore.core import keys
from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.params import REGTEST
from chaincore.core.rules import check_block_sanity, connect_block, verify_batch
from chaincore.core.tx import Coin, OutPoint, Transaction, TxIn, TxOut, make_coinbase
from machine import cpu_model  # bench/machine.py, beside this script

MIN_BATCH = 250
FEE = 1_000
FUND = 100_000


def build(n_blocks: int, txs_per_block: int, seed: int = 1):
    """(funding coins, [raw block bytes]): n_blocks regtest blocks of signed 1-input transactions."""
    rng = random.Random(seed)
    coins = {}
    raw_blocks = []
    parent = REGTEST.genesis.header
    sink = payload_of(PrivateKey.from_secret(7).public_key)
    for _ in range(n_blocks):
        height = parent.height + 1
        txs = []
        for _ in range(txs_per_block):
            key = PrivateKey.from_secret(rng.randrange(1, keys.ORDER))
            outpoint = OutPoint(rng.randbytes(32), rng.randrange(4))
            coins[outpoint] = Coin(FUND, payload_of(key.public_key), 0, False)
            tx = Transaction(1, (TxIn(outpoint.tx_id, outpoint.index, key.public_key),),
                             (TxOut(FUND - FEE, sink),), 0)
            txs.append(tx.with_signatures([key.sign(tx.sighash)]))
        coinbase = make_coinbase(height, [(sink, REGTEST.block_reward(height) + FEE * len(txs))])
        all_txs = (coinbase,) + tuple(txs)
        header = Header(1, height, parent.hash, merkle_root([t.tx_id for t in all_txs]),
                        parent.timestamp + 60, REGTEST.pow_limit, 0)
        nonce = 0
        while not header.with_nonce(nonce).has_valid_pow:
            nonce += 1
        block = Block(header.with_nonce(nonce), all_txs)
        raw_blocks.append(block.raw)
        parent = block.header
    return coins, raw_blocks


def validate(coins: dict, raw_blocks: list, verify=verify_batch) -> float:
    """Seconds to validate and connect every block, from freshly decoded objects and a cold key cache."""
    coins = dict(coins)
    blocks = [Block.decode(raw) for raw in raw_blocks]
    keys._verifier.cache_clear()
    start = time.perf_counter()
    for block in blocks:
        check_block_sanity(block, REGTEST)
        delta = connect_block(block, coins.get, REGTEST, verify=verify)
        for outpoint, _ in delta.spent:
            del coins[outpoint]
        coins.update(delta.created)
    return time.perf_counter() - start


def bare_verify_rate(n: int) -> float:
    """Verifications per second of pycryptodome alone: one pre-imported key, one fixed message."""
    key = ECC.generate(curve="secp256k1")
    verifier = DSS.new(key.public_key(), "deterministic-rfc6979")
    digest = SHA256.new(b"chaincore bench")
    signature = DSS.new(key, "deterministic-rfc6979").sign(digest)
    start = time.perf_counter()
    for _ in range(n):
        verifier.verify(digest, signature)
    return n / (time.perf_counter() - start)


class PoolVerifier:
    """A connect_block `verify` that spreads signature checks over worker processes in batches."""

    def __init__(self, executor, workers: int, min_batch: int = MIN_BATCH):
        self._executor, self._workers, self._min_batch = executor, workers, min_batch

    def __call__(self, checks) -> int:
        checks = list(checks)
        if len(checks) < 2 * self._min_batch:
            return verify_batch(checks)
        size = max(self._min_batch, -(-len(checks) // self._workers))
        starts = range(0, len(checks), size)
        results = self._executor.map(verify_batch, [checks[s:s + size] for s in starts])
        for start, bad in zip(starts, results):
            if bad >= 0:
                return start + bad
        return -1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--txs", type=int, default=1000, help="transactions per block (besides the coinbase)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many timed rounds per mode")
    parser.add_argument("--no-pool", action="store_true", help="skip the process-pool mode")
    args = parser.parse_args()

    workers = os.cpu_count() or 1
    print(f"machine: {workers} CPUs, {cpu_model()}, Python {platform.python_version()}")
    print(f"building {args.blocks} blocks x {args.txs} signed 1-input transactions ...")
    coins, raw_blocks = build(args.blocks, args.txs)
    n_sigs = args.blocks * args.txs

    # Rounds alternate bare and inline so that both see the same machine load: best of each,
    # and the median of the per-round ratios (the steadier figure on a shared machine).
    bares, inlines = [], []
    for _ in range(args.rounds):
        bares.append(bare_verify_rate(n_sigs))
        inlines.append(n_sigs / validate(coins, raw_blocks))
    bare, inline = max(bares), max(inlines)
    ratios = sorted(i / b for i, b in zip(inlines, bares))
    print(f"bare pycryptodome verify (1 core):   {bare:8.0f} /s")
    print(f"inline block validation (1 core):    {inline:8.0f} tx/s   ratio {inline / bare:.2f} best/best, "
          f"{ratios[len(ratios) // 2]:.2f} median of rounds (goal >= 0.80)")
    if not args.no_pool:
        with concurrent.futures.ProcessPoolExecutor(workers) as executor:
            list(executor.map(abs, range(workers)))  # start the workers before timing
            verify = PoolVerifier(executor, workers)
            pooled = n_sigs / min(validate(coins, raw_blocks, verify) for _ in range(args.rounds))
        print(f"pool validation ({workers} processes): {pooled:8.0f} tx/s   "
              f"{pooled / bare:.2f}x bare, {pooled / inline:.2f}x inline")


if __name__ == "__main__":
    main()
