"""Signature-bound block validation throughput, run by hand (docs/benchmarks.md, "Validation").

Builds regtest blocks full of signed one-input transactions, each spending a
coin of a distinct key (so the public-key cache never helps), then validates
them with the consensus core exactly as a node does: check_block_sanity, then
connect_block against an in-memory coin dict.  The blocks are decoded afresh
from their bytes before timing, so no hash cached while building them is
reused.  Every figure is measured with each signature backend installed
(libsecp256k1 through coincurve, pycryptodome), beside that backend's bare
verify rate in the same run, inline and on a pool of worker processes: once
with the pool called from inside connect_block (its `verify` parameter), and
once with the signatures sent ahead and the blocks connected as their
batches come back (what a node catching up can do).  With libsecp256k1 it
also times the "C floor": the hashing and library calls every transaction
needs (tx_id, merkle node, sighash and digest, HASH160, key and signature
parsing, verify), one C call each with no other Python, so the inline figure
can be read against what any Python implementation could reach.

    PYTHONPATH=. python bench/validation.py --blocks 4 --txs 1000
"""

import argparse
import concurrent.futures
import hashlib
import random
import time

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from Crypto.Signature import DSS

from chaincore.core import keys
from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.params import REGTEST
from chaincore.core.rules import check_block_sanity, connect_block, signature_checks, verify_batch
from chaincore.core.tx import Coin, OutPoint, Transaction, TxIn, TxOut, make_coinbase
from chaincore.service.workers import starting_workers, worker_context
from machine import describe  # bench/machine.py, beside this script

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
    keys.clear_caches()
    start = time.perf_counter()
    for block in blocks:
        check_block_sanity(block, REGTEST)
        delta = connect_block(block, coins.get, REGTEST, verify=verify)
        for outpoint, _ in delta.spent:
            del coins[outpoint]
        coins.update(delta.created)
    return time.perf_counter() - start


def bare_verify_rate(backend: str, n: int) -> float:
    """Verifications per second of the backend's library alone: one pre-parsed key, one fixed message."""
    digest = hashlib.sha256(b"chaincore bench").digest()
    if backend == "pycryptodome":
        key = ECC.generate(curve="secp256k1")
        verifier = DSS.new(key.public_key(), "deterministic-rfc6979")
        message = SHA256.new(b"chaincore bench")
        signature = DSS.new(key, "deterministic-rfc6979").sign(message)
        start = time.perf_counter()
        for _ in range(n):
            verifier.verify(message, signature)
        return n / (time.perf_counter() - start)
    from coincurve import PrivateKey as CoinKey
    from coincurve._libsecp256k1 import ffi, lib
    from coincurve.context import GLOBAL_CONTEXT
    ctx, key = GLOBAL_CONTEXT.ctx, CoinKey()
    signature = ffi.new("secp256k1_ecdsa_signature *")
    lib.secp256k1_ecdsa_sign(ctx, signature, digest, key.secret, ffi.NULL, ffi.NULL)
    point = key.public_key.public_key
    verify = lib.secp256k1_ecdsa_verify
    start = time.perf_counter()
    for _ in range(n):
        verify(ctx, signature, digest, point)
    return n / (time.perf_counter() - start)


def floor_rate(raw_blocks: list) -> float:
    """Transactions per second of the work no implementation can skip, each step one libsecp256k1 or hashlib
    call with no other Python: tx_id, a merkle node, the sighash and its digest, HASH160 of the key, parsing
    the key and the signature, verifying.  What inline validation could reach with no logic of its own."""
    from coincurve._libsecp256k1 import ffi, lib
    from coincurve.context import GLOBAL_CONTEXT
    ctx, sha = GLOBAL_CONTEXT.ctx, hashlib.sha256
    items = []
    for block in (Block.decode(raw) for raw in raw_blocks):
        for tx in block.transactions[1:]:
            unsigned = Transaction(tx.version, tuple(TxIn(i.prev_tx_id, i.output_index, i.public_key)
                                                     for i in tx.inputs), tx.outputs, tx.lock_time).raw
            items.append((tx.raw, unsigned, tx.inputs[0].public_key, tx.inputs[0].signature))
    parse_key, parse_sig, verify = (lib.secp256k1_ec_pubkey_parse, lib.secp256k1_ecdsa_signature_parse_compact,
                                    lib.secp256k1_ecdsa_verify)
    start = time.perf_counter()
    for raw, unsigned, public_key, signature in items:
        sha(sha(raw).digest()).digest()
        sha(sha(b"\x01" + public_key[1:65]).digest()).digest()
        digest = sha(sha(sha(unsigned).digest()).digest()).digest()
        hashlib.new("ripemd160", sha(public_key).digest()).digest()
        point, sig = ffi.new("secp256k1_pubkey *"), ffi.new("secp256k1_ecdsa_signature *")
        parse_key(ctx, point, public_key, 65)
        parse_sig(ctx, sig, signature)
        verify(ctx, sig, digest, point)
    return len(items) / (time.perf_counter() - start)


