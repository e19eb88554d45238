"""The consensus rules of CONTRACT 4: for every rule one valid case and cases that break exactly that rule.

Each `refused(breaks, error)` test takes the class's valid case, breaks one rule
with `breaks`, and checks the rule's own error class (exactly, not a relative)
and its stable `code`.
"""

from dataclasses import dataclass, replace

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.errors import (
    BadAddress,
    BadCoinbase, BadCoinbaseHeight, BadCoinbaseValue, BadHeight, BadMerkleRoot, BadPrevious,
    BadProofOfWork, BadSignature, BadTarget, BadVersion, BlockTooLarge, DoubleSpend, DuplicateInput, DuplicateTx,
    ExtraCoinbase, ImmatureCoinbase, InsufficientFunds, Malformed, MissingInput, NoCoinbase, NoInputs, NonFinal,
    NoOutputs, NullPrevout, OutputTooLarge, TimeTooNew, TimeTooOld, TimeWarp, TxTooLarge, WrongKey,
)
from chaincore.core.keys import ORDER
from chaincore.core.params import COIN, MAIN, MAX_MONEY, REGTEST
from chaincore.core.rules import (
    ParentInfo, check_block_sanity, check_header_context, check_signatures, check_tx_inputs, check_tx_sanity,
    connect_block, decode_answer, decode_groups, decode_index, decode_txs, earliest_timestamp, encode_groups,
    encode_index, encode_txs, is_final, signature_checks, verify_batch, verify_encoded, verify_groups,
)
from chaincore.core.tx import NULL_INDEX, NULL_TXID, Coin, OutPoint, Transaction, TxIn, TxOut, make_coinbase
from tests.support.builders import ALICE, BOB, CAROL, make_block, payload, regtest_chain, signed_tx, solve
from tests.support.strategies import FAST

FUNDING_A = OutPoint(b"\xa1" * 32, 0)
FUNDING_B = OutPoint(b"\xb2" * 32, 1)


class RuleTestCase(SynchronousTestCase):
    def assertRefused(self, error, fn, *args):
        """fn(*args) raises exactly `error` (not a parent or sibling class) with error's code."""
        err = self.assertRaises(error, fn, *args)
        self.assertIs(type(err), error, str(err))
        self.assertEqual(err.code, error.code)
        return err


def refused(breaks, error):
    def test(self):
        self.assertRefused(error, self.check, breaks(self.valid()))
    test.__doc__ = f"A case that {breaks.__doc__} is refused with {error.__name__} ({error.code})."
    return test


def rebuild(block: Block, txs=None, mine=True, merkle=True, **fields) -> Block:
    """block with other transactions and header fields, its merkle root recomputed and re-solved."""
    txs = block.transactions if txs is None else tuple(txs)
    h = block.header
    values = dict(version=h.version, height=h.height, previous_hash=h.previous_hash, merkle_root=h.merkle_root,
                  timestamp=h.timestamp, target=h.target, nonce=0)
    if merkle:
        values["merkle_root"] = merkle_root([tx.tx_id for tx in txs])
    values.update(fields)
    header = Header(**values)
    return Block(solve(header) if mine else header, txs)


def pay(spends, outputs, **kw) -> Transaction:
    return signed_tx(spends, outputs, **kw)


def with_inputs(tx: Transaction, inputs) -> Transaction:
    return Transaction(tx.version, tuple(inputs), tx.outputs, tx.lock_time)


def with_outputs(tx: Transaction, outputs) -> Transaction:
    return Transaction(tx.version, tx.inputs, tuple(outputs), tx.lock_time)


# -- check_tx_sanity ---------------------------------------------------------------------

def tx_version_2(tx):
    """has version 2"""
    return Transaction(2, tx.inputs, tx.outputs, tx.lock_time)


def tx_without_inputs(tx):
    """has no inputs"""
    return with_inputs(tx, [])


def tx_without_outputs(tx):
    """has no outputs"""
    return with_outputs(tx, [])


def tx_zero_amount(tx):
    """pays 0 to an output"""
    return with_outputs(tx, [TxOut(0, payload(BOB))])


def tx_over_supply_output(tx):
    """pays more than the money supply to one output"""
    return with_outputs(tx, [TxOut(MAX_MONEY + 1, payload(BOB))])


def tx_over_supply_total(tx):
    """pays the money supply in total over two outputs, plus one"""
    return with_outputs(tx, [TxOut(MAX_MONEY, payload(BOB)), TxOut(1, payload(CAROL))])


def tx_null_prevout(tx):
    """spends the null outpoint beside a real one (not a coinbase)"""
    return with_inputs(tx, tx.inputs + (TxIn(NULL_TXID, NULL_INDEX, ALICE.public_key, bytes(64)),))


def tx_duplicate_input(tx):
    """spends the same outpoint twice"""
    return with_inputs(tx, tx.inputs + tx.inputs)


def tx_short_public_key(tx):
    """carries a 64-byte public key"""
    i = tx.inputs[0]
    return with_inputs(tx, [TxIn(i.prev_tx_id, i.output_index, i.public_key[:64], i.signature)])


def tx_empty_public_key(tx):
    """carries no public key"""
    i = tx.inputs[0]
    return with_inputs(tx, [TxIn(i.prev_tx_id, i.output_index, b"", i.signature)])


def tx_long_signature(tx):
    """carries a 65-byte signature"""
    i = tx.inputs[0]
    return with_inputs(tx, [TxIn(i.prev_tx_id, i.output_index, i.public_key, i.signature + b"\0")])


