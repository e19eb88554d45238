"""Mempool: admission rules, unconfirmed chains, template selection, eviction, blocks and reorganisations.

Transactions spend the coinbases of a 110-block regtest chain held by a
ChainState; with regtest maturity 100, the coinbases of heights 1..11 are
spendable at height 111.  Reorganisations go through the node's own sequence:
accept_block, then reorganise or remove_for_block.
"""

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState
from chaincore.core.errors import (
    BadAmount,
    CoinbaseInMempool, DoubleSpend, FeeTooLow, ImmatureCoinbase, MempoolFull, MissingInput, NonFinal,
)
from chaincore.core.mempool import Mempool
from chaincore.core.params import COIN, REGTEST
from chaincore.core.store import MemoryStore
from chaincore.core.tx import OutPoint, make_coinbase
from tests.support.builders import ALICE, BOB, CAROL, coinbase_outpoint, make_block, payload, regtest_chain, signed_tx

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
        """select() takes the highest fee rate first, but never a child before its parent."""
        self.assertEqual(self.pool.select(10 * TX_SIZE), [self.mid, self.low, self.child])

    def test_size_limit(self):
        """select() stays within max_bytes, leaving out a child whose parent does not fit."""
        self.assertEqual(self.pool.select(2 * TX_SIZE), [self.mid, self.low])
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