def validate_ahead(coins: dict, raw_blocks: list, executor, workers: int, min_batch: int = MIN_BATCH) -> float:
    """Seconds to validate every block with its signatures sent to the pool ahead of connecting.

    As a node catching up can: each block passes check_block_sanity and its
    signature checks leave for the workers in batches at once; then each
    block is connected (its transactions counted verified) as soon as its own
    batches are back, while the workers go on with the later blocks.
    """
    coins = dict(coins)
    blocks = [Block.decode(raw) for raw in raw_blocks]
    keys.clear_caches()
    start = time.perf_counter()
    jobs = []
    for block in blocks:
        check_block_sanity(block, REGTEST)
        checks = [c for tx in block.transactions for c in signature_checks(tx)]
        size = max(min_batch, -(-len(checks) // workers))
        jobs.append([executor.submit(verify_batch, checks[s:s + size]) for s in range(0, len(checks), size)])
    for block, batches in zip(blocks, jobs):
        verified = {tx.tx_id for tx in block.transactions} if all(b.result() < 0 for b in batches) else ()
        delta = connect_block(block, coins.get, REGTEST, verified=verified)
        for outpoint, _ in delta.spent:
            del coins[outpoint]
        coins.update(delta.created)
    return time.perf_counter() - start


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


def measure(backend: str, coins: dict, raw_blocks: list, n_sigs: int, rounds: int, workers: int) -> dict:
    """Best rates of one backend: bare verify, inline validation and (workers > 0) validation on a pool."""
    keys.use_backend(backend)
    # Rounds alternate bare and inline so that both see the same machine load: best of each,
    # and the median of the per-round ratios (the steadier figure on a shared machine).
    bares, inlines, floors = [], [], []
    for _ in range(rounds):
        bares.append(bare_verify_rate(backend, n_sigs))
        inlines.append(n_sigs / validate(coins, raw_blocks))
        if backend == "libsecp256k1":
            floors.append(floor_rate(raw_blocks))
    ratios = sorted(i / b for i, b in zip(inlines, bares))
    result = {"bare": max(bares), "inline": max(inlines), "inline_median": ratios[len(ratios) // 2]}
    if floors:
        floor_ratios = sorted(f / b for f, b in zip(floors, bares))
        result["floor"], result["floor_median"] = max(floors), floor_ratios[len(floor_ratios) // 2]
    if workers:
        # as the node starts its workers: forked by a forkserver that imported only the core
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context(),
                                                    initializer=keys.use_backend, initargs=(backend,)) as executor:
            with starting_workers():
                list(executor.map(abs, range(workers * 4)))  # start the workers before timing
            verify = PoolVerifier(executor, workers)
            pooled, ahead = [], []
            for _ in range(rounds):
                bares.append(bare_verify_rate(backend, n_sigs // 2))
                pooled.append(n_sigs / validate(coins, raw_blocks, verify))
                ahead.append(n_sigs / validate_ahead(coins, raw_blocks, executor, workers))
        result["bare"] = max(bares)
        result["pool"] = max(pooled)
        result["ahead"] = max(ahead)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--txs", type=int, default=1000, help="transactions per block (besides the coinbase)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many timed rounds per mode")
    parser.add_argument("--workers", type=int, default=2, help="processes of the pool mode (0: skip it)")
    parser.add_argument("--backend", action="append", choices=keys.BACKEND_NAMES,
                        help="measure only this backend (repeatable); default every one installed")
    args = parser.parse_args()

    print(f"machine: {describe()}")
    backends = args.backend or keys.available_backends()
    print(f"building {args.blocks} blocks x {args.txs} signed 1-input transactions ...")
    coins, raw_blocks = build(args.blocks, args.txs)
    n_sigs = args.blocks * args.txs
    results = {b: measure(b, coins, raw_blocks, n_sigs, args.rounds, args.workers) for b in backends}

    print()
    print(f"{'':38}" + "".join(f"{b:>16}" for b in backends))
    rows = [("bare verify, 1 core (/s)", lambda r: f"{r['bare']:,.0f}"),
            ("inline validation, 1 core (tx/s)", lambda r: f"{r['inline']:,.0f}"),
            ("  vs bare (best, median of rounds)", lambda r: f"{r['inline'] / r['bare']:.2f}, {r['inline_median']:.2f}"),
            ("C floor, 1 core (tx/s)", lambda r: f"{r['floor']:,.0f}" if "floor" in r else "-"),
            ("  vs bare (best, median of rounds)",
             lambda r: f"{r['floor'] / r['bare']:.2f}, {r['floor_median']:.2f}" if "floor" in r else "-")]
    if args.workers:
        rows += [(f"pool inside connect, {args.workers} proc (tx/s)", lambda r: f"{r['pool']:,.0f}"),
                 ("  vs bare 1 core", lambda r: f"{r['pool'] / r['bare']:.2f}"),
                 (f"pool ahead of connect, {args.workers} proc (tx/s)", lambda r: f"{r['ahead']:,.0f}"),
                 ("  vs bare 1 core", lambda r: f"{r['ahead'] / r['bare']:.2f}")]
    for label, cell in rows:
        print(f"{label:38}" + "".join(f"{cell(results[b]):>16}" for b in backends))
    if len(backends) > 1:
        first, other = backends
        print(f"{first} / {other}: bare {results[first]['bare'] / results[other]['bare']:.1f}x, "
              f"inline {results[first]['inline'] / results[other]['inline']:.1f}x")
    print("goals: inline >= 0.80 of bare; pool on 2 cores >= 1.60 of bare")


if __name__ == "__main__":
    main()
