"""Compact blocks (as BIP 152): a header, 6-byte short ids of its transactions and the coinbase in full.

A node that holds most of a block's transactions in its mempool rebuilds the
block from this form and asks only for the ones it lacks.  The form travels as
JSON or as bytes (docs/protocol.md 12); either is refused before any work when
it claims more transactions, or more prefilled bytes, than a block can hold.  Short ids are a
keyed hash (BLAKE2b, keyed with the block's hash) of each tx_id, so nobody
can make two transactions collide in every block; a collision in our mempool,
or a rebuilt block whose merkle root is wrong, means "fetch the full block".
Pure: values in, values out.
"""

import hashlib
from dataclasses import dataclass

from . import jsonview
from .block import HEADER_SIZE, Block, Header, merkle_root
from .encoding import Reader, compact_size, var_bytes
from .errors import Malformed
from .tx import Transaction

SHORT_ID_BYTES = 6
SENT_TO_HEADER = b"X-ChainCore-Sent-To"  # the peers an announcement of a block went to as well (protocol 12)
MAX_SENT_TO = 64                          # tags in one such header; a longer list is no hint
MAX_COMPACT_TXS = 100_000
# the smallest transaction a block can hold: one input (empty key and signature), one output
MIN_TX_BYTES = 4 + 1 + (32 + 4 + 1 + 1) + 1 + (8 + 21) + 4


