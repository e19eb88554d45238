"""SqliteStore: the durable ChainStore, one SQLite file per datadir (schema in schema.sql).

It answers exactly as core.store.MemoryStore does, and applies each ChainUpdate
in one `BEGIN IMMEDIATE ... COMMIT` (ENGINEERING 7): a crash leaves the file at
the previous update or the next, never between.  It is synchronous and meant
for the reactor thread; `batch()` groups many updates into one transaction
for initial sync.  Opening refuses, with a StoreError, any file that is not a
ChainCore store of the same network and genesis: it never starts fresh over data.
"""

import functools
import sqlite3
import struct
from contextlib import contextmanager
from importlib import resources

from chaincore.core.block import Block
from chaincore.core.chainstate import history_rows
from chaincore.core.errors import StoreError  # noqa: F401  (raised here; importers name it from this module too)
from chaincore.core.store import BlockEntry, ChainUpdate
from chaincore.core.tx import Coin, OutPoint

SCHEMA_VERSION = 2  # 2: history rows carry position, amount_delta and coinbase

# Undo data of one block, the coins it spent, in spending order:
#   count u32, then per coin: tx_id (32 bytes), index u32, amount u64,
#   height u32, coinbase u8 (0 or 1), recipient length u8, recipient bytes.
# Integers are big-endian: 50 bytes + the 21-byte payload per coin.
_UNDO_COUNT = struct.Struct(">I")
_UNDO_COIN = struct.Struct(">32sIQIBB")

_ENTRY_COLUMNS = "hash, parent, height, header, chainwork, status, timestamp, target, median_time_past"

# Every read, by name; tests/storage checks that SQLite answers each one from an index.
QUERIES = {
    "meta": "SELECT value FROM meta WHERE key = ?",
    "entry": f"SELECT {_ENTRY_COLUMNS} FROM block_index WHERE hash = ?",
    "children": "SELECT hash FROM block_index WHERE parent = ? ORDER BY hash",
    # The WHERE clause matches the partial index block_index_best word for word.
    "best": f"SELECT {_ENTRY_COLUMNS} FROM block_index WHERE status IN (2, 3)"
            " ORDER BY chainwork DESC, seq LIMIT ?",
    "block": "SELECT raw FROM blocks WHERE hash = ?",
    "undo": "SELECT data FROM undo WHERE hash = ?",
    "main": "SELECT hash FROM main_chain WHERE height = ?",
    "main_range": "SELECT hash FROM main_chain WHERE height >= ? AND height < ? ORDER BY height",
    "tip": "SELECT hash FROM tip WHERE id = 0",
    "coin": "SELECT amount, recipient, height, coinbase FROM utxo WHERE tx_id = ? AND idx = ?",
    "coins_of": "SELECT tx_id, idx, amount, height, coinbase FROM utxo WHERE recipient = ?"
                " ORDER BY height, tx_id, idx",
    "tx": "SELECT block, height, position FROM tx_index WHERE tx_id = ?",
    "history": "SELECT tx_id, height, position, amount_delta, coinbase FROM history WHERE payload = ?"
               " ORDER BY height DESC, tx_id LIMIT ?",
    "history_after": "SELECT tx_id, height, position, amount_delta, coinbase FROM history WHERE payload = ?"
                     " AND (height < ? OR (height = ? AND tx_id > ?)) ORDER BY height DESC, tx_id LIMIT ?",
    "coin_count": "SELECT value FROM store_info WHERE key = 'coin_count'",
}


COINS_PER_READ = 400  # outpoints per get_coins read: 800 parameters, well under SQLite's 32,766


@functools.lru_cache(maxsize=8)
def _coins_query(n: int) -> str:
    """The read of n outpoints' coins: a join of the listed pairs on the primary key (a row-value IN scans)."""
    pairs = ", ".join(["(?, ?)"] * n)
    return (f"SELECT u.tx_id, u.idx, u.amount, u.recipient, u.height, u.coinbase FROM (VALUES {pairs}) AS w"
            " JOIN utxo AS u ON u.tx_id = w.column1 AND u.idx = w.column2")


def encode_undo(spent) -> bytes:
    """The undo bytes of [(OutPoint, Coin)] (layout above)."""
    parts = [_UNDO_COUNT.pack(len(spent))]
    for op, coin in spent:
        if len(op.tx_id) != 32 or len(coin.recipient) > 255:
            raise StoreError(f"cannot encode undo coin {op.tx_id.hex()}:{op.index}")
        parts.append(_UNDO_COIN.pack(op.tx_id, op.index, coin.amount, coin.height,
                                     1 if coin.is_coinbase else 0, len(coin.recipient)))
        parts.append(coin.recipient)
    return b"".join(parts)


