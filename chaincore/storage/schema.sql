-- The ChainCore store schema (version 2), created in one transaction on first open.
--
-- Hashes, tx_ids and address payloads are raw bytes (BLOB).  Chainwork is a
-- 32-byte big-endian BLOB, so comparing blobs compares the numbers.  Every
-- query of storage/sqlite.py walks an index below; none scans a table.

-- The store's own facts: schema_version, network, genesis_hash,
-- clean_shutdown ('1' while closed cleanly) and next_entry_seq.
CREATE TABLE store_info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- ChainStore.get_meta / set_meta, owned by the chain state.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- The block tree.  seq orders entries by first insertion: best_entries breaks
-- chainwork ties by it (the chain seen first wins, CONTRACT 4), and replacing
-- an entry (a status change) keeps it.
CREATE TABLE block_index (
    hash             BLOB PRIMARY KEY,
    parent           BLOB NOT NULL,
    height           INTEGER NOT NULL,
    header           BLOB NOT NULL,
    chainwork        BLOB NOT NULL,
    status           INTEGER NOT NULL,
    timestamp        INTEGER NOT NULL,
    target           BLOB NOT NULL,
    median_time_past INTEGER NOT NULL,
    seq              INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX block_index_children ON block_index (parent, hash);

-- Only entries whose data is stored and not invalid (DATA_STORED = 2,
-- FULLY_VALID = 3 in core/store.py) can be best; the query repeats this
-- WHERE clause word for word so SQLite picks the partial index.
CREATE INDEX block_index_best ON block_index (chainwork DESC, seq)
    WHERE status IN (2, 3);

CREATE TABLE blocks (
    hash BLOB PRIMARY KEY,
    raw  BLOB NOT NULL
);

-- Spent coins of a connected block, encoded as documented in storage/sqlite.py.
CREATE TABLE undo (
    hash BLOB PRIMARY KEY,
    data BLOB NOT NULL
);

CREATE TABLE main_chain (
    height INTEGER PRIMARY KEY,
    hash   BLOB NOT NULL
);

-- A single row (id 0) once the chain has a tip.
CREATE TABLE tip (
    id   INTEGER PRIMARY KEY CHECK (id = 0),
    hash BLOB NOT NULL
);

CREATE TABLE utxo (
    tx_id     BLOB NOT NULL,
    idx       INTEGER NOT NULL,
    amount    INTEGER NOT NULL,
    recipient BLOB NOT NULL,
    height    INTEGER NOT NULL,
    coinbase  INTEGER NOT NULL,
    PRIMARY KEY (tx_id, idx)
) WITHOUT ROWID;

-- coins_of answers in (height, tx_id, idx) order straight from this index.
CREATE INDEX utxo_recipient ON utxo (recipient, height, tx_id, idx);

CREATE TABLE tx_index (
    tx_id    BLOB PRIMARY KEY,
    block    BLOB NOT NULL,
    height   INTEGER NOT NULL,
    position INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per (address, main-chain transaction touching it) with what /history
-- shows of it, so a page of history is an index read and no block decode:
-- amount_delta is what the transaction paid the address minus what it spent
-- from it, position its place in its block.  Version 1 stores had no
-- position, amount_delta or coinbase; opening one rebuilds this table.
CREATE TABLE history (
    payload      BLOB NOT NULL,
    tx_id        BLOB NOT NULL,
    height       INTEGER NOT NULL,
    position     INTEGER NOT NULL,
    amount_delta INTEGER NOT NULL,
    coinbase     INTEGER NOT NULL,
    PRIMARY KEY (payload, tx_id)
) WITHOUT ROWID;

-- history_of and history_rows answer newest first, then by tx_id, from this
-- index alone (it covers every column they read).
CREATE INDEX history_recent ON history (payload, height DESC, tx_id, position, amount_delta, coinbase);
