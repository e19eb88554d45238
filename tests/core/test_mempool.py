"""Mempool: admission rules, unconfirmed chains, template selection, eviction, blocks and reorganisations.

Transactions spend the coinbases of a 110-block regtest chain held by a
ChainState; with regtest maturity 100, the coinbases of heights 1..11 are
spendable at height 111.  Reorganisations go through the node's own sequence:
accept_block, then reorganise or remove_for_block.
"""

from fractions import Fraction

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState
from chaincore.core.errors import (
    AncestorsTooLarge, BadAmount, BadSignature, CoinbaseInMempool, DescendantsTooLarge, DoubleSpend, FeeTooLow,
    ImmatureCoinbase,
    Invalid, MempoolChainLimit, MempoolFull, MissingInput, NonFinal, TooManyAncestors, TooManyDescendants,
)
from chaincore.core.mempool import MAX_ANCESTOR_BYTES, MAX_ANCESTORS, ChainLimits, Mempool
from chaincore.core.params import COIN, REGTEST
from chaincore.core.rules import SignatureCache
from chaincore.core.store import MemoryStore
from chaincore.core.tx import Coin, OutPoint, Transaction, TxIn, TxOut, make_coinbase
from tests.support.builders import ALICE, BOB, CAROL, coinbase_outpoint, make_block, payload, regtest_chain, signed_tx
from tests.support.strategies import FAST

NOW = REGTEST.genesis.header.timestamp + 1_000_000
BASE = regtest_chain(110)
REWARD = 50 * COIN


def pay(outpoint, fee, *, amount=REWARD, key=ALICE, to=BOB, lock_time=0):
    """A one-in, one-out transaction moving a coin worth amount to `to`, paying fee."""
    return signed_tx([(outpoint, key)], [(to, amount - fee)], lock_time=lock_time)


TX_SIZE = pay(coinbase_outpoint(BASE[1]), 0).size  # every one-in, one-out transaction has this size


def at_rate(height, rate):
    """A transaction spending the coinbase of BASE[height] at fee rate `rate` per byte."""
    return pay(coinbase_outpoint(BASE[height]), rate * TX_SIZE)


def node_accept_block(cs, mempool, block):
    """What the node does with a block: connect it, then bring the mempool along."""
    r = cs.accept_block(block, NOW)
    if r.disconnected:
        mempool.reorganise(r.disconnected, r.connected, cs.get_coin, cs.height + 1)
    else:
        for connected in r.connected:
            mempool.remove_for_block(connected)
    return r


class MempoolTestCase(SynchronousTestCase):

    def setUp(self):
        self.cs = ChainState(MemoryStore(), REGTEST)
        for block in BASE[1:]:
            self.cs.accept_block(block, NOW)
        self.pool = Mempool(REGTEST)

    def accept(self, tx, pool=None):
        return (pool or self.pool).accept(tx, self.cs.get_coin, self.cs.height + 1)

    def refused(self, tx, error):
        before = self.pool.transactions()
        err = self.assertRaises(error, self.accept, tx)
        self.assertEqual(err.code, error.code)
        self.assertEqual(self.pool.transactions(), before)