def tx_short_signature(tx):
    """carries a 63-byte signature"""
    i = tx.inputs[0]
    return with_inputs(tx, [TxIn(i.prev_tx_id, i.output_index, i.public_key, i.signature[:63])])


def coinbase_short_data(tx):
    """is a coinbase with 3 bytes of coinbase data"""
    return with_inputs(tx, [TxIn(NULL_TXID, NULL_INDEX, b"", b"\x01\x00\x00")])


def coinbase_long_data(tx):
    """is a coinbase with 101 bytes of coinbase data"""
    return with_inputs(tx, [TxIn(NULL_TXID, NULL_INDEX, b"", b"\x01\x00\x00\x00" + b"x" * 97)])


def coinbase_with_public_key(tx):
    """is a coinbase whose input carries a public key"""
    return with_inputs(tx, [TxIn(NULL_TXID, NULL_INDEX, ALICE.public_key, b"\x01\x00\x00\x00")])


class TxSanityTests(RuleTestCase):
    def valid(self):
        return pay([(FUNDING_A, ALICE), (FUNDING_B, BOB)], [(BOB, 1_000), (CAROL, 2_000)])

    def check(self, tx):
        check_tx_sanity(tx, REGTEST)

    def test_valid(self):
        """A signed transaction with distinct inputs and positive outputs passes."""
        self.check(self.valid())

    def test_valid_coinbase(self):
        """A coinbase with 4-100 bytes of data and no public key passes."""
        self.check(make_coinbase(3, [(payload(ALICE), 1)]))
        self.check(make_coinbase(3, [(payload(ALICE), 1)], b"x" * 96))
        self.check(with_outputs(make_coinbase(3, []), [TxOut(MAX_MONEY, payload(ALICE))]))

    def test_size_limit(self):
        """A transaction one byte over max_block_size is refused with TxTooLarge; at the limit it passes."""
        tx = self.valid()
        self.check_with(replace(REGTEST, max_block_size=tx.size), tx)
        self.assertRefused(TxTooLarge, self.check_with, replace(REGTEST, max_block_size=tx.size - 1), tx)

    def check_with(self, params, tx):
        check_tx_sanity(tx, params)

    test_version = refused(tx_version_2, BadVersion)
    test_no_inputs = refused(tx_without_inputs, NoInputs)
    test_no_outputs = refused(tx_without_outputs, NoOutputs)

    def test_zero_amount_is_valid(self):
        """A zero-value output is valid in consensus (the mempool refuses it as policy)."""
        check_tx_sanity(tx_zero_amount(self.valid()), REGTEST)
    test_output_over_supply = refused(tx_over_supply_output, OutputTooLarge)
    test_total_over_supply = refused(tx_over_supply_total, OutputTooLarge)
    test_null_prevout = refused(tx_null_prevout, NullPrevout)
    test_duplicate_input = refused(tx_duplicate_input, DuplicateInput)
    test_short_public_key = refused(tx_short_public_key, Malformed)
    test_empty_public_key = refused(tx_empty_public_key, Malformed)
    test_long_signature = refused(tx_long_signature, BadSignature)
    test_short_signature = refused(tx_short_signature, BadSignature)


class CoinbaseSanityTests(RuleTestCase):
    def valid(self):
        return make_coinbase(7, [(payload(ALICE), 50 * COIN)])

    def check(self, tx):
        check_tx_sanity(tx, REGTEST)

    def test_valid(self):
        """A coinbase committing to its height passes."""
        self.check(self.valid())

    test_short_data = refused(coinbase_short_data, BadCoinbase)
    test_long_data = refused(coinbase_long_data, BadCoinbase)
    test_public_key = refused(coinbase_with_public_key, BadCoinbase)
    test_no_outputs = refused(tx_without_outputs, NoOutputs)


# -- is_final ------------------------------------------------------------------------------

class FinalityTests(SynchronousTestCase):
    def test_lock_time_zero_is_final(self):
        """lock_time 0 is final at any height."""
        tx = pay([(FUNDING_A, ALICE)], [(BOB, 1)])
        for height in (0, 1, 10 ** 6):
            self.assertTrue(is_final(tx, height))

    def test_lock_time_below_height_is_final(self):
        """A transaction locked to height L may enter block L + 1 but not block L."""
        tx = pay([(FUNDING_A, ALICE)], [(BOB, 1)], lock_time=10)
        self.assertFalse(is_final(tx, 9))
        self.assertFalse(is_final(tx, 10))
        self.assertTrue(is_final(tx, 11))


# -- check_block_sanity ----------------------------------------------------------------------

def block_version_2(block):
    """has header version 2"""
    return rebuild(block, version=2)


def block_target_over_limit(block):
    """carries a target easier than pow_limit"""
    return rebuild(block, target=REGTEST.pow_limit + 1, mine=False)


def block_target_zero(block):
    """carries target 0"""
    return rebuild(block, target=0, mine=False)


def block_without_pow(block):
    """has a hash above its target"""
    nonce = 0
    while block.with_nonce(nonce).header.has_valid_pow:
        nonce += 1
    return block.with_nonce(nonce)


def block_without_transactions(block):
    """holds no transactions"""
    return rebuild(block, txs=[])


def block_without_coinbase(block):
    """starts with a non-coinbase transaction"""
    return rebuild(block, txs=block.transactions[1:])


