"""The storage interface the chain state is written against, and an in-memory implementation.

The chain state never holds the whole chain in memory: it asks the store for
block index entries, coins and main-chain hashes as it needs them, and hands
it one `ChainUpdate` per connected or disconnected block, which the store
applies atomically (all of it or none of it).  MemoryStore is the reference
implementation for tests; storage/sqlite.py is the durable one.
"""

from contextlib import contextmanager
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
    # [(address payload, tx_id, height, position in its block, amount_delta, coinbase)]: what one
    # /history row shows, so listing an address's history decodes no block
    history_added: list = field(default_factory=list)
    tip: bytes | None = None                              # the new main-chain tip, if it changed


class ChainStore(Protocol):
    """Every method the chain state, the node and the outer layers call on a store."""

    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def get_entry(self, block_hash: bytes) -> BlockEntry | None: ...
    def children(self, block_hash: bytes) -> list: ...
    def best_entries(self, limit: int) -> list: ...
    def get_block(self, block_hash: bytes) -> bytes | None: ...
    def get_undo(self, block_hash: bytes) -> list | None: ...
    def main_hash(self, height: int) -> bytes | None: ...
    # the main-chain hashes of heights start .. start + limit - 1 that are stored, in height order
    def main_hashes(self, start: int, limit: int) -> list: ...
    def tip(self) -> bytes | None: ...
    def get_coin(self, outpoint: OutPoint) -> Coin | None: ...
    def coins_of(self, payload: bytes) -> list: ...
    def tx_location(self, tx_id: bytes) -> tuple | None: ...
    def history_of(self, payload: bytes, limit: int, after: tuple | None = None) -> list: ...
    # history_of's rows in full: [(tx_id, height, position, amount_delta, coinbase)], same order and paging
    def history_rows(self, payload: bytes, limit: int, after: tuple | None = None) -> list: ...
    def coin_count(self) -> int: ...
    def apply(self, update: ChainUpdate) -> None: ...

    def batch(self):
        """A context manager grouping every apply() and set_meta() inside it into one atomic write,
        undone as a whole if an exception leaves the block (catch-up connects many blocks this way)."""

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
        self._batch_depth = 0

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

    def main_hashes(self, start, limit):
        return [self.main[h] for h in range(max(start, 0), start + limit) if h in self.main]

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
        return [row[:2] for row in self.history_rows(payload, limit, after)]

    def history_rows(self, payload, limit, after=None):
        rows = sorted(((tx_id,) + fields for tx_id, fields in self.history.get(payload, {}).items()),
                      key=lambda row: (-row[1], row[0]))
        if after is not None:
            height, tx_id = after
            rows = [row for row in rows if row[1] < height or (row[1] == height and row[0] > tx_id)]
        return rows[:limit]

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
        for payload, tx_id, height, position, amount_delta, coinbase in update.history_added:
            self.history.setdefault(payload, {})[tx_id] = (height, position, amount_delta, bool(coinbase))
        if update.tip is not None:
            self._tip = update.tip

    @contextmanager
    def batch(self):
        """Group the writes inside into one: an exception leaving the block restores the state before it."""
        if self._batch_depth:
            yield self
            return
        saved = self._snapshot()
        self._batch_depth += 1
        try:
            yield self
        except BaseException:
            self._restore(saved)
            raise
        finally:
            self._batch_depth -= 1

    _STATE = ("meta", "entries", "kids", "blocks", "undo", "main", "coins", "by_address", "txs", "history")

    def _snapshot(self) -> dict:
        saved = {name: dict(getattr(self, name)) for name in self._STATE}
        for name in ("kids", "by_address", "history"):  # their values are mutated in place
            saved[name] = {k: v.copy() for k, v in saved[name].items()}
        saved["_tip"] = self._tip
        return saved

    def _restore(self, saved: dict) -> None:
        for name, value in saved.items():
            setattr(self, name, value)

    def close(self):
        pass