class AdmissionTests(MempoolTestCase):

    def test_valid_transaction_enters(self):
        """A valid transaction is accepted with its fee and size."""
        tx = pay(coinbase_outpoint(BASE[1]), 5000)
        result = self.accept(tx)
        self.assertEqual((result.tx_id, result.status, result.evicted), (tx.tx_id, "accepted", ()))
        self.assertIn(tx.tx_id, self.pool)
        self.assertEqual((self.pool.entry(tx.tx_id).fee, self.pool.total_bytes), (5000, tx.size))
        self.assertEqual(self.pool.spender(coinbase_outpoint(BASE[1])), tx.tx_id)

    def test_duplicate(self):
        """A transaction already in the pool is answered with status duplicate."""
        tx = pay(coinbase_outpoint(BASE[1]), 5000)
        self.accept(tx)
        self.assertEqual(self.accept(tx).status, "duplicate")
        self.assertEqual(len(self.pool), 1)

    def test_double_spend_of_mempool_input(self):
        """A transaction spending what a pool transaction already spends is refused with DoubleSpend."""
        self.accept(pay(coinbase_outpoint(BASE[1]), 5000))
        self.refused(pay(coinbase_outpoint(BASE[1]), 9000, to=CAROL), DoubleSpend)

    def test_missing_input(self):
        """A transaction spending an unknown output is refused with MissingInput."""
        self.refused(pay(OutPoint(b"\x44" * 32, 0), 5000), MissingInput)

    def test_immature_coinbase(self):
        """A coinbase is spendable 100 blocks after its own: height 11 is, height 12 is refused with ImmatureCoinbase."""
        self.refused(pay(coinbase_outpoint(BASE[12]), 5000), ImmatureCoinbase)
        self.assertEqual(self.accept(pay(coinbase_outpoint(BASE[11]), 5000)).status, "accepted")

    def test_fee_too_low(self):
        """A fee under min_fee_rate per byte is refused with FeeTooLow; exactly the minimum enters."""
        self.refused(pay(coinbase_outpoint(BASE[1]), TX_SIZE - 1), FeeTooLow)
        self.assertEqual(self.accept(pay(coinbase_outpoint(BASE[1]), TX_SIZE)).status, "accepted")

    def test_zero_value_output_refused(self):
        """A zero-value output is valid in a block but not relayed: refused with BadAmount."""
        zero = signed_tx([(coinbase_outpoint(BASE[1]), ALICE)], [(BOB, 0), (ALICE, 50 * 10**8 - 5000)])
        self.refused(zero, BadAmount)

    def test_non_final(self):
        """A lock_time not below the next height is refused with NonFinal; one below it enters."""
        self.refused(pay(coinbase_outpoint(BASE[1]), 5000, lock_time=111), NonFinal)
        self.assertEqual(self.accept(pay(coinbase_outpoint(BASE[1]), 5000, lock_time=110)).status, "accepted")

    def test_coinbase_refused(self):
        """A coinbase is refused with CoinbaseInMempool."""
        self.refused(make_coinbase(111, [(payload(ALICE), REWARD)]), CoinbaseInMempool)

    def test_chain_of_unconfirmed_transactions(self):
        """Transactions may spend outputs of pool transactions, but not one already spent in the pool."""
        parent = pay(coinbase_outpoint(BASE[1]), 1000)
        child = pay(OutPoint(parent.tx_id, 0), 1000, amount=REWARD - 1000, key=BOB, to=CAROL)
        grandchild = pay(OutPoint(child.tx_id, 0), 1000, amount=REWARD - 2000, key=CAROL, to=ALICE)
        for tx in (parent, child, grandchild):
            self.assertEqual(self.accept(tx).status, "accepted")
        self.assertEqual(self.pool.transactions(), [parent, child, grandchild])
        self.refused(pay(OutPoint(parent.tx_id, 0), 2000, amount=REWARD - 1000, key=BOB, to=ALICE), DoubleSpend)

    def test_unconfirmed_delta(self):
        """unconfirmed_delta adds what the pool pays an address and subtracts what it spends from it."""
        split = signed_tx([(coinbase_outpoint(BASE[1]), ALICE)], [(BOB, 30 * COIN), (ALICE, 20 * COIN - 1000)])
        onward = pay(OutPoint(split.tx_id, 0), 1000, amount=30 * COIN, key=BOB, to=CAROL)
        self.accept(split)
        self.assertEqual(self.pool.unconfirmed_delta(payload(ALICE), self.cs.get_coin), -30 * COIN - 1000)
        self.assertEqual(self.pool.unconfirmed_delta(payload(BOB), self.cs.get_coin), 30 * COIN)
        self.accept(onward)
        self.assertEqual(self.pool.unconfirmed_delta(payload(BOB), self.cs.get_coin), 0)
        self.assertEqual(self.pool.unconfirmed_delta(payload(CAROL), self.cs.get_coin), 30 * COIN - 1000)


