"""Block headers, blocks, the merkle root and proof of work (CONTRACT 3).

The header is 120 bytes: version u32, height u32, previous_hash 32,
merkle_root 32, timestamp u64, target 32 (big-endian), nonce u64.  Its hash
is sha256d of those bytes, shown as hex in digest order; proof of work holds
when int(hash, 16) <= target.  A block is its header, a compact count, then
its transactions.  The merkle tree pairs ids with sha256d(0x01 || l || r) and
carries an odd last node up unchanged (no duplication, so no CVE-2012-2459).
"""

from dataclasses import dataclass
import struct

from .encoding import Reader, cached, compact_size, sha256d
from .errors import Malformed
from .tx import Transaction

HEADER_SIZE = 120
NONCE_OFFSET = 112
NONCE_SIZE = 8
MAX_BLOCK_TXS = 100_000
_HEADER = struct.Struct("<II32s32sQ32sQ")


@dataclass(frozen=True)
class Header:
    version: int
    height: int
    previous_hash: bytes
    merkle_root: bytes
    timestamp: int
    target: int
    nonce: int

    @cached
    def raw(self) -> bytes:
        return _HEADER.pack(self.version, self.height, self.previous_hash, self.merkle_root,
                            self.timestamp, self.target.to_bytes(32, "big"), self.nonce)

    def encode(self) -> bytes:
        return self.raw

    @cached
    def hash(self) -> bytes:
        return sha256d(self.raw)

    @property
    def has_valid_pow(self) -> bool:
        return int.from_bytes(self.hash, "big") <= self.target

    @classmethod
    def decode(cls, raw: bytes) -> "Header":
        """The header of 120 bytes raw, which it keeps as its bytes (its hash is sha256d of raw itself)."""
        if len(raw) != HEADER_SIZE:
            raise Malformed(f"a header is {HEADER_SIZE} bytes, not {len(raw)}")
        raw = raw if type(raw) is bytes else bytes(raw)
        v, h, prev, mr, ts, target, nonce = _HEADER.unpack(raw)
        header = cls(v, h, prev, mr, ts, int.from_bytes(target, "big"), nonce)
        header.__dict__["raw"] = raw  # every field has one encoding, so raw is what packing gives
        return header

    def with_nonce(self, nonce: int) -> "Header":
        return Header(self.version, self.height, self.previous_hash, self.merkle_root,
                      self.timestamp, self.target, nonce)


@dataclass(frozen=True)
class Block:
    header: Header
    transactions: tuple

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    @cached
    def raw(self) -> bytes:
        return b"".join([self.header.raw, compact_size(len(self.transactions))]
                        + [tx.raw for tx in self.transactions])

    def encode(self) -> bytes:
        return self.raw

    @property
    def size(self) -> int:
        return len(self.raw)

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        """The block encoded by data; it, its header and its transactions keep their slices of data as bytes."""
        r = Reader(data)
        header = Header.decode(r.take(HEADER_SIZE))
        txs = tuple(Transaction.read(r) for _ in range(r.count(MAX_BLOCK_TXS)))
        r.finish()
        block = cls(header, txs)
        block.__dict__["raw"] = r.since(0)
        return block

    def with_nonce(self, nonce: int) -> "Block":
        return Block(self.header.with_nonce(nonce), self.transactions)


def merkle_root(tx_ids) -> bytes:
    """The merkle root of a list of transaction ids (32 zero bytes for none)."""
    level = list(tx_ids)
    if not level:
        return bytes(32)
    while len(level) > 1:
        nxt = [sha256d(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def block_work(target: int) -> int:
    """The expected number of hashes to meet target: 2**256 // (target + 1)."""
    return (1 << 256) // (target + 1)
