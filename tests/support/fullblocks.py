"""Regtest chains of full blocks (close to the 1 MB limit) made of signed transactions, for sync tests and
benchmarks, built fast: every block is a child of the last, mined directly with the builders.

After 101 coinbase-only blocks, block 102 fans a mature coinbase out into one output worth coins and many
zero-amount outputs.  Then each full block holds either fan-out transactions (each spends one zero output
and makes ~1,000 more: few signatures) or spending transactions (one input and one output each: about
4,500 signatures a block), every one signed by ALICE.
"""

import os

from chaincore.core.chainstate import ChainState
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from chaincore.service.wiring import STORE_FILE
from chaincore.storage.sqlite import SqliteStore

from .builders import ALICE, coinbase_outpoint, make_block, payload, regtest_chain, signed_tx

FANOUT_OUTPUTS = 1000
FANOUT_TXS = 33            # 33 x 1,000 outputs: about 960 kB
SPENDS_PER_BLOCK = 4500    # one input and one output each: about 950 kB
FAN_WIDTH = 9000
TO = payload(ALICE)


def full_chain(n_full: int, signatures: str = "few") -> list:
    """[genesis, ..., block 102, then n_full blocks of about 1 MB]; signatures "few" (fan-outs only) or
    "many" (spending blocks, with fan-out blocks whenever zero outputs run short)."""
    chain = regtest_chain(101)
    root = signed_tx([(coinbase_outpoint(chain[1]), ALICE)],
                     [(TO, 0)] * FAN_WIDTH + [(TO, chain[1].transactions[0].output_total)])
    chain.append(make_block(chain[-1], [root]))
    zeros = [OutPoint(root.tx_id, i) for i in range(FAN_WIDTH)]  # spendable zero-amount outputs, oldest first
    for _ in range(n_full):
        if signatures == "many" and len(zeros) >= SPENDS_PER_BLOCK + FANOUT_TXS:
            spent, zeros = zeros[:SPENDS_PER_BLOCK], zeros[SPENDS_PER_BLOCK:]
            txs = [signed_tx([(op, ALICE)], [(TO, 0)]) for op in spent]
        else:
            spent, zeros = zeros[:FANOUT_TXS], zeros[FANOUT_TXS:]
            txs = [signed_tx([(op, ALICE)], [(TO, 0)] * FANOUT_OUTPUTS) for op in spent]
            zeros += [OutPoint(tx.tx_id, i) for tx in txs for i in range(FANOUT_OUTPUTS)]
        chain.append(make_block(chain[-1], txs))
    return chain


def load_datadir(datadir: str, blocks) -> None:
    """Write blocks (genesis first) into a fresh store in datadir, in one batch, as a node would hold them."""
    os.makedirs(datadir, exist_ok=True)
    store = SqliteStore(os.path.join(datadir, STORE_FILE), REGTEST.name, REGTEST.genesis_hash)
    try:
        chain = ChainState(store, REGTEST)
        with chain.batch():
            for block in blocks[1:]:
                chain.accept_block(block, blocks[-1].header.timestamp + 60)
    finally:
        store.close()


def memory_kb(pid: int) -> dict:
    """VmRSS and VmHWM (the peak) of a process, in kB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