class SelectTests(MempoolTestCase):

    def setUp(self):
        super().setUp()
        self.low = at_rate(1, 2)
        self.mid = at_rate(2, 5)
        self.child = pay(OutPoint(self.low.tx_id, 0), 9 * TX_SIZE, amount=REWARD - 2 * TX_SIZE, key=BOB)
        for tx in (self.low, self.mid, self.child):
            self.accept(tx)

    def test_fee_rate_order_with_parents_first(self):
        """select() takes the highest ancestor fee rate first (a child pays for its parent), parents first."""
        self.assertEqual(self.pool.select(10 * TX_SIZE), [self.low, self.child, self.mid])
        self.assertEqual(self.pool.packages(10 * TX_SIZE), [(self.low, self.child), (self.mid,)])

    def test_size_limit(self):
        """select() stays within max_bytes, leaving out a package that does not fit whole."""
        self.assertEqual(self.pool.select(2 * TX_SIZE), [self.low, self.child])
        self.assertEqual(self.pool.select(2 * TX_SIZE - 1), [self.mid])
        self.assertEqual(self.pool.select(TX_SIZE - 1), [])


class EvictionTests(MempoolTestCase):
    """A pool of three one-in, one-out transactions' worth of bytes."""

    def setUp(self):
        super().setUp()
        self.pool = Mempool(REGTEST, max_bytes=3 * TX_SIZE)

    def test_lowest_fee_rate_leaves_first(self):
        """Past max_bytes the lowest fee-rate transaction is evicted."""
        a, b, c, d = at_rate(1, 2), at_rate(2, 5), at_rate(3, 3), at_rate(4, 4)
        for tx in (a, b, c):
            self.assertEqual(self.accept(tx).evicted, ())
        self.assertEqual(self.accept(d).evicted, (a.tx_id,))
        self.assertEqual(set(self.pool.transactions()), {b, c, d})
        self.assertLessEqual(self.pool.total_bytes, self.pool.max_bytes)

    def test_descendants_leave_with_their_parent(self):
        """Evicting a transaction evicts what spends its outputs, even at a higher fee rate."""
        a, b = at_rate(1, 2), at_rate(2, 5)
        child = pay(OutPoint(a.tx_id, 0), 8 * TX_SIZE, amount=REWARD - 2 * TX_SIZE, key=BOB)
        for tx in (a, child, b):
            self.accept(tx)
        result = self.accept(at_rate(3, 4))
        self.assertEqual(set(result.evicted), {a.tx_id, child.tx_id})
        self.assertEqual(len(self.pool), 2)
        self.assertEqual(self.pool.spender(coinbase_outpoint(BASE[1])), None)

    def test_too_cheap_newcomer_is_refused(self):
        """In a full pool, a newcomer with the lowest fee rate is refused with MempoolFull and nothing leaves."""
        for height, rate in ((1, 3), (2, 4), (3, 5)):
            self.accept(at_rate(height, rate))
        self.refused(at_rate(4, 2), MempoolFull)

    def test_refused_newcomer_evicts_nothing(self):
        """A newcomer that would not stay, even after evicting cheaper ones, leaves the pool as it was."""
        self.pool = Mempool(REGTEST, max_bytes=3 * TX_SIZE + 10)
        for height, rate in ((1, 2), (2, 5), (3, 6)):
            self.accept(at_rate(height, rate))
        big = signed_tx([(coinbase_outpoint(BASE[4]), ALICE), (coinbase_outpoint(BASE[5]), ALICE)],
                        [(BOB, 2 * REWARD - 3 * 2 * TX_SIZE)])  # fee rate about 3: above only the first
        self.refused(big, MempoolFull)


