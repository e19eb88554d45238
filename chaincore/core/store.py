"""The storage interface the chain state is written against, and an in-memory implementation.

The chain state never holds the whole chain in memory: it asks the store for
block index entries, coins and main-chain hashes as it needs them, and hands
it one `ChainUpdate` per connected or disconnected block, which the store
applies atomically (all of it or none of it).  MemoryStore is the reference
implementation for tests; storage/sqlite.py is the durable one.
"""

from dataclasses import dataclass, field
from typing import Protocol

from .tx import Coin, OutPoint

# Block index statuses.
HEADER_VALID = 1   # header checked against its parent; data may be missing
DATA_STORED = 2    # the whole block is stored and passed its sanity checks
FULLY_VALID = 3    # connected to a main chain at least once without error
INVALID = 4        # broke a rule, or descends from a block that did


@dataclass(frozen=True)
class BlockEntry:
    """One node of the block tree."""

    hash: bytes
    parent: bytes
    height: int
    header: bytes        # the 120 header bytes
    chainwork: int       # cumulative work up to and including this block
    status: int
    timestamp: int
    target: int
    median_time_past: int  # median timestamp of this block and its 10 ancestors

    def with_status(self, status: int) -> "BlockEntry":
        return BlockEntry(self.hash, self.parent, self.height, self.header, self.chainwork, status,
                          self.timestamp, self.target, self.median_time_past)


@dataclass
class ChainUpdate:
    """Everything one atomic write changes. Lists are applied in the order: removals, then additions."""

    entries: list = field(default_factory=list)          # [BlockEntry] to insert or replace
    blocks: list = field(default_factory=list)           # [(hash, raw block bytes)]
    coins_removed: list = field(default_factory=list)    # [OutPoint]
    coins_added: list = field(default_factory=list)      # [(OutPoint, Coin)]
    undo_put: list = field(default_factory=list)         # [(block hash, [(OutPoint, Coin)])]
    undo_deleted: list = field(default_factory=list)     # [block hash]
    main_removed: list = field(default_factory=list)     # [height] no longer on the main chain
    main_added: list = field(default_factory=list)       # [(height, hash)]
    txs_removed: list = field(default_factory=list)      # [tx_id] leaving the main-chain tx index
    txs_added: list = field(default_factory=list)        # [(tx_id, block hash, height, position)]
    history_removed: list = field(default_factory=list)  # [(address payload, tx_id)]
    history_added: list = field(default_factory=list)    # [(address payload, tx_id, height)]
    tip: bytes | None = None                              # the new main-chain tip, if it changed


class ChainStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def get_entry(self, block_hash: bytes) -> BlockEntry | None: ...
    def children(self, block_hash: bytes) -> list: ...
    def best_entries(self, limit: int) -> list: ...
    def get_block(self, block_hash: bytes) -> bytes | None: ...
    def get_undo(self, block_hash: bytes) -> list | None: ...
    def main_hash(self, height: int) -> bytes | None: ...
    def tip(self) -> bytes | None: ...
    def get_coin(self, outpoint: OutPoint) -> Coin | None: ...
    def coins_of(self, payload: bytes) -> list: ...
    def tx_location(self, tx_id: bytes) -> tuple | None: ...
    def history_of(self, payload: bytes, limit: int, after: tuple | None = None) -> list: ...
    def coin_count(self) -> int: ...
    def apply(self, update: ChainUpdate) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """A ChainStore in dictionaries: the reference for tests (applies each update atomically by construction)."""

    def __init__(self):
        self.meta = {}
        self.entries = {}
        self.kids = {}
        self.blocks = {}
        self.undo = {}
        self.main = {}
        self.coins = {}
        self.by_address = {}
        self.txs = {}
        self.history = {}
        self._tip = None

    def get_meta(self, key):
        return self.meta.get(key)

    def set_meta(self, key, value):
        self.meta[key] = value

    def get_entry(self, block_hash):
        return self.entries.get(block_hash)

    def children(self, block_hash):
        return sorted(self.kids.get(block_hash, ()))

    def best_entries(self, limit):
        """Entries whose data is stored and not invalid, most work first; equal work: the one stored first.

        The sort is stable over the dict's insertion order, and replacing an
        entry (a status change) keeps its place, so the first-seen chain wins ties.
        """
        ok = [e for e in self.entries.values() if e.status in (DATA_STORED, FULLY_VALID)]
        ok.sort(key=lambda e: -e.chainwork)
        return ok[:limit]

    def get_block(self, block_hash):
        return self.blocks.get(block_hash)

    def get_undo(self, block_hash):
        return self.undo.get(block_hash)

    def main_hash(self, height):
        return self.main.get(height)

    def tip(self):
        return self._tip

    def get_coin(self, outpoint):
        return self.coins.get(outpoint)

    def coins_of(self, payload):
        return sorted(((op, self.coins[op]) for op in self.by_address.get(payload, ())),
                      key=lambda pair: (pair[1].height, pair[0].tx_id, pair[0].index))

    def tx_location(self, tx_id):
        return self.txs.get(tx_id)

    def history_of(self, payload, limit, after=None):
        rows = sorted(self.history.get(payload, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        if after is not None:
            height, tx_id = after
            rows = [(t, h) for t, h in rows if h < height or (h == height and t > tx_id)]
        return [(tx_id, height) for tx_id, height in rows[:limit]]

    def coin_count(self):
        return len(self.coins)

    def apply(self, update):
        for entry in update.entries:
            self.entries[entry.hash] = entry
            self.kids.setdefault(entry.parent, set()).add(entry.hash)
        for block_hash, raw in update.blocks:
            self.blocks[block_hash] = raw
        for op in update.coins_removed:
            coin = self.coins.pop(op)
            self.by_address[coin.recipient].discard(op)
        for op, coin in update.coins_added:
            self.coins[op] = coin
            self.by_address.setdefault(coin.recipient, set()).add(op)
        for block_hash in update.undo_deleted:
            self.undo.pop(block_hash, None)
        for block_hash, spent in update.undo_put:
            self.undo[block_hash] = list(spent)
        for height in update.main_removed:
            self.main.pop(height, None)
        for height, block_hash in update.main_added:
            self.main[height] = block_hash
        for tx_id in update.txs_removed:
            self.txs.pop(tx_id, None)
        for tx_id, block_hash, height, position in update.txs_added:
            self.txs[tx_id] = (block_hash, height, position)
        for payload, tx_id in update.history_removed:
            self.history.get(payload, {}).pop(tx_id, None)
        for payload, tx_id, height in update.history_added:
            self.history.setdefault(payload, {})[tx_id] = height
        if update.tip is not None:
            self._tip = update.tip

    def close(self):
        pass