def max_block_txs(max_block_size: int) -> int:
    """The most transactions a block of max_block_size bytes can hold: the bound of a compact form's slots."""
    return max(1, (max_block_size - HEADER_SIZE - 1) // MIN_TX_BYTES)


def max_compact_bytes(max_block_size: int) -> int:
    """The largest compact form in bytes a block of max_block_size bytes can have (the body cap to read)."""
    return max_block_size + 2 * 9


def short_id(key: bytes, tx_id: bytes) -> bytes:
    """The 6-byte short id of tx_id in the block whose key is key."""
    return hashlib.blake2b(tx_id, key=key, digest_size=SHORT_ID_BYTES).digest()


def block_key(block_hash: bytes) -> bytes:
    """The short-id key of a block: the first 16 bytes of its hash."""
    return block_hash[:16]


def compact_to_json(block: Block) -> dict:
    """The compact form of block as JSON: header, short ids (one hex string) and the prefilled coinbase."""
    key = block_key(block.hash)
    return {"header": jsonview.header_to_json(block.header),
            "short_ids": b"".join(short_id(key, tx.tx_id) for tx in block.transactions[1:]).hex(),
            "prefilled": [{"index": 0, "transaction": jsonview.tx_to_json(block.transactions[0])}]}


def compact_to_bytes(block: Block, prefill=()) -> bytes:
    """The compact form of block in bytes (docs/protocol.md 12): header, compact(n) short ids, compact(k)
    prefilled transactions as (compact(index), var_bytes(tx)); the coinbase is always prefilled, and so are
    the transactions at the indexes in prefill (those the receiver is expected to lack, as BIP 152 allows)."""
    key = block_key(block.hash)
    full = sorted({0} | {i for i in prefill if 0 < i < len(block.transactions)})
    in_full = set(full)
    ids = [short_id(key, tx.tx_id) for i, tx in enumerate(block.transactions) if i not in in_full]
    return b"".join((block.header.raw, compact_size(len(ids)), *ids, compact_size(len(full)),
                     *(compact_size(i) + var_bytes(block.transactions[i].raw) for i in full)))


@dataclass(frozen=True)
class CompactBlock:
    """A parsed compact block: the header, the slots of its transactions (a Transaction or a short id)."""

    header: object
    slots: tuple           # per transaction index: a Transaction (prefilled) or bytes (its short id)

    @property
    def hash(self) -> bytes:
        return self.header.hash


def parse_compact_bytes(data: bytes, max_block_size: int) -> CompactBlock:
    """A CompactBlock from its bytes; Malformed for anything off.  Counts are checked against what a block of
    max_block_size can hold and against the bytes left before anything is allocated or decoded, and the
    prefilled transactions together may not pass the block size."""
    if len(data) > max_compact_bytes(max_block_size):
        raise Malformed(f"a compact block of {len(data)} bytes is over {max_compact_bytes(max_block_size)}")
    r = Reader(data)
    header = Header.decode(r.take(HEADER_SIZE))
    limit = max_block_txs(max_block_size)
    n_ids = r.count(limit)
    if n_ids * SHORT_ID_BYTES > r.remaining():
        raise Malformed(f"compact: {n_ids} short ids in {r.remaining()} bytes")
    ids = r.take(n_ids * SHORT_ID_BYTES)
    n_prefilled = r.count(limit - n_ids)
    if n_prefilled * 2 > r.remaining():  # each takes at least an index and a length
        raise Malformed(f"compact: {n_prefilled} prefilled transactions in {r.remaining()} bytes")
    count, budget = n_ids + n_prefilled, max_block_size - HEADER_SIZE
    slots = [None] * count
    for n in range(n_prefilled):
        index = r.compact_size()
        if index >= count:
            raise Malformed(f"compact: prefilled[{n}] index {index} is past the {count} transactions")
        if slots[index] is not None:
            raise Malformed(f"compact: prefilled[{n}] fills index {index} twice")
        raw = r.var_bytes(budget)  # the length is checked before the bytes are read or decoded
        budget -= len(raw)
        slots[index] = Transaction.decode(raw)
    r.finish()
    if not slots or slots[0] is None:
        raise Malformed("compact: the coinbase (index 0) must be prefilled")
    rest = iter(ids[i:i + SHORT_ID_BYTES] for i in range(0, len(ids), SHORT_ID_BYTES))
    return CompactBlock(header, tuple(s if s is not None else next(rest) for s in slots))


def parse_compact(obj, max_money: int = 21_000_000 * 100_000_000, max_txs: int = MAX_COMPACT_TXS) -> CompactBlock:
    """A CompactBlock from its JSON form (at most max_txs transactions); Malformed naming the field if any
    part is off."""
    obj = jsonview.require_dict(obj, "compact")
    header = jsonview.parse_header(jsonview.field(obj, "header", "compact"), "compact.header")
    ids_hex = jsonview.field(obj, "short_ids", "compact")
    if not isinstance(ids_hex, str) or len(ids_hex) % (2 * SHORT_ID_BYTES):
        raise Malformed("compact.short_ids must be a hex string of 6-byte ids")
    if len(ids_hex) > 2 * SHORT_ID_BYTES * max_txs:
        raise Malformed(f"compact.short_ids: more than {max_txs} transactions")
    ids = jsonview.require_hex(ids_hex, "compact.short_ids", max_size=SHORT_ID_BYTES * max_txs) \
        if ids_hex else b""
    prefilled = jsonview.require_list(jsonview.field(obj, "prefilled", "compact"), "compact.prefilled", 1000)
    count = len(ids) // SHORT_ID_BYTES + len(prefilled)
    if count > max_txs:
        raise Malformed(f"compact: {count} transactions, more than {max_txs}")
    slots = [None] * count
    for n, item in enumerate(prefilled):
        item = jsonview.require_dict(item, f"compact.prefilled[{n}]")
        index = jsonview.require_int(jsonview.field(item, "index", "prefilled"), "prefilled.index", hi=count - 1)
        if slots[index] is not None:
            raise Malformed(f"compact.prefilled[{n}] fills index {index} twice")
        slots[index] = jsonview.parse_tx(jsonview.field(item, "transaction", "prefilled"),
                                         f"compact.prefilled[{n}].transaction", max_money)
    if not slots or slots[0] is None:
        raise Malformed("compact: the coinbase (index 0) must be prefilled")
    rest = iter(ids[i:i + SHORT_ID_BYTES] for i in range(0, len(ids), SHORT_ID_BYTES))
    slots = [s if s is not None else next(rest) for s in slots]
    return CompactBlock(header, tuple(slots))


@dataclass(frozen=True)
class Reconstruction:
    """What a mempool made of a compact block: the transactions found (None where missing), the missing
    indexes, and whether two mempool transactions shared a short id the block uses (then: fetch it whole)."""

    txs: tuple
    missing: tuple
    collision: bool


def reconstruct(compact: CompactBlock, candidates, sid_of=short_id) -> Reconstruction:
    """Fill compact's slots from candidates (transactions, e.g. the mempool's); pure.  sid_of(key, tx_id)
    is the short-id function (a parameter so tests can make collisions happen)."""
    key = block_key(compact.hash)
    wanted = {s for s in compact.slots if isinstance(s, bytes)}
    by_id, collided = {}, set()
    for tx in candidates:
        sid = sid_of(key, tx.tx_id)
        if sid not in wanted:
            continue
        if sid in by_id and by_id[sid].tx_id != tx.tx_id:
            collided.add(sid)
        by_id[sid] = tx
    if collided or len(wanted) < sum(isinstance(s, bytes) for s in compact.slots):
        # two of our transactions share an id the block uses, or the block repeats an id: no guessing
        return Reconstruction((), (), True)
    txs, missing = [], []
    for index, slot in enumerate(compact.slots):
        if isinstance(slot, bytes):
            tx = by_id.get(slot)
            if tx is None:
                missing.append(index)
            txs.append(tx)
        else:
            txs.append(slot)
    return Reconstruction(tuple(txs), tuple(missing), False)


def fill(compact: CompactBlock, found: tuple, delivered) -> Block | None:
    """The block made of found plus delivered (the missing transactions, in index order), or None when
    something does not fit: a delivered transaction with another short id, or a wrong merkle root."""
    key = block_key(compact.hash)
    delivered = list(delivered)
    txs = []
    for index, tx in enumerate(found):
        if tx is None:
            if not delivered:
                return None
            tx = delivered.pop(0)
            if short_id(key, tx.tx_id) != compact.slots[index]:
                return None
        txs.append(tx)
    if delivered or merkle_root([tx.tx_id for tx in txs]) != compact.header.merkle_root:
        return None
    return Block(compact.header, tuple(txs))


def peer_tag(url: str) -> str:
    """A peer's 4-byte tag in X-ChainCore-Sent-To: BLAKE2b-32 of its URL, as 8 hex digits."""
    return hashlib.blake2b(url.encode(), digest_size=4).hexdigest()


def sent_to_value(tags) -> bytes:
    """The X-ChainCore-Sent-To value naming tags (peer_tag), each once, the first MAX_SENT_TO of them."""
    return ",".join(list(dict.fromkeys(tags))[:MAX_SENT_TO]).encode()


def parse_sent_to(value) -> frozenset:
    """The tags an X-ChainCore-Sent-To value names; empty for a missing value or one that is not a list of at
    most MAX_SENT_TO tags (the header is a hint: junk is ignored, not refused)."""
    if not value:
        return frozenset()
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    tags = value.split(",")
    if len(tags) > MAX_SENT_TO or not all(len(t) == 8 and all(c in "0123456789abcdef" for c in t) for t in tags):
        return frozenset()
    return frozenset(tags)