class BlockTests(MempoolTestCase):

    def test_remove_for_block(self):
        """A block removes the pool transactions it confirms and those that conflict with it, with descendants."""
        confirmed = at_rate(1, 2)
        loser = at_rate(2, 2)
        loser_child = pay(OutPoint(loser.tx_id, 0), 1000, amount=REWARD - 2 * TX_SIZE, key=BOB)
        bystander = at_rate(3, 2)
        for tx in (confirmed, loser, loser_child, bystander):
            self.accept(tx)
        winner = pay(coinbase_outpoint(BASE[2]), 777, to=CAROL)
        block = make_block(BASE[110], [confirmed, winner], fees=2 * TX_SIZE + 777)
        node_accept_block(self.cs, self.pool, block)
        self.assertEqual(self.pool.transactions(), [bystander])
        self.assertEqual(self.pool.total_bytes, bystander.size)

    def test_losing_branch_transaction_returns(self):
        """A transaction confirmed only on the branch that loses a reorganisation goes back to the pool."""
        tx = at_rate(1, 2)
        self.accept(tx)
        a = make_block(BASE[110], [tx], extra=b"a", fees=2 * TX_SIZE)
        node_accept_block(self.cs, self.pool, a)
        self.assertEqual(len(self.pool), 0)
        b1 = make_block(BASE[110], extra=b"b")
        node_accept_block(self.cs, self.pool, b1)
        r = node_accept_block(self.cs, self.pool, make_block(b1, extra=b"b"))
        self.assertEqual(r.disconnected, [a])
        self.assertEqual(self.pool.transactions(), [tx])

    def test_double_spend_across_branches(self):
        """Tx A confirmed on branch 1, conflicting tx B on heavier branch 2: A leaves the pool, B is confirmed."""
        tx_a = pay(coinbase_outpoint(BASE[1]), 1000, to=BOB)
        tx_b = pay(coinbase_outpoint(BASE[1]), 2000, to=CAROL)
        one = make_block(BASE[110], [tx_a], extra=b"1", fees=1000)
        node_accept_block(self.cs, self.pool, one)
        two = make_block(BASE[110], [tx_b], extra=b"2", fees=2000)
        node_accept_block(self.cs, self.pool, two)
        node_accept_block(self.cs, self.pool, make_block(two, extra=b"2"))
        self.assertNotIn(tx_a.tx_id, self.pool)
        self.assertNotIn(tx_b.tx_id, self.pool)
        self.assertEqual(self.cs.transaction(tx_b.tx_id)[1], two.hash)
        self.assertIsNone(self.cs.transaction(tx_a.tx_id))

    def test_pool_survives_a_failed_switch(self):
        """A pool transaction also held by a side branch stays in the pool when a switch to it fails."""
        tx = at_rate(1, 2)
        self.accept(tx)
        side = [make_block(BASE[108], extra=b"s")]
        side.append(make_block(side[0], [tx], extra=b"s", fees=2 * TX_SIZE))
        overpay = make_block(side[1], reward=REGTEST.block_reward(111) + 1)
        node_accept_block(self.cs, self.pool, side[0])
        self.cs.accept_block(overpay, NOW)  # waits as an orphan for side[1]
        r = node_accept_block(self.cs, self.pool, side[1])
        self.assertEqual((r.connected, r.disconnected), ([], []))
        self.assertEqual(self.cs.tip.hash, BASE[110].hash)
        self.assertEqual(self.pool.transactions(), [tx])


# -- chain limits, eviction order, selection properties and scale ---------------------------
#
# These build transactions without ECDSA: the pool is given a signature cache that
# holds every transaction, and coins come from a dict, so thousands of transactions
# cost milliseconds.  Every key is ALICE's, so any output can be spent onward.

OWNER = payload(ALICE)
DUMMY_SIGNATURE = b"\x01" * 64
FUNDS = 10 * COIN


class Verified:
    """A signature cache that holds every transaction: structural tests skip ECDSA."""

    def __contains__(self, tx_id):
        return True

    def add(self, tx_id):
        pass


def funding(n: int) -> OutPoint:
    return OutPoint(n.to_bytes(4, "big") * 8, 0)


def unsigned(spends, amounts):
    """A transaction spending outpoints (with ALICE's key) to ALICE, one output per amount."""
    inputs = tuple(TxIn(op.tx_id, op.index, ALICE.public_key, DUMMY_SIGNATURE) for op in spends)
    return Transaction(1, inputs, tuple(TxOut(a, OWNER) for a in amounts), 0)


def fanout(spend, value, outputs, fee):
    """A transaction spending one coin worth value into `outputs` equal outputs, paying about fee."""
    share = (value - fee) // outputs
    return unsigned([spend], [share] * outputs)


class Pool:
    """A Mempool over a dict of coins, with every signature taken as verified."""

    def __init__(self, n_coins: int = 0, **kwargs):
        self.coins = {funding(n): Coin(FUNDS, OWNER, 1, False) for n in range(n_coins)}
        self.pool = Mempool(REGTEST, sig_cache=Verified(), **kwargs)

    def accept(self, tx, checked_fee=None):
        return self.pool.accept(tx, self.coins.get, 200, checked_fee)


