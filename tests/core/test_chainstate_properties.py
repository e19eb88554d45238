"""Property: whatever blocks arrive, the chain state's UTXO set is the one its active chain implies.

Hypothesis drives a chain state through random operations: extending the tip
(blocks spending random mature coins, sometimes a coin created earlier in the
same block), submitting competing branches (heavier, equal or lighter, in any
order, sometimes with an overpaying coinbase inside) and restarts (a new
ChainState over the same store; for SqliteStore, the file is closed and
reopened).  After each operation the tip is the one the most-work rule (ties:
first seen) predicts, and the UTXO set equals the one rebuilt by replaying the
active chain into a fresh MemoryStore.
"""

import itertools
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState
from chaincore.core.errors import Invalid
from chaincore.core.params import REGTEST, UNSPENDABLE_PAYLOAD
from chaincore.core.store import MemoryStore
from chaincore.core.tx import OutPoint
from tests.support.builders import ALICE, BOB, CAROL, make_block, payload, regtest_chain, signed_tx

try:
    from chaincore.storage.sqlite import SqliteStore
except ImportError:  # the durable store is optional for this property
    SqliteStore = None

NOW = REGTEST.genesis.header.timestamp + 1_000_000
BASE = regtest_chain(101)  # the coinbase of height 1 is mature at height 102
OWNERS = {payload(k): k for k in (ALICE, BOB, CAROL)}
FEE = 1000

OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("extend"), st.integers(1, 3)),
    st.tuples(st.just("fork"), st.integers(0, 4), st.sampled_from([-1, 0, 1]), st.integers(0, 3), st.booleans()),
    st.just(("restart",)),
), min_size=1, max_size=7)


def utxo_of(store) -> dict:
    """Every unspent coin a store holds (all coins pay the three test keys or the genesis payload)."""
    coins = {op: coin for p in list(OWNERS) + [UNSPENDABLE_PAYLOAD] for op, coin in store.coins_of(p)}
    assert len(coins) == store.coin_count()
    return coins


def replayed_utxo(cs: ChainState) -> dict:
    """The UTXO set a fresh chain state reaches by connecting cs's main chain from genesis."""
    fresh = ChainState(MemoryStore(), REGTEST)
    for height in range(1, cs.height + 1):
        fresh.accept_block(cs.block(cs.main_hash(height)), NOW)
    return utxo_of(fresh.store)


def draw_branch(view: ChainState, depth: int, delta: int, bad_at: int, tag: bytes, data) -> tuple:
    """(blocks, bad_index): a branch off view's main chain depth blocks below its tip and delta blocks longer,
    of drawn valid spends; with 0 < bad_at <= its length, the block at bad_at overpays its reward (invalid)
    and those after it are empty."""
    fork_height = max(1, view.height - depth)
    length = max(1, view.height - fork_height + delta)
    builder = ChainState(MemoryStore(), REGTEST)  # the branch's own view, for valid spends
    for height in range(1, fork_height + 1):
        builder.accept_block(view.block(view.main_hash(height)), NOW)
    parent, blocks = view.block(view.main_hash(fork_height)), []
    bad_index = bad_at - 1 if 0 < bad_at <= length else length
    for i in range(length):
        if i < bad_index:
            txs, fees = draw_txs(builder, data)
            block = make_block(parent, txs, fees=fees, extra=tag)
            builder.accept_block(block, NOW)
        elif i == bad_index:
            block = make_block(parent, reward=REGTEST.block_reward(parent.height + 1) + 1, extra=tag)
        else:
            block = make_block(parent, extra=tag)
        blocks.append(block)
        parent = block
    return blocks, bad_index