def block_with_second_coinbase(block):
    """holds a second coinbase"""
    return rebuild(block, txs=block.transactions + (make_coinbase(block.height, [(payload(BOB), 1)], b"2"),))


def block_with_null_input_spend(block):
    """holds a non-coinbase transaction spending the null outpoint"""
    tx = pay([(FUNDING_A, ALICE), (OutPoint(NULL_TXID, NULL_INDEX), BOB)], [(BOB, 1)])
    return rebuild(block, txs=block.transactions[:1] + (tx,))


def block_with_wrong_coinbase_height(block):
    """has a coinbase committing to another height"""
    cb = block.transactions[0]
    return rebuild(block, txs=(make_coinbase(block.height + 1, [(o.recipient, o.amount) for o in cb.outputs]),)
                   + block.transactions[1:])


def block_with_duplicate_tx(block):
    """holds the same transaction twice"""
    return rebuild(block, txs=block.transactions + block.transactions[1:2])


def block_with_wrong_merkle_root(block):
    """commits to a merkle root that is not its transactions'"""
    return rebuild(block, merkle=False, merkle_root=merkle_root([tx.tx_id for tx in block.transactions[:2]]))


def block_with_insane_tx(block):
    """holds a transaction without outputs"""
    return rebuild(block, txs=block.transactions + (with_outputs(block.transactions[1], []),))


def block_with_internal_double_spend(block):
    """holds two different transactions spending the same outpoint"""
    return rebuild(block, txs=block.transactions + (pay([(FUNDING_A, ALICE)], [(CAROL, 5)]),))


def block_with_locked_tx(block):
    """holds a transaction locked until its own height"""
    return rebuild(block, txs=block.transactions + (pay([(OutPoint(b"\x33" * 32, 0), ALICE)], [(BOB, 1)],
                                                        lock_time=block.height),))


class BlockSanityTests(RuleTestCase):
    def valid(self):
        return make_block(REGTEST.genesis, [pay([(FUNDING_A, ALICE)], [(BOB, 1_000)]),
                                            pay([(FUNDING_B, BOB)], [(CAROL, 2_000)], lock_time=0)])

    def check(self, block):
        check_block_sanity(block, REGTEST)

    def test_valid(self):
        """A mined block with one coinbase first, distinct transactions and the right merkle root passes."""
        self.check(self.valid())

    def test_valid_with_lock_time_below_height(self):
        """A transaction locked to the height below the block's passes."""
        block = self.valid()
        self.check(rebuild(block, txs=block.transactions + (
            pay([(OutPoint(b"\x33" * 32, 0), ALICE)], [(BOB, 1)], lock_time=block.height - 1),)))

    def test_size_limit(self):
        """A block one byte over max_block_size is refused with BlockTooLarge; at the limit it passes."""
        block = self.valid()
        check_block_sanity(block, replace(REGTEST, max_block_size=block.size))
        self.assertRefused(BlockTooLarge, check_block_sanity, block, replace(REGTEST, max_block_size=block.size - 1))

    test_version = refused(block_version_2, BadVersion)
    test_target_over_limit = refused(block_target_over_limit, BadTarget)
    test_target_zero = refused(block_target_zero, BadTarget)
    test_bad_pow = refused(block_without_pow, BadProofOfWork)
    test_no_transactions = refused(block_without_transactions, NoCoinbase)
    test_no_coinbase = refused(block_without_coinbase, NoCoinbase)
    test_second_coinbase = refused(block_with_second_coinbase, ExtraCoinbase)
    test_null_input_spend = refused(block_with_null_input_spend, ExtraCoinbase)
    test_coinbase_height = refused(block_with_wrong_coinbase_height, BadCoinbaseHeight)
    test_duplicate_tx = refused(block_with_duplicate_tx, DuplicateTx)
    test_merkle_root = refused(block_with_wrong_merkle_root, BadMerkleRoot)
    test_tx_sanity = refused(block_with_insane_tx, NoOutputs)
    test_double_spend = refused(block_with_internal_double_spend, DoubleSpend)
    test_non_final = refused(block_with_locked_tx, NonFinal)


# -- check_header_context -----------------------------------------------------------------------

PARENT = ParentInfo(hash=b"\x44" * 32, height=10, median_time_past=1_796_000_500, expected_target=REGTEST.pow_limit,
                    timestamp=1_796_000_600)
NOW = 1_796_001_000


def header_wrong_parent(h):
    """links to another parent"""
    return replace(h, previous_hash=b"\x45" * 32)


def header_wrong_height(h):
    """claims parent height + 2"""
    return replace(h, height=PARENT.height + 2)


def header_wrong_target(h):
    """carries a target other than the expected one"""
    return replace(h, target=REGTEST.pow_limit >> 1)


def header_at_median(h):
    """is timestamped at the median time past, not above it"""
    return replace(h, timestamp=PARENT.median_time_past)


def header_too_far_ahead(h):
    """is timestamped one second more than 2 hours ahead of now"""
    return replace(h, timestamp=NOW + REGTEST.max_future_s + 1)