def chain(start: OutPoint, value: int, length: int, fee: int = 1000) -> list:
    """length transactions, each spending the single output of the one before."""
    txs = []
    for _ in range(length):
        value -= fee
        txs.append(unsigned([start], [value]))
        start = OutPoint(txs[-1].tx_id, 0)
    return txs


class ChainLimitTests(SynchronousTestCase):

    def refused(self, box, tx, error, checked_fee=None):
        before = box.pool.transactions()
        err = self.assertRaises(error, box.accept, tx, checked_fee)
        self.assertEqual(err.code, error.code)
        self.assertIsInstance(err, MempoolChainLimit)
        self.assertEqual(box.pool.transactions(), before)

    def test_too_many_ancestors(self):
        """The 26th transaction of an unconfirmed chain is refused with TooManyAncestors; the 25th enters."""
        box = Pool(1)
        txs = chain(funding(0), FUNDS, 26)
        for tx in txs[:25]:
            self.assertEqual(box.accept(tx).status, "accepted")
        self.refused(box, txs[25], TooManyAncestors)

    def test_ancestors_too_large(self):
        """A child whose parent and itself pass 101 kB is refused with AncestorsTooLarge."""
        box = Pool(1)
        parent = fanout(funding(0), FUNDS, 1800, 100_000)
        child = fanout(OutPoint(parent.tx_id, 0), parent.outputs[0].amount, 1800, 60_000)
        self.assertLess(child.size, MAX_ANCESTOR_BYTES)
        self.assertGreater(parent.size + child.size, MAX_ANCESTOR_BYTES)
        box.accept(parent)
        self.refused(box, child, AncestorsTooLarge)

    def test_too_many_descendants(self):
        """A parent with 24 unconfirmed children takes no 25th: TooManyDescendants, though each child has 1 ancestor."""
        box = Pool(1)
        parent = fanout(funding(0), FUNDS, 30, 10_000)
        box.accept(parent)
        children = [fanout(OutPoint(parent.tx_id, n), parent.outputs[n].amount, 1, 1000) for n in range(25)]
        for tx in children[:24]:
            box.accept(tx)
        self.refused(box, children[24], TooManyDescendants)

    def test_descendants_too_large(self):
        """Two big children of one parent passing 101 kB together: the second is refused with DescendantsTooLarge."""
        box = Pool(1)
        parent = fanout(funding(0), FUNDS, 2, 1000)
        first, second = (fanout(OutPoint(parent.tx_id, n), parent.outputs[n].amount, 1800, 60_000) for n in (0, 1))
        self.assertLess(parent.size + second.size, MAX_ANCESTOR_BYTES)
        box.accept(parent)
        box.accept(first)
        self.refused(box, second, DescendantsTooLarge)

    def test_limits_hold_for_a_checked_fee(self):
        """Two children checked before either entered cannot both take a parent's last descendant place."""
        box = Pool(1)
        parent = fanout(funding(0), FUNDS, 30, 10_000)
        box.accept(parent)
        children = [fanout(OutPoint(parent.tx_id, n), parent.outputs[n].amount, 1, 1000) for n in range(25)]
        for tx in children[:23]:
            box.accept(tx)
        fees = [box.pool.check(tx, box.coins.get, 200) for tx in children[23:]]
        box.accept(children[23], fees[0])
        self.refused(box, children[24], TooManyDescendants, fees[1])

    def test_custom_limits(self):
        """Limits are options: with 3 ancestors at most, the 4th of a chain is refused."""
        box = Pool(1, limits=ChainLimits(ancestors=3))
        txs = chain(funding(0), FUNDS, 4)
        for tx in txs[:3]:
            box.accept(tx)
        self.refused(box, txs[3], TooManyAncestors)

    def test_confirmed_parent_frees_a_place(self):
        """Once the chain's first transaction is confirmed, the chain may grow by one again."""
        box = Pool(1)
        txs = chain(funding(0), FUNDS, 26)
        for tx in txs[:25]:
            box.accept(tx)
        box.pool.remove_for_block(FakeBlock([txs[0]]))
        self.assertEqual(box.accept(txs[25]).status, "accepted")
        self.assertEqual(len(box.pool.ancestors(txs[25].tx_id)), 24)


