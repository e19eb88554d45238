"""ChainState: extending the tip, orphans, reorganisation with undo, invalid branches, context rules, queries.

Every test builds regtest blocks (instant to mine) and feeds them to a fresh
ChainState over a MemoryStore; after a reorganisation the UTXO set is compared
with the one a fresh chain state gets by replaying the active chain.
"""

import itertools

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import MAX_ORPHANS, Accepted, ChainState, Duplicate, Orphan
from chaincore.core.errors import (
    BadCoinbaseValue, BadHeight, BadTarget, InvalidAncestor, MissingInput, TimeTooNew, TimeTooOld,
)
from chaincore.core.params import COIN, REGTEST
from chaincore.core.store import DATA_STORED, FULLY_VALID, INVALID, MemoryStore
from chaincore.core.tx import Coin, OutPoint
from tests.support.builders import ALICE, BOB, CAROL, coinbase_outpoint, make_block, payload, regtest_chain, signed_tx

NOW = REGTEST.genesis.header.timestamp + 1_000_000  # later than any block these tests build
BASE = regtest_chain(101)  # the coinbase of BASE[1] is mature for the block at height 102


def new_chainstate(blocks=(), store=None) -> ChainState:
    cs = ChainState(store if store is not None else MemoryStore(), REGTEST)
    for block in blocks:
        cs.accept_block(block, NOW)
    return cs


def branch(parent, n: int, tag: bytes, txs_at=None) -> list:
    """n blocks on parent, distinct from other branches by their coinbase data; txs_at maps depth (1-based) to txs."""
    blocks, tip = [], parent
    for depth in range(1, n + 1):
        txs = (txs_at or {}).get(depth, ())
        tip = make_block(tip, txs, extra=tag, fees=sum(_fee(t) for t in txs))
        blocks.append(tip)
    return blocks


_FEES = {}


def _fee(tx) -> int:
    return _FEES.get(tx.tx_id, 0)


def spend(outpoint, amount: int, to=BOB, fee: int = 1000, key=ALICE):
    """A transaction moving amount - fee of outpoint (worth amount) to `to`; remembers its fee for branch()."""
    tx = signed_tx([(outpoint, key)], [(to, amount - fee)])
    _FEES[tx.tx_id] = fee
    return tx


def replayed_utxo(cs: ChainState) -> dict:
    """The UTXO set a fresh chain state reaches by connecting cs's main chain from genesis."""
    fresh = MemoryStore()
    replay = ChainState(fresh, REGTEST)
    for height in range(1, cs.height + 1):
        replay.accept_block(cs.block(cs.main_hash(height)), NOW)
    return fresh.coins


class ExtendTests(SynchronousTestCase):

    def test_child_of_tip_extends_the_chain(self):
        """A valid child of the tip becomes the tip; its coinbase becomes a coin."""
        cs = new_chainstate()
        block = make_block(REGTEST.genesis)
        result = cs.accept_block(block, NOW)
        self.assertIsInstance(result, Accepted)
        self.assertEqual((result.height, result.main_chain, result.status), (1, True, "accepted"))
        self.assertEqual(result.connected, [block])
        self.assertEqual(result.disconnected, [])
        self.assertEqual((cs.tip.hash, cs.height, cs.main_hash(1)), (block.hash, 1, block.hash))
        self.assertEqual(cs.tip.status, FULLY_VALID)
        self.assertEqual(cs.get_coin(coinbase_outpoint(block)), Coin(50 * COIN, payload(ALICE), 1, True))

    def test_known_block_is_duplicate(self):
        """A block already stored is answered with Duplicate and changes nothing."""
        cs = new_chainstate(BASE[1:3])
        self.assertIsInstance(cs.accept_block(BASE[1], NOW), Duplicate)
        self.assertIsInstance(cs.accept_block(REGTEST.genesis, NOW), Duplicate)
        self.assertEqual(cs.tip.hash, BASE[2].hash)

    def test_restart_keeps_the_tip(self):
        """A new ChainState over the same store starts at the stored tip."""
        store = MemoryStore()
        new_chainstate(BASE[1:6], store)
        self.assertEqual(ChainState(store, REGTEST).tip.hash, BASE[5].hash)


