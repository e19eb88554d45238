"""Network parameters for `main` and `regtest` (CONTRACT 4).

`main` starts at a difficulty the bundled CPU miner meets in seconds and
retargets every `retarget_interval` blocks toward `target_spacing_s`, by at
most a factor of 4 each way.  `regtest` has a fixed trivial target and no
retarget, so tests mine instantly.  Each network has its own genesis block,
whose coinbase is not spendable (as in Bitcoin).
"""

from dataclasses import dataclass, field

from .block import Block, Header, merkle_root
from .tx import make_coinbase

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN


def describe_amount(units: int) -> str:
    """An amount for people: coins first, base units beside them, e.g. "0.00000235 coins (235 units)"."""
    whole, frac = divmod(abs(units), COIN)
    sign = "-" if units < 0 else ""
    return f"{sign}{whole}.{frac:08d} coins ({units:,} units)"

UNSPENDABLE_PAYLOAD = bytes((0x1C,)) + bytes(20)
GENESIS_TIMESTAMP = 1_796_000_000  # 2026-11-30
GENESIS_MESSAGE = b"ChainCore genesis 2026-11-30"


@dataclass(frozen=True)
class NetworkParams:
    name: str
    pow_limit: int
    retarget: bool
    target_spacing_s: int
    retarget_interval: int
    halving_interval: int
    genesis_nonce: int
    initial_reward: int = 50 * COIN
    coinbase_maturity: int = 100
    max_block_size: int = 1_000_000
    max_money: int = MAX_MONEY
    max_future_s: int = 2 * 60 * 60
    median_time_span: int = 11
    min_fee_rate: int = 1  # base units per byte, for relay and mining
    genesis: Block = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "genesis", _genesis(self.pow_limit, self.genesis_nonce))

    @property
    def genesis_hash(self) -> bytes:
        return self.genesis.hash

    def block_reward(self, height: int) -> int:
        """The subsidy of the block at height: halves every halving_interval blocks."""
        halvings = height // self.halving_interval
        return 0 if halvings >= 64 else self.initial_reward >> halvings

    def is_retarget_height(self, height: int) -> bool:
        return self.retarget and height > 0 and height % self.retarget_interval == 0

    def next_target(self, height: int, parent_target: int, first_timestamp: int, last_timestamp: int) -> int:
        """The target required of the block at height.

        first_timestamp is the timestamp of the block at height - retarget_interval, and
        last_timestamp that of the parent; both matter only at a retarget height.
        """
        if not self.retarget:
            return self.pow_limit
        if not self.is_retarget_height(height):
            return parent_target
        expected = self.target_spacing_s * self.retarget_interval
        actual = min(max(last_timestamp - first_timestamp, expected // 4), expected * 4)
        return min(parent_target * actual // expected, self.pow_limit)


def _genesis(target: int, nonce: int) -> Block:
    coinbase = make_coinbase(0, [(UNSPENDABLE_PAYLOAD, 50 * COIN)], GENESIS_MESSAGE)
    header = Header(1, 0, bytes(32), merkle_root([coinbase.tx_id]), GENESIS_TIMESTAMP, target, nonce)
    return Block(header, (coinbase,))


MAIN = NetworkParams(
    name="main",
    pow_limit=(1 << 235) - 1,
    retarget=True,
    target_spacing_s=60,
    retarget_interval=30,
    halving_interval=210_000,
    genesis_nonce=5192,
)

REGTEST = NetworkParams(
    name="regtest",
    pow_limit=(1 << 255) - 1,
    retarget=False,
    target_spacing_s=1,
    retarget_interval=1,
    halving_interval=150,
    genesis_nonce=2,
)

NETWORKS = {p.name: p for p in (MAIN, REGTEST)}