class FakeBlock:
    """What the mempool reads of a block: a coinbase, then the transactions given."""

    def __init__(self, transactions):
        self.transactions = (make_coinbase(200, [(OWNER, REWARD)]),) + tuple(transactions)


def naive_survivors(offers, max_bytes):
    """The pool the former O(n) scan kept, for independent transactions: (accepted tx_ids, refused tx_ids)."""
    pool, refused = [], []
    for seq, (tx, fee) in enumerate(offers):
        if sum(t.size for t, _, _ in pool) + tx.size <= max_bytes:
            pool.append((tx, fee, seq))
            continue
        trial = pool + [(tx, fee, seq)]
        while sum(t.size for t, _, _ in trial) > max_bytes:
            trial.remove(min(trial, key=lambda e: (Fraction(e[1], e[0].size), -e[2])))
        if any(t is tx for t, _, _ in trial):
            pool = trial
        else:
            refused.append(tx.tx_id)
    return {t.tx_id for t, _, _ in pool}, refused


class EvictionOrderTests(SynchronousTestCase):

    @FAST
    @given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 3)), min_size=1, max_size=30),
           st.integers(3, 12))
    def test_heap_matches_the_scan(self, offers, room):
        """Eviction by heap keeps and refuses exactly what a scan for the lowest fee rate (newest first) did."""
        box = Pool(len(offers))
        txs = []
        for n, (rate, outputs) in enumerate(offers):
            size = fanout(funding(n), FUNDS, outputs, 0).size
            txs.append((fanout(funding(n), FUNDS, outputs, rate * size), None))
        txs = [(tx, FUNDS - tx.output_total) for tx, _ in txs]
        max_bytes = room * TX_SIZE
        box.pool.max_bytes = max_bytes
        refused = []
        for tx, _ in txs:
            try:
                box.accept(tx)
            except MempoolFull:
                refused.append(tx.tx_id)
        kept, naive_refused = naive_survivors(txs, max_bytes)
        self.assertEqual({tx.tx_id for tx in box.pool.transactions()}, kept)
        self.assertEqual(refused, naive_refused)
        self.assertLessEqual(box.pool.total_bytes, max_bytes)

    def test_eviction_takes_descendants_and_keeps_counts(self):
        """Evicting a parent evicts its children, and the survivors' descendant counts stay exact."""
        box = Pool(3)
        low = fanout(funding(0), FUNDS, 2, 400)
        kids = [fanout(OutPoint(low.tx_id, n), low.outputs[n].amount, 1, 5000) for n in (0, 1)]
        other = fanout(funding(1), FUNDS, 1, 3000)
        for tx in (low, *kids, other):
            box.accept(tx)
        box.pool.max_bytes = box.pool.total_bytes
        result = box.accept(fanout(funding(2), FUNDS, 1, 2000))
        self.assertEqual(set(result.evicted), {low.tx_id, *(k.tx_id for k in kids)})
        self.assertEqual(box.pool.descendants(other.tx_id), set())
        self.assertEqual(box.pool.ancestors(other.tx_id), set())


def build_dag(draws):
    """Transactions from hypothesis draws: each spends a fresh coin or outputs of up to two earlier ones."""
    txs, unspent, fresh = [], [], 0
    for parents, rate, outputs in draws:
        spends = []
        for p in parents:
            if p < len(unspent) and unspent[p]:
                spends.append(unspent[p].pop())
        if not spends:
            spends, fresh = [(funding(fresh), FUNDS)], fresh + 1
        value = sum(v for _, v in spends)
        probe = unsigned([op for op, _ in spends], [1] * outputs)
        share = (value - rate * probe.size) // outputs
        tx = unsigned([op for op, _ in spends], [share] * outputs)
        txs.append(tx)
        unspent.append([(OutPoint(tx.tx_id, n), share) for n in range(outputs)])
    return txs, fresh