class HeaderContextTests(RuleTestCase):
    def valid(self):
        return Header(1, PARENT.height + 1, PARENT.hash, bytes(32), PARENT.median_time_past + 1, REGTEST.pow_limit, 0)

    def check(self, header):
        check_header_context(header, PARENT, REGTEST, NOW)

    def test_valid(self):
        """A header linking to its parent, one higher, with the expected target and a timely timestamp passes."""
        self.check(self.valid())

    def test_timestamp_edges(self):
        """Exactly 2 hours ahead of now passes; the rule is strict above the median only."""
        self.check(replace(self.valid(), timestamp=NOW + REGTEST.max_future_s))
        self.assertRefused(TimeTooOld, self.check, replace(self.valid(), timestamp=PARENT.median_time_past - 1))

    test_previous = refused(header_wrong_parent, BadPrevious)
    test_height = refused(header_wrong_height, BadHeight)
    test_target = refused(header_wrong_target, BadTarget)
    test_time_too_old = refused(header_at_median, TimeTooOld)
    test_time_too_new = refused(header_too_far_ahead, TimeTooNew)


# -- the time-warp rule (main) --------------------------------------------------------------------

WINDOW_PARENT = ParentInfo(hash=b"\x46" * 32, height=MAIN.retarget_interval * 2 - 1, median_time_past=1_796_000_000,
                           expected_target=MAIN.pow_limit, timestamp=1_796_009_000)


def window_start_before_parent(h):
    """opens a retarget window 601 s before the last block of the previous one"""
    return replace(h, timestamp=WINDOW_PARENT.timestamp - MAIN.max_timewarp_s - 1)


class TimeWarpTests(RuleTestCase):
    def valid(self):
        return Header(1, WINDOW_PARENT.height + 1, WINDOW_PARENT.hash, bytes(32),
                      WINDOW_PARENT.timestamp - MAIN.max_timewarp_s, MAIN.pow_limit, 0)

    def check(self, header):
        check_header_context(header, WINDOW_PARENT, MAIN, NOW + 10_000)

    def test_valid(self):
        """The first block of a window may be exactly 600 s before the last block of the previous window."""
        self.check(self.valid())

    def test_only_at_window_start(self):
        """Inside a window a block may go back further than 600 s, down to the median time past."""
        parent = replace(WINDOW_PARENT, height=WINDOW_PARENT.height - 1)
        header = replace(self.valid(), height=parent.height + 1, timestamp=parent.timestamp - 5000)
        check_header_context(header, parent, MAIN, NOW + 10_000)

    def test_regtest_has_no_windows(self):
        """regtest never retargets, so the rule never applies there."""
        parent = replace(WINDOW_PARENT, expected_target=REGTEST.pow_limit)
        header = replace(window_start_before_parent(self.valid()), target=REGTEST.pow_limit)
        check_header_context(header, parent, REGTEST, NOW + 10_000)

    test_time_warp = refused(window_start_before_parent, TimeWarp)

    def test_earliest_timestamp_at_a_window_start(self):
        """earliest_timestamp at a window's start is the time-warp bound: it passes, one second less does not."""
        earliest = earliest_timestamp(WINDOW_PARENT, MAIN)
        self.assertEqual(earliest, WINDOW_PARENT.timestamp - MAIN.max_timewarp_s)
        self.check(replace(self.valid(), timestamp=earliest))
        self.assertRefused(TimeWarp, self.check, replace(self.valid(), timestamp=earliest - 1))

    def test_earliest_timestamp_inside_a_window(self):
        """Inside a window earliest_timestamp is one above the median time past."""
        parent = replace(WINDOW_PARENT, height=WINDOW_PARENT.height - 1)
        self.assertEqual(earliest_timestamp(parent, MAIN), parent.median_time_past + 1)