def decode_undo(data: bytes) -> list:
    """The [(OutPoint, Coin)] that encode_undo wrote; StoreError if the bytes are damaged."""
    try:
        (count,) = _UNDO_COUNT.unpack_from(data, 0)
        pos, spent = _UNDO_COUNT.size, []
        for _ in range(count):
            tx_id, index, amount, height, coinbase, size = _UNDO_COIN.unpack_from(data, pos)
            pos += _UNDO_COIN.size
            recipient = data[pos:pos + size]
            if len(recipient) != size:
                raise struct.error("recipient cut short")
            pos += size
            spent.append((OutPoint(tx_id, index), Coin(amount, recipient, height, bool(coinbase))))
    except struct.error as e:
        raise StoreError(f"damaged undo data ({e})") from None
    if pos != len(data):
        raise StoreError("damaged undo data (trailing bytes)")
    return spent


def _schema_sql() -> str:
    return resources.files("chaincore.storage").joinpath("schema.sql").read_text(encoding="utf-8")


def _history_schema() -> list:
    """The CREATE statements of the history table and its index, as schema.sql writes them."""
    statements = [part.strip() for part in _schema_sql().split(";")]
    return [stmt[stmt.index("CREATE"):] for stmt in statements
            if "CREATE TABLE history" in stmt or "CREATE INDEX history_recent" in stmt]


def _entry(row) -> BlockEntry:
    block_hash, parent, height, header, chainwork, status, timestamp, target, mtp = row
    return BlockEntry(block_hash, parent, height, header, int.from_bytes(chainwork, "big"), status,
                      timestamp, int.from_bytes(target, "big"), mtp)