dags = st.lists(st.tuples(st.lists(st.integers(0, 30), max_size=2), st.integers(1, 60), st.integers(1, 3)),
                min_size=1, max_size=35)


def filled_pool(draws, **kwargs):
    txs, fresh = build_dag(draws)
    box = Pool(fresh, **kwargs)
    for tx in txs:
        try:
            box.accept(tx)
        except Invalid:
            pass  # a child of a refused transaction is refused in turn
    return box


class SelectionPropertyTests(SynchronousTestCase):

    @FAST
    @given(dags, st.integers(0, 40 * TX_SIZE))
    def test_selection_is_a_valid_block_order(self, draws, max_bytes):
        """select() gives distinct pool transactions within max_bytes, every in-pool parent before its child."""
        box = filled_pool(draws)
        selected = box.pool.select(max_bytes)
        self.assertLessEqual(sum(tx.size for tx in selected), max_bytes)
        seen = set()
        for tx in selected:
            self.assertIn(tx.tx_id, box.pool)
            self.assertNotIn(tx.tx_id, seen)
            for txin in tx.inputs:
                if txin.prev_tx_id in box.pool:
                    self.assertIn(txin.prev_tx_id, seen)
            seen.add(tx.tx_id)
        if max_bytes >= box.pool.total_bytes:
            self.assertEqual(len(selected), len(box.pool))

    @FAST
    @given(dags, st.integers(0, 40 * TX_SIZE))
    def test_each_package_is_the_best_that_fits(self, draws, max_bytes):
        """Each chosen package is some transaction with its unchosen ancestors, at the highest rate of all that fit."""
        box = filled_pool(draws, limits=ChainLimits(ancestors=6, descendants=6))
        pool = box.pool
        entries = {tx.tx_id: pool.entry(tx.tx_id) for tx in pool.transactions()}
        chosen, used = set(), 0

        def package_of(t):
            members = (pool.ancestors(t) | {t}) - chosen
            return members, Fraction(sum(entries[m].fee for m in members), sum(entries[m].size for m in members))

        for package in pool.packages(max_bytes):
            ids = {tx.tx_id for tx in package}
            members, rate = package_of(package[-1].tx_id)
            self.assertEqual(ids, members)
            size = sum(tx.size for tx in package)
            for t in set(entries) - chosen:
                other, other_rate = package_of(t)
                if used + sum(entries[m].size for m in other) <= max_bytes:
                    self.assertGreaterEqual(rate, other_rate)
            chosen |= ids
            used += size
        self.assertLessEqual(used, max_bytes)