def time_warp_attack(params, windows: int) -> list:
    """Targets (relative to the first) that a miner with a fixed hash rate reaches by the time-warp attack.

    It dates each window's last block as far ahead as the clock allows and every
    other block as early as check_header_context lets it; its hash rate finds a
    block every target_spacing_s at the starting target.
    """
    interval, start = params.retarget_interval, params.pow_limit >> 20
    target, now, stamps, reached = start, 1_796_000_000, [1_796_000_000], []
    for height in range(1, windows * interval + 1):
        expected = target
        if params.is_retarget_height(height):
            expected = params.next_target(height, target, stamps[height - interval], stamps[height - 1])
            reached.append(expected / start)
        now += params.target_spacing_s * start // expected
        recent = sorted(stamps[-params.median_time_span:])
        parent = ParentInfo(bytes(32), height - 1, recent[len(recent) // 2], expected, stamps[-1])
        header = Header(1, height, bytes(32), bytes(32), parent.median_time_past + 1, expected, 0)
        if height % interval == interval - 1:
            header = replace(header, timestamp=now + params.max_future_s)
        try:
            check_header_context(header, parent, params, now)
        except TimeWarp:
            header = replace(header, timestamp=parent.timestamp - params.max_timewarp_s)
            check_header_context(header, parent, params, now)
        stamps.append(header.timestamp)
        target = expected
    return reached


class TimeWarpAttackTests(SynchronousTestCase):
    def test_attack_without_the_rule_collapses_difficulty(self):
        """Without the rule (an unbounded allowance) the attack makes blocks 256 times easier in 4 windows."""
        reached = time_warp_attack(replace(MAIN, max_timewarp_s=10 ** 12), 5)
        self.assertGreaterEqual(reached[3], 256)

    def test_attack_with_the_rule_no_longer_lowers_difficulty(self):
        """With the rule the attacker gains one 4x step from the 2 h clock allowance, then falls back to 1.5x.

        Each later window can only gain max_timewarp_s (600 s of 1,800): a miner
        with a fixed hash rate settles where its real window time plus 600 s is
        1,800 s, and the difficulty stops falling.
        """
        reached = time_warp_attack(MAIN, 12)
        self.assertLessEqual(max(reached), 4)
        self.assertTrue(all(later <= earlier for earlier, later in zip(reached, reached[1:])))
        self.assertLess(reached[-1], 1.51)


# -- check_tx_inputs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spend:
    """A transaction, the coins it may spend, and the height of the block it would enter."""

    tx: Transaction
    coins: dict
    height: int


def spend_unknown_coin(case):
    """spends a coin the view does not hold"""
    return replace(case, coins={})


def spend_immature_coinbase(case):
    """spends a coinbase 99 blocks deep"""
    coin = case.coins[FUNDING_A]
    return replace(case, coins={FUNDING_A: replace(coin, is_coinbase=True, height=case.height - 99)})


def spend_with_wrong_key(case):
    """spends a coin that belongs to another key"""
    return replace(case, coins={FUNDING_A: replace(case.coins[FUNDING_A], recipient=payload(BOB))})


def spend_more_than_input(case):
    """pays out one unit more than its input holds"""
    return replace(case, coins={FUNDING_A: replace(case.coins[FUNDING_A], amount=90_000 - 1)})


class TxInputsTests(RuleTestCase):
    def valid(self):
        return Spend(pay([(FUNDING_A, ALICE)], [(BOB, 90_000)]),
                     {FUNDING_A: Coin(100_000, payload(ALICE), 5, False)}, 300)

    def check(self, case):
        return check_tx_inputs(case.tx, case.coins.get, case.height, REGTEST)

    def test_valid_returns_fee(self):
        """A transaction spending its own coins returns inputs minus outputs as its fee."""
        self.assertEqual(self.check(self.valid()), 10_000)

    def test_spending_everything(self):
        """Outputs equal to inputs give a fee of 0."""
        case = self.valid()
        self.assertEqual(self.check(replace(case, coins={FUNDING_A: replace(case.coins[FUNDING_A], amount=90_000)})),
                         0)

    def test_coinbase_maturity_edge(self):
        """A coinbase exactly coinbase_maturity blocks deep may be spent."""
        case = self.valid()
        coin = replace(case.coins[FUNDING_A], is_coinbase=True, height=case.height - REGTEST.coinbase_maturity)
        self.assertEqual(self.check(replace(case, coins={FUNDING_A: coin})), 10_000)

    test_missing_input = refused(spend_unknown_coin, MissingInput)
    test_immature_coinbase = refused(spend_immature_coinbase, ImmatureCoinbase)
    test_wrong_key = refused(spend_with_wrong_key, WrongKey)
    test_insufficient_funds = refused(spend_more_than_input, InsufficientFunds)


# -- signatures ---------------------------------------------------------------------------------------

class SignatureRuleTests(RuleTestCase):
    def test_valid(self):
        """A transaction signed by the key of every input passes check_signatures."""
        check_signatures(pay([(FUNDING_A, ALICE), (FUNDING_B, BOB)], [(CAROL, 1)]))

    def test_coinbase_has_nothing_to_check(self):
        """A coinbase has no signature checks."""
        self.assertEqual(signature_checks(make_coinbase(1, [(payload(ALICE), 1)])), [])
        check_signatures(make_coinbase(1, [(payload(ALICE), 1)]))

    def test_signature_by_other_key(self):
        """A second input signed by the wrong key is refused with BadSignature, naming that input."""
        tx = pay([(FUNDING_A, ALICE), (FUNDING_B, BOB)], [(CAROL, 1)])
        forged = tx.with_signatures([tx.inputs[0].signature, CAROL.sign(tx.sighash)])
        err = self.assertRefused(BadSignature, check_signatures, forged)
        self.assertIn("input 1", str(err))

    def test_signature_over_other_transaction(self):
        """A signature copied from another transaction is refused."""
        tx = pay([(FUNDING_A, ALICE)], [(CAROL, 1)])
        other = pay([(FUNDING_A, ALICE)], [(CAROL, 2)])
        self.assertRefused(BadSignature, check_signatures, tx.with_signatures([other.inputs[0].signature]))

    def test_high_s(self):
        """The high-S twin of a valid signature is refused (one encoding per signature)."""
        tx = pay([(FUNDING_A, ALICE)], [(CAROL, 1)])
        sig = tx.inputs[0].signature
        twin = sig[:32] + (ORDER - int.from_bytes(sig[32:], "big")).to_bytes(32, "big")
        self.assertRefused(BadSignature, check_signatures, tx.with_signatures([twin]))

    def test_verify_batch_reports_first_bad(self):
        """verify_batch returns -1 when all verify, else the index of the first bad triple."""
        tx = pay([(FUNDING_A, ALICE), (FUNDING_B, BOB)], [(CAROL, 1)])
        checks = signature_checks(tx)
        self.assertEqual(verify_batch(checks), -1)
        self.assertEqual(verify_batch([checks[0], checks[0][:2] + (bytes(64),), checks[1]]), 1)
        self.assertEqual(verify_batch([]), -1)


# -- connect_block ---------------------------------------------------------------------------------------

HEIGHT = 200
MATURE_CB = OutPoint(b"\xcb" * 32, 0)


@dataclass(frozen=True)
class Connect:
    """A block and the coins its parent chain holds."""

    block: Block
    coins: dict


def _connect_case(coins=None, coinbase_extra=0, order=(0, 1, 2), sign_with=None):
    tx1 = pay([(FUNDING_A, ALICE)], [(CAROL, 90_000)])                              # fee 10,000
    tx2 = pay([(MATURE_CB, BOB)], [(ALICE, 50 * COIN - 5_000)])                     # fee 5,000
    tx3 = pay([(OutPoint(tx1.tx_id, 0), CAROL)], [(BOB, 89_000)])                   # fee 1,000, spends tx1
    if sign_with is not None:
        tx1 = tx1.with_signatures([sign_with.sign(tx1.sighash)])
        tx3 = pay([(OutPoint(tx1.tx_id, 0), CAROL)], [(BOB, 89_000)])
    txs = [tx1, tx2, tx3]
    block = make_block(REGTEST.genesis, [txs[n] for n in order], height=HEIGHT, fees=16_000 + coinbase_extra)
    default = {FUNDING_A: Coin(100_000, payload(ALICE), 10, False),
               MATURE_CB: Coin(50 * COIN, payload(BOB), HEIGHT - REGTEST.coinbase_maturity, True)}
    return Connect(block, default if coins is None else coins)


def connect_overpaid_coinbase(case):
    """has a coinbase claiming one unit more than reward + fees"""
    return replace(case, block=_connect_case(coinbase_extra=1).block)


def connect_bad_signature(case):
    """holds a transaction whose input is signed by a key other than the coin's"""
    return replace(case, block=_connect_case(sign_with=BOB).block)


def connect_missing_coin(case):
    """spends a coin its chain does not hold"""
    return replace(case, coins={MATURE_CB: case.coins[MATURE_CB]})


def connect_spend_before_create(case):
    """spends an output of a transaction that comes later in the block"""
    return replace(case, block=_connect_case(order=(2, 0, 1)).block)


def connect_immature_coinbase(case):
    """spends a coinbase 99 blocks deep"""
    return replace(case, coins={**case.coins, MATURE_CB: replace(case.coins[MATURE_CB], height=HEIGHT - 99)})


def connect_wrong_key(case):
    """spends a coin that another key owns"""
    return replace(case, coins={**case.coins, FUNDING_A: replace(case.coins[FUNDING_A], recipient=payload(BOB))})


def connect_overspend(case):
    """holds a transaction paying out more than its input"""
    return replace(case, coins={**case.coins, FUNDING_A: replace(case.coins[FUNDING_A], amount=80_000)})


def connect_spend_own_coinbase(case):
    """spends the coinbase of the same block"""
    block = case.block
    spend = pay([(OutPoint(block.transactions[0].tx_id, 0), ALICE)], [(BOB, 1)])
    return replace(case, block=rebuild(block, txs=block.transactions + (spend,)))


class ConnectBlockTests(RuleTestCase):
    def valid(self):
        return _connect_case()

    def check(self, case):
        return connect_block(case.block, case.coins.get, REGTEST)

    def test_valid_delta(self):
        """A valid block returns the coins it spends (undo data), the coins it creates, and its fees."""
        case = self.valid()
        delta = self.check(case)
        cb, tx1, tx2, tx3 = case.block.transactions
        self.assertEqual(delta.fees, 16_000)
        self.assertEqual(delta.spent, [(FUNDING_A, case.coins[FUNDING_A]), (MATURE_CB, case.coins[MATURE_CB])])
        created = dict(delta.created)
        self.assertEqual(set(created), {OutPoint(cb.tx_id, 0), OutPoint(tx2.tx_id, 0), OutPoint(tx3.tx_id, 0)})
        self.assertEqual(created[OutPoint(cb.tx_id, 0)],
                         Coin(REGTEST.block_reward(HEIGHT) + 16_000, payload(ALICE), HEIGHT, True))
        self.assertEqual(created[OutPoint(tx3.tx_id, 0)], Coin(89_000, payload(BOB), HEIGHT, False))

    def test_coinbase_may_claim_less(self):
        """A coinbase claiming less than reward + fees is valid (the rest is never created)."""
        case = self.valid()
        block = case.block
        cb = make_coinbase(HEIGHT, [(payload(ALICE), 1)])
        self.check(replace(case, block=rebuild(block, txs=(cb,) + block.transactions[1:])))

    def test_verify_is_called_once_with_every_signature(self):
        """connect_block hands all signature checks to `verify` in one call, in block order."""
        calls = []
        case = self.valid()
        connect_block(case.block, case.coins.get, REGTEST, verify=lambda checks: calls.append(list(checks)) or -1)
        self.assertEqual(len(calls), 1)
        self.assertEqual(calls[0], [c for tx in case.block.transactions for c in signature_checks(tx)])

    def test_verify_failure_names_transaction(self):
        """When `verify` reports check n bad, the error names the transaction that check belongs to."""
        case = self.valid()
        err = self.assertRefused(BadSignature, connect_block, case.block, case.coins.get, REGTEST, lambda checks: 2)
        self.assertIn(case.block.transactions[3].tx_id.hex(), str(err))

    def test_verify_groups(self):
        """verify_groups answers, for each group of checks, whether every check in it verifies."""
        good = [c for tx in self.valid().block.transactions for c in signature_checks(tx)]
        bad = good[:1] + [(good[1][0], bytes(32), good[1][2])]
        self.assertEqual(verify_groups([good, [], bad, good[2:]]), [True, True, False, True])

    def test_every_failing_check_names_its_input(self):
        """For whichever check `verify` reports bad, the error names that check's transaction and input number."""
        two_inputs = pay([(FUNDING_A, ALICE), (MATURE_CB, BOB)], [(CAROL, 50 * COIN)])  # fee 100,000
        tx3 = pay([(OutPoint(two_inputs.tx_id, 0), CAROL)], [(BOB, 50 * COIN - 1_000)])
        block = make_block(REGTEST.genesis, [two_inputs, tx3], height=HEIGHT, fees=101_000)
        case = replace(self.valid(), block=block)
        self.check(case)
        owners = [(tx, n) for tx in case.block.transactions for n in range(len(signature_checks(tx)))]
        self.assertEqual([n for _, n in owners], [0, 1, 0])
        for bad, (tx, n) in enumerate(owners):
            err = self.assertRefused(BadSignature, connect_block, case.block, case.coins.get, REGTEST,
                                     lambda checks: bad)
            self.assertIn(f"input {n} of transaction {tx.tx_id.hex()}", str(err))

    def test_each_chain_coin_is_read_once(self):
        """connect_block asks get_coin once per input spending a chain coin (a store query each)."""
        case = self.valid()
        asked = []

        def get_coin(outpoint):
            asked.append(outpoint)
            return case.coins.get(outpoint)
        connect_block(case.block, get_coin, REGTEST)
        self.assertEqual(sorted(asked, key=lambda op: op.tx_id), sorted([FUNDING_A, MATURE_CB], key=lambda op: op.tx_id))

    def test_block_of_only_coinbase(self):
        """A block holding only its coinbase never calls `verify`."""
        block = make_block(REGTEST.genesis)
        delta = connect_block(block, {}.get, REGTEST, verify=lambda checks: self.fail("verify called"))
        self.assertEqual((delta.spent, delta.fees), ([], 0))

    test_coinbase_value = refused(connect_overpaid_coinbase, BadCoinbaseValue)
    test_bad_signature = refused(connect_bad_signature, BadSignature)
    test_missing_input = refused(connect_missing_coin, MissingInput)
    test_spend_before_create = refused(connect_spend_before_create, MissingInput)
    test_immature_coinbase = refused(connect_immature_coinbase, ImmatureCoinbase)
    test_wrong_key = refused(connect_wrong_key, WrongKey)
    test_insufficient_funds = refused(connect_overspend, InsufficientFunds)
    test_spend_own_coinbase = refused(connect_spend_own_coinbase, ImmatureCoinbase)


class ChainTests(RuleTestCase):
    def test_coinbase_matures_after_100_blocks(self):
        """On a real regtest chain the block-1 coinbase is spendable in block 101, not in block 100."""
        chain = regtest_chain(100)
        coins = {}
        for block in chain[1:]:
            check_block_sanity(block, REGTEST)
            delta = connect_block(block, coins.get, REGTEST)
            for outpoint, _ in delta.spent:
                del coins[outpoint]
            coins.update(delta.created)
        first = OutPoint(chain[1].transactions[0].tx_id, 0)
        spend = pay([(first, ALICE)], [(BOB, 50 * COIN - 1_000)])
        too_early = make_block(chain[99], [spend], fees=1_000)
        self.assertRefused(ImmatureCoinbase, connect_block, too_early, coins.get, REGTEST)
        in_time = make_block(chain[100], [spend], fees=1_000)
        check_block_sanity(in_time, REGTEST)
        delta = connect_block(in_time, coins.get, REGTEST)
        self.assertEqual(delta.spent, [(first, coins[first])])
        self.assertEqual(delta.fees, 1_000)


class ExhaustedRewardTests(SynchronousTestCase):
    def test_zero_coinbase_after_the_last_halving(self):
        """Once the reward has halved to nothing, a coinbase paying 0 is a valid block (regtest goes on)."""
        height = 33 * REGTEST.halving_interval
        self.assertEqual(REGTEST.block_reward(height), 0)
        parent = replace(REGTEST.genesis.header, height=height - 1)
        block = make_block(parent, reward=0)
        check_block_sanity(block, REGTEST)
        delta = connect_block(block, lambda op: None, REGTEST)
        self.assertEqual([coin.amount for _, coin in delta.created], [0])


class AddressVersionTests(SynchronousTestCase):
    def test_output_with_unknown_address_version_is_refused(self):
        """An output whose payload carries another version byte (possible only in bytes) is refused."""
        tx = signed_tx([(OutPoint(b"\x11" * 32, 0), ALICE)], [(BOB, 1000)])
        odd = Transaction(tx.version, tx.inputs, (TxOut(1000, b"\x00" + payload(BOB)[1:]),), tx.lock_time)
        err = self.assertRaises(BadAddress, check_tx_sanity, odd, REGTEST)
        self.assertEqual(err.code, "bad-address")


class WorkerVerifyTests(SynchronousTestCase):
    def test_tx_bytes_verify_and_name_the_first_bad(self):
        """verify_tx_bytes answers -1 for good transactions and the index of the first with a bad signature
        or bytes that do not decode."""
        from chaincore.core.rules import verify_tx_bytes
        good = [signed_tx([(OutPoint(bytes([n]) * 32, 0), ALICE)], [(payload(BOB), 5)]) for n in range(3)]
        sig = bytearray(good[1].inputs[0].signature)
        sig[7] ^= 1
        bad = good[1].with_signatures([bytes(sig)])
        self.assertEqual(verify_tx_bytes([tx.raw for tx in good]), -1)
        self.assertEqual(verify_tx_bytes([good[0].raw, bad.raw, good[2].raw]), 1)
        self.assertEqual(verify_tx_bytes([good[0].raw, good[2].raw[:-1]]), 1)


_check_fields = st.tuples(st.binary(max_size=70), st.binary(max_size=40), st.binary(max_size=70))
_groups = st.lists(st.lists(_check_fields, max_size=4), max_size=4)
_raw_txs = st.lists(st.binary(max_size=300), max_size=6)


class SignatureWorkerWireTests(SynchronousTestCase):
    """The two kinds of buffer the node writes to a signature worker, and their answers."""

    def setUp(self):
        self.good = [signed_tx([(OutPoint(bytes([n]) * 32, 0), ALICE)], [(payload(BOB), 5)]) for n in range(3)]
        sig = bytearray(self.good[1].inputs[0].signature)
        sig[7] ^= 1
        self.bad = self.good[1].with_signatures([bytes(sig)])

    @FAST
    @given(_raw_txs)
    def test_txs_round_trip(self, raw_txs):
        """Transactions' bytes come out of their buffer as they went in, empty ones included."""
        self.assertEqual(decode_txs(encode_txs(raw_txs)), raw_txs)

    @FAST
    @given(_groups)
    def test_groups_round_trip(self, groups):
        """Groups of checks come out of their buffer as they went in."""
        self.assertEqual(decode_groups(encode_groups(groups)), groups)

    @FAST
    @given(_raw_txs, st.data())
    def test_cut_or_extended_txs_are_malformed(self, raw_txs, data):
        """A transaction buffer cut anywhere, or with any bytes past its end, is Malformed."""
        buf = encode_txs(raw_txs)
        self.assertRaises(Malformed, decode_txs, buf[:data.draw(st.integers(0, len(buf) - 1))])
        self.assertRaises(Malformed, decode_txs, buf + data.draw(st.binary(min_size=1, max_size=8)))

    @FAST
    @given(_groups, st.data())
    def test_cut_or_extended_groups_are_malformed(self, groups, data):
        """A group buffer cut anywhere, or with any bytes past its end, is Malformed."""
        buf = encode_groups(groups)
        self.assertRaises(Malformed, decode_groups, buf[:data.draw(st.integers(0, len(buf) - 1))])
        self.assertRaises(Malformed, decode_groups, buf + data.draw(st.binary(min_size=1, max_size=8)))

    def test_kinds_are_not_mistaken(self):
        """Each decoder refuses the other kind's buffer, and verify_encoded refuses an unknown or missing kind."""
        txs, groups = encode_txs([b"abc"]), encode_groups([[(b"k", b"h", b"s")]])
        self.assertNotEqual(txs[0], groups[0])
        self.assertRaises(Malformed, decode_groups, txs)
        self.assertRaises(Malformed, decode_txs, groups)
        self.assertRaises(Malformed, verify_encoded, b"\x07" + txs[1:])
        self.assertRaises(Malformed, verify_encoded, b"")

    def test_tx_batch_answers_the_first_bad_index(self):
        """A transaction batch is answered -1 when all verify, else the index of the first bad or undecodable one."""
        def ask(raw_txs):
            return decode_index(verify_encoded(encode_txs(raw_txs)))
        self.assertEqual(ask([tx.raw for tx in self.good]), -1)
        self.assertEqual(ask([]), -1)
        self.assertEqual(ask([self.good[0].raw, self.bad.raw, self.good[2].raw]), 1)
        self.assertEqual(ask([self.good[0].raw, self.good[1].raw, self.good[2].raw[:-1]]), 2)
        self.assertEqual(ask([b"\x00"]), 0)

    def test_group_batch_still_answers_a_bitmap(self):
        """verify_encoded answers a group batch with its bitmap, one bit a group."""
        good = signature_checks(self.good[0])
        bad = signature_checks(self.bad)
        self.assertEqual(decode_answer(verify_encoded(encode_groups([good, bad, []]))), [True, False, True])

    def test_index_answer(self):
        """An index answer is four bytes holding -1 or more; anything else is Malformed."""
        for index in (-1, 0, 5, 2**31 - 1):
            self.assertEqual(decode_index(encode_index(index)), index)
        self.assertRaises(Malformed, decode_index, encode_index(-2))
        self.assertRaises(Malformed, decode_index, encode_index(0)[:-1])
        self.assertRaises(Malformed, decode_index, encode_index(0) + b"\x00")

    def test_bitmap_with_bits_past_its_count_is_malformed(self):
        """A group answer with a bit set past its count is one encode_answer could not have written."""
        self.assertRaises(Malformed, decode_answer, b"\x00\x00\x00\x03\x08")
        self.assertEqual(decode_answer(b"\x00\x00\x00\x03\x05"), [True, False, True])


class BlockFaultTests(SynchronousTestCase):
    def test_a_coin_rule_broken_by_a_block_is_charged_as_a_block_rule(self):
        """A block breaking a rule of the coins is charged as a broken block rule (missing-input alone would
        cost nothing, as for a transaction); any other error is charged as it is."""
        from chaincore.core.errors import BadMerkleRoot, MissingInput
        from chaincore.core.rules import block_fault
        self.assertEqual(block_fault(MissingInput("gone")), "bad-block")
        err = BadMerkleRoot("off")
        self.assertIs(block_fault(err), err)
