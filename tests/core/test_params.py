"""Network parameters (CONTRACT 4): genesis blocks, rewards and halvings, the retarget rule."""

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import merkle_root
from chaincore.core.params import COIN, MAIN, MAX_MONEY, NETWORKS, REGTEST, UNSPENDABLE_PAYLOAD
from chaincore.core.rules import check_block_sanity

# Pinned: a change to either is a change of consensus (and of docs/protocol.md).
MAIN_GENESIS = "0000011e406e060b0c42ac15a76654fe4df9e295684c5ddfc1838399531a3523"
REGTEST_GENESIS = "0accd4297440d2625d1ceff626349572f48544d49bdcc457e66f33e4f41586d0"
SPAN = MAIN.target_spacing_s * MAIN.retarget_interval


def _retarget(parent_target: int, actual_s: int, params=MAIN) -> int:
    height = params.retarget_interval * 3
    return params.next_target(height, parent_target, 10_000, 10_000 + actual_s)


class GenesisTests(SynchronousTestCase):
    def test_genesis_hashes_are_pinned(self):
        """Each network's genesis hash is the documented one."""
        self.assertEqual(MAIN.genesis_hash.hex(), MAIN_GENESIS)
        self.assertEqual(REGTEST.genesis_hash.hex(), REGTEST_GENESIS)

    def test_genesis_blocks_are_valid(self):
        """Both genesis blocks meet their own target and pass block sanity."""
        for params in (MAIN, REGTEST):
            genesis = params.genesis
            self.assertTrue(genesis.header.has_valid_pow, params.name)
            self.assertEqual(genesis.header.target, params.pow_limit)
            self.assertEqual(genesis.header.previous_hash, bytes(32))
            self.assertEqual(genesis.height, 0)
            self.assertEqual(genesis.header.merkle_root, merkle_root([genesis.transactions[0].tx_id]))
            check_block_sanity(genesis, params)

    def test_genesis_coinbase_pays_nobody(self):
        """The genesis coinbase pays 50 coins to a payload no key hashes to."""
        coinbase = REGTEST.genesis.transactions[0]
        self.assertEqual(coinbase.coinbase_height, 0)
        self.assertEqual([(o.amount, o.recipient) for o in coinbase.outputs], [(50 * COIN, UNSPENDABLE_PAYLOAD)])

    def test_networks_by_name(self):
        """NETWORKS maps --network names to parameters."""
        self.assertEqual(NETWORKS, {"main": MAIN, "regtest": REGTEST})

    def test_replace_rebuilds_genesis(self):
        """A copy with another limit (as tests use) still has a valid genesis."""
        small = replace(REGTEST, max_block_size=1000)
        self.assertEqual(small.genesis_hash, REGTEST.genesis_hash)


class RewardTests(SynchronousTestCase):
    def test_main_halving(self):
        """main pays 50 coins, halving every 210,000 blocks."""
        self.assertEqual(MAIN.block_reward(0), 50 * COIN)
        self.assertEqual(MAIN.block_reward(209_999), 50 * COIN)
        self.assertEqual(MAIN.block_reward(210_000), 25 * COIN)
        self.assertEqual(MAIN.block_reward(420_000), 1_250_000_000)

    def test_regtest_halving(self):
        """regtest halves every 150 blocks."""
        self.assertEqual(REGTEST.block_reward(149), 50 * COIN)
        self.assertEqual(REGTEST.block_reward(150), 25 * COIN)
        self.assertEqual(REGTEST.block_reward(300), 1_250_000_000)

    def test_reward_reaches_zero(self):
        """After 33 halvings the reward rounds down to 0, and stays 0 (no shift by 64 or more)."""
        self.assertEqual(MAIN.block_reward(32 * 210_000), 1)
        self.assertEqual(MAIN.block_reward(33 * 210_000), 0)
        self.assertEqual(MAIN.block_reward(64 * 210_000), 0)
        self.assertEqual(MAIN.block_reward(10 ** 9), 0)

    def test_total_supply_below_max_money(self):
        """The sum of all main rewards stays below MAX_MONEY (21 million coins)."""
        total = sum(MAIN.block_reward(h * 210_000) * 210_000 for h in range(64))
        self.assertLessEqual(total, MAX_MONEY)
        self.assertEqual(MAX_MONEY, 21_000_000 * 100_000_000)


class RetargetTests(SynchronousTestCase):
    def test_on_schedule_keeps_target(self):
        """Blocks arriving exactly on schedule keep the target."""
        target = MAIN.pow_limit >> 4
        self.assertEqual(_retarget(target, SPAN), target)

    def test_scales_with_actual_time(self):
        """The new target is parent_target * actual // expected."""
        target = MAIN.pow_limit >> 4
        self.assertEqual(_retarget(target, SPAN // 2), target * (SPAN // 2) // SPAN)
        self.assertEqual(_retarget(target, SPAN * 3), target * 3)
        self.assertEqual(_retarget(target, SPAN + 7), target * (SPAN + 7) // SPAN)

    def test_clamped_at_four_times(self):
        """The adjustment is clamped to a factor of 4 each way."""
        target = MAIN.pow_limit >> 4
        self.assertEqual(_retarget(target, SPAN * 100), target * 4)
        self.assertEqual(_retarget(target, SPAN * 4), target * 4)
        self.assertEqual(_retarget(target, 1), target * (SPAN // 4) // SPAN)
        self.assertEqual(_retarget(target, -500), target * (SPAN // 4) // SPAN)

    def test_capped_at_pow_limit(self):
        """The target never becomes easier than pow_limit."""
        self.assertEqual(_retarget(MAIN.pow_limit, SPAN * 4), MAIN.pow_limit)
        self.assertEqual(_retarget(MAIN.pow_limit >> 1, SPAN * 4), MAIN.pow_limit)

    def test_only_at_retarget_heights(self):
        """Between retarget heights the parent's target carries over, whatever the timestamps."""
        target = MAIN.pow_limit >> 4
        for height in (1, 29, 31, 59):
            self.assertFalse(MAIN.is_retarget_height(height))
            self.assertEqual(MAIN.next_target(height, target, 0, 10 ** 6), target)
        for height in (30, 60, 90):
            self.assertTrue(MAIN.is_retarget_height(height))
        self.assertFalse(MAIN.is_retarget_height(0))

    def test_regtest_never_retargets(self):
        """regtest always requires pow_limit."""
        for height in (1, 2, 30, 2016, 10 ** 6):
            self.assertFalse(REGTEST.is_retarget_height(height))
            self.assertEqual(REGTEST.next_target(height, 1, 0, 10 ** 9), REGTEST.pow_limit)

    def test_main_parameters(self):
        """main: 60 s spacing, retarget every 30 blocks, starting at 2**235 - 1 (about 2**21 hashes a block)."""
        self.assertEqual((MAIN.target_spacing_s, MAIN.retarget_interval), (60, 30))
        self.assertEqual(MAIN.pow_limit, (1 << 235) - 1)
        self.assertEqual(REGTEST.pow_limit, (1 << 255) - 1)
        self.assertEqual((MAIN.coinbase_maturity, REGTEST.coinbase_maturity), (100, 100))
        self.assertEqual(MAIN.max_future_s, 7200)