class OrphanTests(SynchronousTestCase):

    def test_orphan_names_its_missing_parent(self):
        """A block whose parent is unknown waits as an orphan, naming the parent it misses."""
        cs = new_chainstate()
        result = cs.accept_block(BASE[2], NOW)
        self.assertIsInstance(result, Orphan)
        self.assertEqual(result.missing, BASE[1].hash)
        self.assertEqual(cs.orphan_count(), 1)
        self.assertTrue(cs.has_block(BASE[2].hash))
        self.assertEqual(cs.height, 0)

    def test_missing_is_the_first_missing_ancestor(self):
        """With orphans waiting on orphans, `missing` is the first ancestor the node does not hold at all."""
        cs = new_chainstate(BASE[1:2])
        self.assertEqual(cs.accept_block(BASE[4], NOW).missing, BASE[3].hash)
        self.assertEqual(cs.accept_block(BASE[3], NOW).missing, BASE[2].hash)
        self.assertEqual(cs.accept_block(BASE[5], NOW).missing, BASE[2].hash)
        self.assertEqual(cs.accept_block(BASE[4], NOW).missing, BASE[2].hash)  # resubmitted orphan

    def test_orphan_chain_connects_in_any_order(self):
        """Whatever order a chain's blocks arrive in, the missing parent connects all of them."""
        for order in itertools.permutations(BASE[2:5]):
            cs = new_chainstate()
            for block in order:
                self.assertIsInstance(cs.accept_block(block, NOW), Orphan)
            result = cs.accept_block(BASE[1], NOW)
            self.assertEqual(result.connected, BASE[1:5])
            self.assertTrue(result.main_chain)
            self.assertEqual(cs.tip.hash, BASE[4].hash)
            self.assertEqual(cs.orphan_count(), 0)
            self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_orphans_connect_onto_a_side_branch(self):
        """Orphans waiting on a side-branch block connect, and a reorganisation follows when they outweigh the tip."""
        cs = new_chainstate(BASE[1:4])
        side = branch(BASE[1], 4, b"side")
        for block in reversed(side[1:]):
            cs.accept_block(block, NOW)
        result = cs.accept_block(side[0], NOW)
        self.assertEqual(result.disconnected, [BASE[3], BASE[2]])
        self.assertEqual(result.connected, side)
        self.assertEqual(cs.tip.hash, side[-1].hash)

    def test_orphan_pool_is_bounded(self):
        """Past MAX_ORPHANS the oldest orphan is dropped."""
        cs = new_chainstate()
        orphans = [make_block(BASE[1], extra=n.to_bytes(2, "big")) for n in range(MAX_ORPHANS + 1)]
        for block in orphans:
            cs.accept_block(block, NOW)
        self.assertEqual(cs.orphan_count(), MAX_ORPHANS)
        self.assertFalse(cs.has_block(orphans[0].hash))
        self.assertTrue(cs.has_block(orphans[-1].hash))


class ReorgTests(SynchronousTestCase):
    """Main branch A carries a payment to BOB at height 102; branch B forks off BASE[101] without it."""

    def setUp(self):
        self.cs = new_chainstate(BASE[1:])
        self.pay = spend(coinbase_outpoint(BASE[1]), 50 * COIN, to=BOB)
        self.a = branch(BASE[101], 3, b"a", {1: [self.pay]})
        self.b = branch(BASE[101], 3, b"b")

    def test_reorg_to_heavier_branch_and_back(self):
        """The chain follows the most work: UTXO set, tip, main hashes, tx index and history move with it."""
        cs, a, b = self.cs, self.a, self.b
        cs.accept_block(a[0], NOW)
        self.assertEqual(cs.transaction(self.pay.tx_id)[2], 102)
        self.assertEqual(len(cs.coins_of(payload(BOB))), 1)

        self.assertFalse(cs.accept_block(b[0], NOW).main_chain)  # equal work: the first seen stays
        result = cs.accept_block(b[1], NOW)
        self.assertTrue(result.main_chain)
        self.assertEqual(result.disconnected, [a[0]])
        self.assertEqual(result.connected, b[:2])
        self.assertEqual((cs.tip.hash, cs.main_hash(102), cs.main_hash(103)), (b[1].hash, b[0].hash, b[1].hash))
        self.assertIsNone(cs.transaction(self.pay.tx_id))
        self.assertEqual(cs.coins_of(payload(BOB)), [])
        self.assertEqual(cs.store.history_of(payload(BOB), 10), [])
        self.assertIsNotNone(cs.get_coin(coinbase_outpoint(BASE[1])))
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

        cs.accept_block(a[1], NOW)
        result = cs.accept_block(a[2], NOW)
        self.assertEqual(result.disconnected, [b[1], b[0]])
        self.assertEqual(result.connected, a)
        self.assertEqual(cs.tip.hash, a[2].hash)
        self.assertEqual(cs.transaction(self.pay.tx_id)[1:], (a[0].hash, 102, 3))
        self.assertEqual(cs.store.history_of(payload(BOB), 10), [(self.pay.tx_id, 102)])
        self.assertIsNone(cs.get_coin(coinbase_outpoint(BASE[1])))
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_ties_keep_the_first_seen_chain(self):
        """Of two branches with equal work, the one seen first stays active, also after a restart."""
        self.cs.accept_block(self.b[0], NOW)
        result = self.cs.accept_block(self.a[0], NOW)
        self.assertEqual((result.main_chain, result.connected, result.disconnected), (False, [], []))
        self.assertEqual(self.cs.tip.hash, self.b[0].hash)
        self.assertEqual(ChainState(self.cs.store, REGTEST).tip.hash, self.b[0].hash)