class ScaleTests(SynchronousTestCase):
    """Work is counted in the pool's `steps` (walk visits and heap operations, each O(log n) at most)."""

    def test_long_chain_is_refused_at_the_limit(self):
        """Offering a 6,000-long chain costs a bounded number of steps per transaction, whatever its length."""
        box = Pool(1)
        txs = chain(funding(0), FUNDS, 6000, fee=300)
        refusals = {}
        for tx in txs:
            try:
                box.accept(tx)
            except Invalid as err:
                refusals[err.code] = refusals.get(err.code, 0) + 1
        self.assertEqual(len(box.pool), 25)
        self.assertEqual(refusals, {"too-many-ancestors": 1, "missing-input": 5974})
        self.assertLess(box.pool.steps, 25 * 30 + 6000)
        # the tip's children keep being refused at a bounded cost, not one growing with the chain
        before = box.pool.steps
        for n in range(100):
            spend = unsigned([OutPoint(txs[24].tx_id, 0)], [txs[24].outputs[0].amount - 1000 - n])
            self.assertRaises(TooManyAncestors, box.accept, spend)
        self.assertLessEqual(box.pool.steps - before, 100 * 27)
        before = box.pool.steps
        self.assertEqual(box.pool.select(REGTEST.max_block_size), txs[:25])
        self.assertLessEqual(box.pool.steps - before, 25 * 25 + 2 * 25 * 25)

    def test_full_pool_readmits_a_block_after_a_reorganisation(self):
        """A full 5 MB pool takes back a disconnected block of 4,000 transactions in O(n log n) steps."""
        n_pool, n_block = 5_000_000 // TX_SIZE + 400, 4000
        box = Pool(n_pool + n_block)

        def offer(n):
            rate = 1 + (n * 7919) % 50
            return unsigned([funding(n)], [FUNDS - rate * TX_SIZE])

        for n in range(n_pool):
            try:
                box.accept(offer(n))
            except MempoolFull:
                pass
        self.assertGreater(box.pool.total_bytes, 5_000_000 - TX_SIZE)
        block_txs = [offer(n) for n in range(n_pool, n_pool + n_block)]
        block = FakeBlock(block_txs)
        before_ids = {tx.tx_id for tx in box.pool.transactions()}
        steps = box.pool.steps
        box.pool.reorganise([block], [], box.coins.get, 200)
        work = box.pool.steps - steps
        candidates = len(before_ids) + n_block
        self.assertLessEqual(work, 12 * candidates)  # the scan it replaces: ~ evictions x pool size, ~10^8
        self.assertLessEqual(box.pool.total_bytes, 5_000_000)
        inside = {tx.tx_id: box.pool.entry(tx.tx_id) for tx in box.pool.transactions()}
        lowest = min(Fraction(e.fee, e.size) for e in inside.values())
        for tx in block_txs:
            if tx.tx_id not in inside:
                self.assertLessEqual(Fraction(FUNDS - tx.output_total, tx.size), lowest)
        self.assertGreater(len(set(inside) & {tx.tx_id for tx in block_txs}), 0)
        steps = box.pool.steps
        selected = box.pool.select(REGTEST.max_block_size)
        self.assertLessEqual(box.pool.steps - steps, 3 * len(inside))
        self.assertGreater(len(selected), REGTEST.max_block_size // TX_SIZE - 2)


class BookkeepingPropertyTests(SynchronousTestCase):

    @FAST
    @given(dags, st.integers(2, 30), st.lists(st.integers(0, 40), max_size=6), st.booleans())
    def test_graph_stays_exact(self, draws, room, confirm, reorganise):
        """After admissions, evictions, confirmations and a reorganisation, every stored total matches a fresh walk."""
        txs, fresh = build_dag(draws)
        box = Pool(fresh, max_bytes=room * TX_SIZE)
        for tx in txs:
            try:
                box.accept(tx)
            except Invalid:
                pass
        pool = box.pool
        inside = pool.transactions()
        confirmed = [inside[n] for n in sorted(set(confirm)) if n < len(inside)]
        confirmed = [tx for tx in confirmed if not pool.ancestors(tx.tx_id) - {t.tx_id for t in confirmed}]
        block = FakeBlock(confirmed)
        pool.remove_for_block(block)
        if reorganise:
            pool.reorganise([block], [], box.coins.get, 200)
        total = 0
        for tx in pool.transactions():
            t = tx.tx_id
            below = pool.descendants(t)
            self.assertEqual(pool.descendant_totals(t),
                             (1 + len(below), tx.size + sum(pool.entry(d).size for d in below)))
            self.assertLessEqual(len(pool.ancestors(t)) + 1, MAX_ANCESTORS)
            for txin in tx.inputs:
                self.assertEqual(pool.spender(txin.outpoint), t)
            total += tx.size
        self.assertEqual(pool.total_bytes, total)
        self.assertLessEqual(total, room * TX_SIZE)


class SignatureCacheTests(MempoolTestCase):

    def test_identical_checks_verify_once(self):
        """Inputs sharing a key and a signature are one cached check; a copy with a forged last signature is refused."""
        cache = SignatureCache()
        self.pool = Mempool(REGTEST, check_cache=cache)
        spends = [(coinbase_outpoint(BASE[h]), ALICE) for h in (1, 2, 3)]
        good = signed_tx(spends, [(BOB, 3 * REWARD - 10_000)])
        signature = good.inputs[0].signature
        self.assertEqual({i.signature for i in good.inputs}, {signature})
        forged = good.with_signatures([signature, signature, BOB.sign(good.sighash)])
        self.refused(forged, BadSignature)
        self.assertEqual(len(cache), 1)  # the shared check verified once, before the forged one failed
        self.assertIn((ALICE.public_key, good.sighash, signature), cache)
        self.assertEqual(self.accept(good).status, "accepted")
        self.assertEqual(len(cache), 1)