class SqliteStore:
    """A ChainStore in one SQLite file at path, written for one network and genesis.

    WAL with synchronous=NORMAL survives any crash of the process; `durable=True`
    (synchronous=FULL) also keeps the last commits through a power cut.
    """

    def __init__(self, path, network_name: str, genesis_hash: bytes, *, durable: bool = False):
        self.path = str(path)
        self._depth = 0          # open transaction levels: 1 for BEGIN, more for SAVEPOINTs
        self._lost = False       # SQLite rolled the whole open transaction back under a savepoint
        self.upgraded = None     # what opening did to bring an older schema up to date (the opener logs it)
        self._opening = (network_name, genesis_hash, durable)
        self._db = None
        self._connect()

    def reopen(self) -> None:
        """Open the file again after close(), checking it as at first; StoreError if it cannot be.

        twistd forks after the node is built: SQLite's locks (POSIX record locks) stay
        with the process that took them, so a connection carried into the daemon would
        hold none, and any other reader's close (a live `.backup`) would delete the
        write-ahead log under it.  The opener closes the store before the fork and the
        node reopens it in its own process.
        """
        if self._db is None:
            self._connect()

    def _connect(self) -> None:
        network_name, genesis_hash, durable = self._opening
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._open(network_name, genesis_hash, durable)
        except sqlite3.OperationalError as e:
            self._abandon()
            raise StoreError(f"cannot open the store {self.path}: {e}") from None
        except sqlite3.DatabaseError as e:
            self._abandon()
            raise StoreError(f"{self.path} is not a ChainCore store or is damaged ({e})") from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    def _open(self, network_name, genesis_hash, durable):
        db = self._db
        # synchronous resets to FULL on every connection (ENGINEERING 7), so set it at each open.
        db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            # An empty file, or one whose first open died before its schema committed: nothing to lose.
            self._create(network_name, genesis_hash)
            return
        if "store_info" not in tables:
            raise StoreError(f"{self.path} is not a ChainCore store (it holds other tables)")
        info = dict(db.execute("SELECT key, value FROM store_info"))
        migrate = info.get("schema_version") == "1"
        if info.get("schema_version") != str(SCHEMA_VERSION) and not migrate:
            raise StoreError(f"{self.path} has store schema version {info.get('schema_version')},"
                             f" this ChainCore reads version {SCHEMA_VERSION}")
        if info.get("network") != network_name or info.get("genesis_hash") != genesis_hash.hex():
            raise StoreError(f"{self.path} holds the '{info.get('network')}' chain with genesis"
                             f" {info.get('genesis_hash')}, not the '{network_name}' chain with genesis"
                             f" {genesis_hash.hex()}")
        if info.get("clean_shutdown") != "1":
            # quick_check reads the whole file (about 1 s per GB), so it runs only after a crash.
            problems = [msg for (msg,) in db.execute("PRAGMA quick_check")]
            if problems != ["ok"]:
                raise StoreError(f"{self.path} is damaged: {problems[0]}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("UPDATE store_info SET value = '0' WHERE key = 'clean_shutdown'")
        if migrate:
            self._rebuild_history()

    def _rebuild_history(self):
        """Bring a version 1 store to version 2: refill the history table from the main chain's blocks
        and undo data, in one transaction (a crash leaves version 1, rebuilt again at the next open)."""
        db = self._db
        heights = db.execute("SELECT count(*) FROM main_chain").fetchone()[0]
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DROP TABLE history")
            for statement in _history_schema():
                db.execute(statement)
            for height, block_hash in db.execute("SELECT height, hash FROM main_chain WHERE height > 0"
                                                 " ORDER BY height").fetchall():
                raw = self._one(QUERIES["block"], (block_hash,))
                undo = self._one(QUERIES["undo"], (block_hash,))
                if raw is None or undo is None:
                    raise StoreError(f"{self.path} lacks the block or undo data of main-chain height {height}")
                rows = history_rows(Block.decode(raw[0]), decode_undo(undo[0]))
                db.executemany("INSERT INTO history (payload, tx_id, height, position, amount_delta, coinbase)"
                               " VALUES (?, ?, ?, ?, ?, ?)",
                               [(p, t, h, pos, d, 1 if cb else 0) for p, t, h, pos, d, cb in rows])
            db.execute("UPDATE store_info SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
            self.upgraded = (f"upgraded the store {self.path} to schema version {SCHEMA_VERSION}: rebuilt the"
                             f" address history of {heights} main-chain blocks")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _create(self, network_name, genesis_hash):
        db = self._db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"cannot put {self.path} in WAL mode (got {mode})")
        # executescript runs BEGIN as written and leaves the transaction open for the rows below.
        db.executescript("BEGIN IMMEDIATE;\n" + _schema_sql())
        try:
            db.executemany("INSERT INTO store_info (key, value) VALUES (?, ?)", [
                ("schema_version", str(SCHEMA_VERSION)), ("network", network_name),
                ("genesis_hash", genesis_hash.hex()), ("clean_shutdown", "0"),
                ("next_entry_seq", "0"), ("coin_count", "0")])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- transactions ---------------------------------------------------------------

    @contextmanager
    def _atomic(self):
        """All writes inside happen or none: a transaction, or a savepoint inside an outer one."""
        db = self._db
        if db is None:
            raise StoreError(f"the store {self.path} is closed")
        level = self._depth
        if self._lost:
            # A SAVEPOINT now would open a fresh transaction and commit writes the batch meant to hold.
            raise StoreError(f"write to {self.path} failed: the batch was rolled back by an earlier failure")
        try:
            db.execute("BEGIN IMMEDIATE" if level == 0 else f"SAVEPOINT level{level}")
        except sqlite3.Error as e:
            raise StoreError(f"cannot write to {self.path}: {e}") from e
        self._depth += 1
        try:
            yield
            db.execute("COMMIT" if level == 0 else f"RELEASE level{level}")
        except BaseException as e:
            if level == 0:
                if db.in_transaction:
                    db.execute("ROLLBACK")
            elif db.in_transaction:
                db.execute(f"ROLLBACK TO level{level}")
                db.execute(f"RELEASE level{level}")
            else:
                # On SQLITE_FULL, IOERR or NOMEM SQLite may roll back the whole transaction, savepoints
                # and all (ENGINEERING 7): everything the batch wrote so far is gone.
                self._lost = True
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"write to {self.path} failed: {e}") from e
            raise
        finally:
            self._depth = level
            if level == 0:
                self._lost = False

    @contextmanager
    def batch(self):
        """Group every apply() and set_meta() inside into one transaction, rolled back as one on an exception.

        An apply() that raises inside a batch undoes only itself; the batch
        still rolls back as a whole if the exception leaves the `with` block.
        When SQLite itself rolled the whole transaction back (disk full), every
        later write inside the batch raises StoreError until it is left.
        """
        with self._atomic():
            yield self

    def apply(self, update: ChainUpdate) -> None:
        """Write update atomically, in ChainUpdate's order: removals, then additions."""
        with self._atomic():
            self._write(update)

    def _write(self, u: ChainUpdate) -> None:
        db = self._db
        counters = dict(db.execute(
            "SELECT key, value FROM store_info WHERE key IN ('next_entry_seq', 'coin_count')"))
        if u.entries:
            seq = int(counters["next_entry_seq"])
            # An entry already stored keeps its seq: replacing it does not make it "seen later".
            db.executemany(
                f"INSERT INTO block_index ({_ENTRY_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (hash) DO UPDATE SET parent = excluded.parent, height = excluded.height,"
                " header = excluded.header, chainwork = excluded.chainwork, status = excluded.status,"
                " timestamp = excluded.timestamp, target = excluded.target,"
                " median_time_past = excluded.median_time_past",
                [(e.hash, e.parent, e.height, e.header, e.chainwork.to_bytes(32, "big"), e.status,
                  e.timestamp, e.target.to_bytes(32, "big"), e.median_time_past, seq + i)
                 for i, e in enumerate(u.entries)])
            db.execute("UPDATE store_info SET value = ? WHERE key = 'next_entry_seq'",
                       (str(seq + len(u.entries)),))
        if u.blocks:
            db.executemany("INSERT OR REPLACE INTO blocks (hash, raw) VALUES (?, ?)", u.blocks)
        coin_count = int(counters["coin_count"])
        if u.coins_removed:
            removed = db.executemany("DELETE FROM utxo WHERE tx_id = ? AND idx = ?",
                                     [(op.tx_id, op.index) for op in u.coins_removed]).rowcount
            if removed != len(u.coins_removed):
                raise StoreError(f"{len(u.coins_removed) - removed} of {len(u.coins_removed)}"
                                 " coins to remove are not in the UTXO set")
            coin_count -= removed
        if u.coins_added:
            rows = [(op.tx_id, op.index, c.amount, c.recipient, c.height, 1 if c.is_coinbase else 0)
                    for op, c in u.coins_added]
            fresh = db.executemany("INSERT OR IGNORE INTO utxo (tx_id, idx, amount, recipient, height,"
                                   " coinbase) VALUES (?, ?, ?, ?, ?, ?)", rows).rowcount
            if fresh != len(rows):
                # Some outpoints were already there: overwrite in list order, as MemoryStore does.
                db.executemany("INSERT OR REPLACE INTO utxo (tx_id, idx, amount, recipient, height,"
                               " coinbase) VALUES (?, ?, ?, ?, ?, ?)", rows)
            coin_count += fresh
        if u.coins_removed or u.coins_added:
            db.execute("UPDATE store_info SET value = ? WHERE key = 'coin_count'", (str(coin_count),))
        if u.undo_deleted:
            db.executemany("DELETE FROM undo WHERE hash = ?", [(h,) for h in u.undo_deleted])
        if u.undo_put:
            db.executemany("INSERT OR REPLACE INTO undo (hash, data) VALUES (?, ?)",
                           [(h, encode_undo(spent)) for h, spent in u.undo_put])
        if u.main_removed:
            db.executemany("DELETE FROM main_chain WHERE height = ?", [(h,) for h in u.main_removed])
        if u.main_added:
            db.executemany("INSERT OR REPLACE INTO main_chain (height, hash) VALUES (?, ?)", u.main_added)
        if u.txs_removed:
            db.executemany("DELETE FROM tx_index WHERE tx_id = ?", [(t,) for t in u.txs_removed])
        if u.txs_added:
            db.executemany("INSERT OR REPLACE INTO tx_index (tx_id, block, height, position)"
                           " VALUES (?, ?, ?, ?)", u.txs_added)
        if u.history_removed:
            db.executemany("DELETE FROM history WHERE payload = ? AND tx_id = ?", u.history_removed)
        if u.history_added:
            db.executemany("INSERT OR REPLACE INTO history (payload, tx_id, height, position, amount_delta,"
                           " coinbase) VALUES (?, ?, ?, ?, ?, ?)",
                           [(p, t, height, position, delta, 1 if coinbase else 0)
                            for p, t, height, position, delta, coinbase in u.history_added])
        if u.tip is not None:
            db.execute("INSERT OR REPLACE INTO tip (id, hash) VALUES (0, ?)", (u.tip,))

    # -- reads ----------------------------------------------------------------------

    def _one(self, sql, params):
        if self._db is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._db.execute(sql, params).fetchone()

    def _all(self, sql, params):
        if self._db is None:
            raise StoreError(f"the store {self.path} is closed")
        return self._db.execute(sql, params).fetchall()

    def get_meta(self, key: str) -> str | None:
        row = self._one(QUERIES["meta"], (key,))
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        """Store one meta value at once (or with the enclosing batch)."""
        with self._atomic():
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_entry(self, block_hash: bytes) -> BlockEntry | None:
        row = self._one(QUERIES["entry"], (block_hash,))
        return None if row is None else _entry(row)

    def children(self, block_hash: bytes) -> list:
        """Hashes of the stored children of block_hash, in byte order."""
        return [h for (h,) in self._all(QUERIES["children"], (block_hash,))]

    def best_entries(self, limit: int) -> list:
        """Entries with data stored and not invalid, most work first; equal work: the one stored first."""
        return [_entry(row) for row in self._all(QUERIES["best"], (limit,))]

    def get_block(self, block_hash: bytes) -> bytes | None:
        row = self._one(QUERIES["block"], (block_hash,))
        return None if row is None else row[0]

    def get_undo(self, block_hash: bytes) -> list | None:
        row = self._one(QUERIES["undo"], (block_hash,))
        return None if row is None else decode_undo(row[0])

    def main_hashes(self, start: int, limit: int) -> list:
        """The stored main-chain hashes of heights start .. start + limit - 1, in height order, in one read."""
        return [block_hash for (block_hash,) in self._all(QUERIES["main_range"], (max(start, 0), start + limit))]

    def main_hash(self, height: int) -> bytes | None:
        row = self._one(QUERIES["main"], (height,))
        return None if row is None else row[0]

    def tip(self) -> bytes | None:
        row = self._one(QUERIES["tip"], ())
        return None if row is None else row[0]

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        row = self._one(QUERIES["coin"], (outpoint.tx_id, outpoint.index))
        return None if row is None else Coin(row[0], row[1], row[2], bool(row[3]))

    def get_coins(self, outpoints) -> dict:
        """{outpoint: Coin} of the unspent ones among outpoints, in one read per COINS_PER_READ of them."""
        if self._db is None:
            raise StoreError(f"the store {self.path} is closed")
        found, outpoints = {}, list(outpoints)
        for start in range(0, len(outpoints), COINS_PER_READ):
            chunk = outpoints[start:start + COINS_PER_READ]
            sql = _coins_query(len(chunk))
            params = [part for op in chunk for part in op]
            for tx_id, idx, amount, recipient, height, coinbase in self._db.execute(sql, params):
                found[OutPoint(tx_id, idx)] = Coin(amount, recipient, height, bool(coinbase))
        return found

    def coins_of(self, payload: bytes) -> list:
        """[(OutPoint, Coin)] paying payload, by height, then tx_id, then index."""
        return [(OutPoint(tx_id, idx), Coin(amount, payload, height, bool(coinbase)))
                for tx_id, idx, amount, height, coinbase in self._all(QUERIES["coins_of"], (payload,))]

    def tx_location(self, tx_id: bytes) -> tuple | None:
        """(block hash, height, position) of a main-chain transaction, or None."""
        row = self._one(QUERIES["tx"], (tx_id,))
        return None if row is None else tuple(row)

    def history_of(self, payload: bytes, limit: int, after: tuple | None = None) -> list:
        """[(tx_id, height)] touching payload, newest first, then by tx_id, at most limit;
        with after=(height, tx_id), only the rows that come after that one."""
        return [row[:2] for row in self.history_rows(payload, limit, after)]

    def history_rows(self, payload: bytes, limit: int, after: tuple | None = None) -> list:
        """history_of's rows in full: [(tx_id, height, position, amount_delta, coinbase)]."""
        if after is not None:
            height, tx_id = after
            rows = self._all(QUERIES["history_after"], (payload, height, height, tx_id, limit))
        else:
            rows = self._all(QUERIES["history"], (payload, limit))
        return [(tx_id, height, position, delta, bool(coinbase)) for tx_id, height, position, delta, coinbase in rows]

    def coin_count(self) -> int:
        """The size of the UTXO set, from a counter kept by apply() (count(*) would scan the table)."""
        return int(self._one(QUERIES["coin_count"], ())[0])

    def close(self) -> None:
        """Mark the shutdown clean and close the file; a second close does nothing."""
        if self._db is None:
            return
        if self._depth:
            raise StoreError(f"cannot close {self.path} inside a batch")
        self._db.execute("UPDATE store_info SET value = '1' WHERE key = 'clean_shutdown'")
        self._db.close()
        self._db = None