def bad_branch(parent, breaks: str) -> list:
    """Four blocks on parent whose second breaks a connect rule: a nonexistent coin, or an overpaying coinbase."""
    first = make_block(parent, extra=b"bad")
    if breaks == "missing-input":
        ghost = spend(OutPoint(b"\x11" * 32, 0), 10 * COIN)
        second = make_block(first, [ghost], extra=b"bad")
    else:
        second = make_block(first, reward=REGTEST.block_reward(first.height + 1) + 1, extra=b"bad")
    return [first, second] + branch(second, 2, b"bad")


class InvalidBranchTests(SynchronousTestCase):

    def check_heavier_branch_with_bad_second_block(self, breaks, error):
        """The valid prefix of the branch outweighs the old tip: the node ends on it, the rest marked invalid."""
        cs = new_chainstate(BASE[1:3])
        main_tip = cs.tip.hash
        bad = bad_branch(BASE[1], breaks)
        cs.accept_block(bad[0], NOW)
        for block in reversed(bad[2:]):  # orphans until their parent arrives
            cs.accept_block(block, NOW)
        err = self.assertRaises(error, cs.accept_block, bad[1], NOW)
        self.assertEqual(err.code, error.code)
        self.assertEqual(cs.tip.hash, main_tip)  # bad[0] only ties BASE[2]: the first seen stays
        for block in bad[1:]:
            self.assertEqual(cs.store.get_entry(block.hash).status, INVALID)
        self.assertEqual(cs.store.get_entry(bad[0].hash).status, FULLY_VALID)
        err = self.assertRaises(InvalidAncestor, cs.accept_block, bad[3], NOW)
        self.assertEqual(err.code, "invalid-ancestor")
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_missing_input_at_depth_two(self):
        """A new branch whose second block spends a nonexistent coin is refused with MissingInput."""
        self.check_heavier_branch_with_bad_second_block("missing-input", MissingInput)

    def test_overpaying_coinbase_at_depth_two(self):
        """A new branch whose second block's coinbase overpays is refused with BadCoinbaseValue."""
        self.check_heavier_branch_with_bad_second_block("overpay", BadCoinbaseValue)

    def test_node_ends_on_most_work_valid_chain(self):
        """When the valid part of a failing branch still has the most work, the node stays on it."""
        cs = new_chainstate(BASE[1:3])
        good = branch(BASE[1], 2, b"good")
        bad = bad_branch(good[-1], "overpay")  # heights 4..7, the bad block at 5
        cs.accept_block(good[0], NOW)
        for block in reversed(bad):  # orphans until good[1] arrives
            cs.accept_block(block, NOW)
        result = cs.accept_block(good[1], NOW)
        self.assertEqual(result.disconnected, [BASE[2]])
        self.assertEqual(result.connected, good + bad[:1])
        self.assertEqual(cs.tip.hash, bad[0].hash)
        self.assertEqual(cs.height, 4)
        self.assertEqual([cs.store.get_entry(b.hash).status for b in bad],
                         [FULLY_VALID, INVALID, INVALID, INVALID])
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_stored_side_block_is_checked_when_its_branch_would_win(self):
        """A side-branch block with equal work is stored unchecked; once heavier, its failure undoes the switch."""
        cs = new_chainstate(BASE[1:4])
        bad = bad_branch(BASE[1], "missing-input")
        cs.accept_block(bad[0], NOW)
        self.assertEqual(cs.accept_block(bad[1], NOW).main_chain, False)  # ties BASE[3]: not connected yet
        self.assertEqual(cs.store.get_entry(bad[1].hash).status, DATA_STORED)
        err = self.assertRaises(InvalidAncestor, cs.accept_block, bad[2], NOW)
        self.assertEqual(err.code, "invalid-ancestor")
        self.assertEqual(cs.tip.hash, BASE[3].hash)
        self.assertEqual(cs.store.get_entry(bad[1].hash).status, INVALID)
        err = self.assertRaises(MissingInput, cs.accept_block, bad[1], NOW)
        self.assertEqual(err.code, "missing-input")
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_failed_switch_returns_to_first_seen_tie(self):
        """If a heavier branch fails and its valid part only ties the old tip, the old tip stays active."""
        cs = new_chainstate(BASE[1:3])
        side = make_block(BASE[1], extra=b"side")
        overpay = make_block(side, reward=REGTEST.block_reward(3) + 1)
        cs.accept_block(side, NOW)
        err = self.assertRaises(BadCoinbaseValue, cs.accept_block, overpay, NOW)
        self.assertEqual(err.code, "bad-coinbase-value")
        self.assertEqual(cs.tip.hash, BASE[2].hash)
        self.assertEqual(cs.store.coins, replayed_utxo(cs))

    def test_failed_round_trip_reports_no_change(self):
        """A switch undone in the same call reports only the net change: nothing connected, nothing disconnected."""
        cs = new_chainstate(BASE[1:3])
        side = branch(BASE[0], 2, b"side")
        overpay = make_block(side[1], reward=REGTEST.block_reward(3) + 1)
        cs.accept_block(side[0], NOW)
        cs.accept_block(overpay, NOW)  # an orphan until side[1] arrives
        result = cs.accept_block(side[1], NOW)
        self.assertEqual((result.main_chain, result.connected, result.disconnected), (False, [], []))
        self.assertEqual(cs.tip.hash, BASE[2].hash)
        self.assertEqual(cs.store.get_entry(overpay.hash).status, INVALID)

    def test_child_of_invalid_block_is_refused(self):
        """A block whose parent is known to be invalid is refused with InvalidAncestor, and so is the parent again."""
        cs = new_chainstate(BASE[1:3])
        ghost = spend(OutPoint(b"\x22" * 32, 1), COIN)
        bad = make_block(BASE[2], [ghost])
        err = self.assertRaises(MissingInput, cs.accept_block, bad, NOW)
        self.assertEqual(err.code, "missing-input")
        self.assertEqual(cs.store.get_entry(bad.hash).status, INVALID)
        err = self.assertRaises(InvalidAncestor, cs.accept_block, make_block(bad), NOW)
        self.assertEqual(err.code, "invalid-ancestor")
        self.assertRaises(MissingInput, cs.accept_block, bad, NOW)
        self.assertEqual(cs.tip.hash, BASE[2].hash)


