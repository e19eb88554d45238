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

from .errors import StoreError
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


# Memory a held write costs, measured with tracemalloc on full blocks of one-input transactions:
# a coin (its outpoint, Coin and dict slot), a tx_index row, a history row, an undo coin, a height.
CACHE_COIN_BYTES = 260
CACHE_ROW_BYTES = 200
CACHE_DEFAULT_BYTES = 12_000_000


class CachedStore:
    """A ChainStore in front of another that holds the chain state's writes in memory until flush()
    (Bitcoin Core's CCoinsViewCache with its dbcache bound, for everything a connect writes).

    Block index entries, block bytes and meta go through at once: a stored block
    is on disk whatever happens next.  Coins, undo data, the main chain, the
    transaction index, the address history and the tip are held and written
    by flush() as one ChainUpdate, so disk always holds a consistent chain
    state, at the last flushed tip: after a crash the chain state starts there
    and connects the stored blocks beyond it again.  A coin created and spent
    between two flushes never reaches disk.  Reads see the held writes; the
    reads no hot path makes (coins_of, history) flush first.  apply() flushes
    by itself when the held writes pass max_bytes.  If a write fails (disk
    full), or an exception leaves a batch, every held write is dropped:
    memory then equals disk, and the caller reloads from it.
    """

    def __init__(self, inner, max_bytes: int = CACHE_DEFAULT_BYTES):
        self.inner = inner
        self.max_bytes = max_bytes
        self._clear()

    def _clear(self) -> None:
        self._coins = {}        # OutPoint -> Coin, or None: spent, and on disk until the flush
        self._fresh = set()     # outpoints of held coins that disk does not hold
        self._coin_delta = 0    # coins held minus coins spent from disk
        self._undo = {}         # block hash -> [(OutPoint, Coin)] or None (to delete)
        self._main = {}         # height -> hash or None
        self._txs = {}          # tx_id -> (block hash, height, position) or None
        self._history = {}      # (payload, tx_id) -> the history_added row, or None
        self._tip = None
        self._rows = 0          # held rows other than coins, for the byte bound

    # -- what is held ------------------------------------------------------------------

    @property
    def held_bytes(self) -> int:
        """About how much memory the held writes take."""
        return len(self._coins) * CACHE_COIN_BYTES + self._rows * CACHE_ROW_BYTES

    @property
    def dirty(self) -> bool:
        """Whether any write waits for flush()."""
        return self._tip is not None or bool(self._coins or self._undo or self._main or self._txs
                                             or self._history)

    def drop(self) -> None:
        """Forget every held write: reads answer from disk again (the chain state must reload)."""
        self._clear()

    # -- writes ------------------------------------------------------------------------

    def apply(self, update: ChainUpdate) -> None:
        """Write the entries and blocks of update through; hold the rest (flushing past max_bytes)."""
        if update.entries or update.blocks:
            try:
                self.inner.apply(ChainUpdate(entries=update.entries, blocks=update.blocks))
            except BaseException:
                self._clear()
                raise
        coins, fresh = self._coins, self._fresh
        for op in update.coins_removed:
            if op in fresh:
                del coins[op]
                fresh.discard(op)
            else:
                coins[op] = None
            self._coin_delta -= 1
        for op, coin in update.coins_added:
            if op not in coins:
                fresh.add(op)  # (a spent coin's tombstone stays non-fresh: disk holds the old row)
            coins[op] = coin
            self._coin_delta += 1
        rows = len(update.undo_deleted) + len(update.undo_put) + len(update.main_removed) + len(update.main_added) \
            + len(update.txs_removed) + len(update.txs_added) + len(update.history_removed) \
            + len(update.history_added) + sum(len(spent) for _, spent in update.undo_put)
        for block_hash in update.undo_deleted:
            self._undo[block_hash] = None
        for block_hash, spent in update.undo_put:
            self._undo[block_hash] = list(spent)
        for height in update.main_removed:
            self._main[height] = None
        for height, block_hash in update.main_added:
            self._main[height] = block_hash
        for tx_id in update.txs_removed:
            self._txs[tx_id] = None
        for tx_id, block_hash, height, position in update.txs_added:
            self._txs[tx_id] = (block_hash, height, position)
        for key in update.history_removed:
            self._history[key] = None
        for row in update.history_added:
            self._history[row[:2]] = row
        if update.tip is not None:
            self._tip = update.tip
        self._rows += rows
        if self.held_bytes > self.max_bytes:
            self.flush()

    def flush(self) -> None:
        """Write every held write in one update (the tip with them); on failure drop them and raise."""
        if not self.dirty:
            return
        coins = self._coins
        # In key order: a B-tree takes sorted rows leaf after leaf, each page loaded once, where rows
        # in hash order would each land on a page of their own.
        update = ChainUpdate(
            coins_removed=sorted(op for op, coin in coins.items() if coin is None),
            coins_added=sorted((op, coin) for op, coin in coins.items() if coin is not None),
            undo_deleted=[h for h, spent in self._undo.items() if spent is None],
            undo_put=[(h, spent) for h, spent in self._undo.items() if spent is not None],
            main_removed=[height for height, h in self._main.items() if h is None],
            main_added=[(height, h) for height, h in self._main.items() if h is not None],
            txs_removed=sorted(t for t, loc in self._txs.items() if loc is None),
            txs_added=sorted((t,) + loc for t, loc in self._txs.items() if loc is not None),
            history_removed=sorted(key for key, row in self._history.items() if row is None),
            history_added=sorted(row for row in self._history.values() if row is not None),
            tip=self._tip,
        )
        try:
            self.inner.apply(update)
        finally:
            self._clear()  # written, or lost with the failed write: either way disk is what holds

    @contextmanager
    def batch(self):
        """The inner store's batch; an exception leaving it drops the held writes too."""
        try:
            with self.inner.batch():
                yield self
        except BaseException:
            self._clear()
            raise

    def set_meta(self, key, value):
        self.inner.set_meta(key, value)

    def close(self) -> None:
        """Flush, then close the inner store.  A flush that fails (disk full) loses only connections: the
        next start finds their blocks stored beyond the tip and connects them again."""
        try:
            self.flush()
        except StoreError:
            pass
        self.inner.close()

    # -- reads -------------------------------------------------------------------------

    def get_meta(self, key):
        return self.inner.get_meta(key)

    def get_entry(self, block_hash):
        return self.inner.get_entry(block_hash)

    def children(self, block_hash):
        return self.inner.children(block_hash)

    def best_entries(self, limit):
        return self.inner.best_entries(limit)

    def get_block(self, block_hash):
        return self.inner.get_block(block_hash)

    def get_undo(self, block_hash):
        if block_hash in self._undo:
            spent = self._undo[block_hash]
            return None if spent is None else list(spent)
        return self.inner.get_undo(block_hash)

    def main_hash(self, height):
        if height in self._main:
            return self._main[height]
        return self.inner.main_hash(height)

    def main_hashes(self, start, limit):
        held = self._main
        if not held or not any(start <= height < start + limit for height in held):
            return self.inner.main_hashes(start, limit)
        found = (self.main_hash(height) for height in range(max(start, 0), start + limit))
        return [h for h in found if h is not None]

    def tip(self):
        return self._tip if self._tip is not None else self.inner.tip()

    def get_coin(self, outpoint):
        coins = self._coins
        if outpoint in coins:
            return coins[outpoint]
        return self.inner.get_coin(outpoint)

    def get_coins(self, outpoints) -> dict:
        """{outpoint: Coin} of the unspent ones among outpoints, held ones from memory, the rest in one read."""
        coins, found, missing = self._coins, {}, []
        for op in outpoints:
            if op in coins:
                coin = coins[op]
                if coin is not None:
                    found[op] = coin
            else:
                missing.append(op)
        if missing:
            get_many = getattr(self.inner, "get_coins", None)
            if get_many is not None:
                found.update(get_many(missing))
            else:
                for op in missing:
                    coin = self.inner.get_coin(op)
                    if coin is not None:
                        found[op] = coin
        return found

    def coins_of(self, payload):
        self.flush()
        return self.inner.coins_of(payload)

    def tx_location(self, tx_id):
        if tx_id in self._txs:
            return self._txs[tx_id]
        return self.inner.tx_location(tx_id)

    def history_of(self, payload, limit, after=None):
        self.flush()
        return self.inner.history_of(payload, limit, after)

    def history_rows(self, payload, limit, after=None):
        self.flush()
        return self.inner.history_rows(payload, limit, after)

    def coin_count(self):
        return self.inner.coin_count() + self._coin_delta