def draw_txs(view: ChainState, data) -> tuple:
    """Up to two transactions valid on view's tip, spending mature coins; the second may spend the first."""
    height = view.height + 1
    spendable = [(op, coin) for p in OWNERS for op, coin in view.coins_of(p)
                 if not coin.is_coinbase or height - coin.height >= REGTEST.coinbase_maturity]
    txs, used = [], set()
    for _ in range(data.draw(st.integers(0, 2), label="txs")):
        choices = [(op, coin) for op, coin in spendable if op not in used and coin.amount > 2 * FEE]
        if txs and txs[-1].outputs[0].amount > 2 * FEE and data.draw(st.booleans(), label="chained"):
            prev = txs[-1]
            op, amount, owner = OutPoint(prev.tx_id, 0), prev.outputs[0].amount, prev.outputs[0].recipient
        elif choices:
            op, coin = data.draw(st.sampled_from(choices), label="coin")
            amount, owner = coin.amount, coin.recipient
        else:
            break
        used.add(op)
        to = data.draw(st.sampled_from(sorted(OWNERS)), label="to")
        half = (amount - FEE) // 2
        txs.append(signed_tx([(op, OWNERS[owner])], [(to, half), (owner, amount - FEE - half)]))
    return txs, FEE * len(txs)


class ChainRun:
    """One chain state under test, its store, and a way to restart it."""

    def __init__(self, path=None):
        self.path = path
        self.store = self._open()
        self.cs = ChainState(self.store, REGTEST)
        self.tags = itertools.count()
        for block in BASE[1:]:
            self.cs.accept_block(block, NOW)

    def _open(self):
        if self.path is None:
            return MemoryStore()
        return SqliteStore(self.path, REGTEST.name, REGTEST.genesis_hash)

    def restart(self):
        if self.path is not None:
            self.store.close()
            self.store = self._open()
        self.cs = ChainState(self.store, REGTEST)

    def tag(self) -> bytes:
        return next(self.tags).to_bytes(4, "big")

    def extend(self, test, n, data):
        for _ in range(n):
            txs, fees = draw_txs(self.cs, data)
            block = make_block(self.cs.block(self.cs.tip.hash), txs, fees=fees, extra=self.tag())
            test.assertTrue(self.cs.accept_block(block, NOW).main_chain)
            test.assertEqual(self.cs.tip.hash, block.hash)

    def fork(self, test, depth, delta, bad_at, shuffle, data):
        """A branch off the main chain depth blocks below the tip, delta blocks longer; bad_at > 0 overpays there."""
        cs, old_tip = self.cs, self.cs.tip
        blocks, bad_index = draw_branch(cs, depth, delta, bad_at, self.tag(), data)
        length = len(blocks)
        order = data.draw(st.permutations(range(length)), label="order") if shuffle else range(length)
        for i in order:
            try:
                cs.accept_block(blocks[i], NOW)
            except Invalid:
                test.assertGreaterEqual(i, bad_index, "a valid block was refused")
        valid = blocks[:bad_index]
        if valid and valid[-1].height > old_tip.height:
            test.assertEqual(cs.tip.hash, valid[-1].hash)
        else:
            test.assertEqual(cs.tip.hash, old_tip.hash)  # lighter or tied: the first seen stays

    def check(self, test):
        cs = self.cs
        test.assertEqual(cs.tip.chainwork, cs.store.best_entries(1)[0].chainwork)
        test.assertEqual(cs.main_hash(cs.height), cs.tip.hash)
        test.assertEqual(utxo_of(cs.store), replayed_utxo(cs))


def run(test, run_state, operations, data):
    for op in operations:
        if op[0] == "extend":
            run_state.extend(test, op[1], data)
        elif op[0] == "fork":
            run_state.fork(test, *op[1:], data)
        else:
            run_state.restart()
        run_state.check(test)


class ChainStateProperties(SynchronousTestCase):

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(OPERATIONS, st.data())
    def test_utxo_matches_replay_in_memory(self, operations, data):
        """Over a MemoryStore, any mix of blocks, branches and restarts leaves the UTXO set of the most-work chain."""
        run(self, ChainRun(), operations, data)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(OPERATIONS, st.data())
    def test_utxo_matches_replay_in_sqlite(self, operations, data):
        """Over a SqliteStore closed and reopened at restarts, the same holds."""
        if SqliteStore is None:
            self.skipTest("chaincore.storage.sqlite is not there")
        with tempfile.TemporaryDirectory() as datadir:
            state = ChainRun(datadir + "/chain.sqlite")
            try:
                run(self, state, operations, data)
            finally:
                state.store.close()