class ContextRuleTests(SynchronousTestCase):
    """Rules that need the parent, through accept_block; each refused block is left unstored."""

    def setUp(self):
        self.cs = new_chainstate(BASE[1:12])
        self.tip = BASE[11]

    def refused(self, block, error):
        err = self.assertRaises(error, self.cs.accept_block, block, NOW)
        self.assertEqual(err.code, error.code)
        self.assertFalse(self.cs.has_block(block.hash))
        self.assertEqual(self.cs.tip.hash, self.tip.hash)

    def test_bad_target(self):
        """A block with a target other than the expected one is refused with BadTarget."""
        self.refused(make_block(self.tip, target=REGTEST.pow_limit // 2), BadTarget)

    def test_bad_target_on_side_branch(self):
        """The target rule holds for side-branch blocks too."""
        self.refused(make_block(BASE[5], target=REGTEST.pow_limit // 2), BadTarget)

    def test_time_not_above_median_of_eleven(self):
        """A timestamp equal to the median of the last 11 is refused with TimeTooOld; one above is accepted."""
        median = self.tip.header.timestamp - 5 * 60  # blocks are 60 s apart: the 6th of the last 11
        self.assertEqual(self.cs.tip.median_time_past, median)
        self.refused(make_block(self.tip, timestamp=median), TimeTooOld)
        older_than_parent = make_block(self.tip, timestamp=median + 1)
        self.assertTrue(self.cs.accept_block(older_than_parent, NOW).main_chain)

    def test_time_too_far_ahead(self):
        """A timestamp more than max_future_s past `now` is refused with TimeTooNew; exactly at the limit is fine."""
        self.refused(make_block(self.tip, timestamp=NOW + REGTEST.max_future_s + 1), TimeTooNew)
        self.assertTrue(self.cs.accept_block(make_block(self.tip, timestamp=NOW + REGTEST.max_future_s), NOW).main_chain)

    def test_bad_height(self):
        """A block claiming a height other than parent + 1 is refused with BadHeight."""
        self.refused(make_block(self.tip, height=self.tip.height + 2), BadHeight)


class QueryTests(SynchronousTestCase):

    def setUp(self):
        self.cs = new_chainstate(BASE[1:31])

    def test_locator_is_dense_then_sparse(self):
        """The locator lists the last 10 main hashes, then doubles its step, and ends at genesis."""
        heights = list(range(30, 20, -1)) + [19, 15, 7, 0]
        self.assertEqual(self.cs.locator(), [BASE[h].hash for h in heights])

    def test_fork_point(self):
        """fork_point is the height of the first locator hash on the main chain, skipping unknown and side blocks."""
        side = make_block(BASE[20], extra=b"side")
        self.cs.accept_block(side, NOW)
        self.assertEqual(self.cs.fork_point([b"\x00" * 32, side.hash, BASE[12].hash, BASE[3].hash]), 12)
        self.assertEqual(self.cs.fork_point([]), 0)
        self.assertEqual(self.cs.fork_point(self.cs.locator()), 30)

    def test_headers_after(self):
        """headers_after returns the main-chain headers following the fork point, at most `limit`."""
        self.assertEqual(self.cs.headers_after([BASE[25].hash]), [b.header for b in BASE[26:31]])
        self.assertEqual(self.cs.headers_after([b"\x00" * 32], limit=3), [b.header for b in BASE[1:4]])
        self.assertEqual(self.cs.headers_after(self.cs.locator()), [])

    def test_transaction_confirmations(self):
        """transaction() gives the block, height and confirmations of a main-chain transaction."""
        cs = new_chainstate(BASE[1:])
        pay = spend(coinbase_outpoint(BASE[1]), 50 * COIN)
        blocks = branch(BASE[101], 3, b"", {1: [pay]})
        for block in blocks:
            cs.accept_block(block, NOW)
        self.assertEqual(cs.transaction(pay.tx_id), (pay, blocks[0].hash, 102, 3))
        self.assertEqual(cs.transaction(BASE[1].transactions[0].tx_id)[3], 104)
        self.assertIsNone(cs.transaction(b"\x33" * 32))

    def test_coins_and_history_after_spends(self):
        """A spend moves coins between owners and enters both owners' history."""
        cs = new_chainstate(BASE[1:])
        first = signed_tx([(coinbase_outpoint(BASE[1]), ALICE)], [(BOB, 30 * COIN), (ALICE, 20 * COIN - 1000)])
        second = signed_tx([(OutPoint(first.tx_id, 0), BOB)], [(CAROL, 30 * COIN - 1000)])
        cs.accept_block(make_block(BASE[101], [first, second], fees=2000), NOW)
        self.assertEqual(cs.coins_of(payload(BOB)), [])
        self.assertEqual(cs.coins_of(payload(CAROL)),
                         [(OutPoint(second.tx_id, 0), Coin(30 * COIN - 1000, payload(CAROL), 102, False))])
        alice = cs.coins_of(payload(ALICE))
        self.assertEqual(len(alice), 101 + 1)  # 100 coinbases left, the new coinbase, the change
        self.assertNotIn(coinbase_outpoint(BASE[1]), [op for op, _ in alice])
        self.assertEqual(cs.store.history_of(payload(BOB), 10), sorted([(first.tx_id, 102), (second.tx_id, 102)]))
        self.assertEqual(cs.store.history_of(payload(CAROL), 10), [(second.tx_id, 102)])
