"""Transactions: outpoints, inputs, outputs, their canonical bytes and hashes (CONTRACT 3).

A transaction's bytes are: version u32, inputs (compact count, then each:
prev tx_id 32 bytes, output_index u32, public_key var_bytes, signature
var_bytes), outputs (compact count, then each: amount u64, recipient 21-byte
address payload), lock_time u32.  tx_id = sha256d(bytes).  The signature hash
is sha256d of the same bytes with every signature emptied, so a signature
covers every input (with its public key) and every output.

The coinbase has one input with the null outpoint (32 zero bytes, index
0xFFFFFFFF), an empty public key, and in `signature` its coinbase data, which
starts with the block height as u32: two coinbases never share a tx_id.
"""

from dataclasses import dataclass
import functools
import struct
from typing import NamedTuple

from .encoding import Reader, cached, compact_size, sha256d, u32, u64, var_bytes
from .errors import Malformed
from .keys import ADDRESS_PAYLOAD_SIZE, address_from_payload

_U32 = struct.Struct("<I")
_OUTPUT = struct.Struct(f"<Q{ADDRESS_PAYLOAD_SIZE}s")


def _compact(data: bytes, pos: int, limit: int) -> tuple:
    """(count, position after it) of the compact size at pos, one of 0xFD and up: minimal and within limit."""
    r = Reader(data)
    r.skip_to(pos)
    n = r.count(limit)
    return n, r.pos


NULL_TXID = bytes(32)
NULL_INDEX = 0xFFFFFFFF
MAX_TX_INPUTS = 10_000
MAX_TX_OUTPUTS = 10_000
MAX_COINBASE_DATA = 100
MIN_COINBASE_DATA = 4


class OutPoint(NamedTuple):
    """An output named by its transaction's id and its index there.

    A named tuple rather than a dataclass: outpoints are dictionary keys on
    every hot path (the UTXO view, the mempool's spends, a block's spent set),
    and a tuple hashes and compares in C.
    """

    tx_id: bytes
    index: int


new_outpoint = functools.partial(tuple.__new__, OutPoint)  # new_outpoint((tx_id, index)), built in C


@dataclass(frozen=True, slots=True)
class TxIn:
    prev_tx_id: bytes
    output_index: int
    public_key: bytes = b""
    signature: bytes = b""

    @property
    def outpoint(self) -> OutPoint:
        return OutPoint(self.prev_tx_id, self.output_index)

    @property
    def is_null(self) -> bool:
        return self.prev_tx_id == NULL_TXID and self.output_index == NULL_INDEX

    def encode(self, with_signature: bool = True) -> bytes:
        return (self.prev_tx_id + u32(self.output_index) + var_bytes(self.public_key)
                + var_bytes(self.signature if with_signature else b""))


@dataclass(frozen=True, slots=True)
class TxOut:
    amount: int
    recipient: bytes  # 21-byte address payload

    @property
    def address(self) -> str:
        return address_from_payload(self.recipient)

    def encode(self) -> bytes:
        return u64(self.amount) + self.recipient


@dataclass(frozen=True)
class Transaction:
    version: int
    inputs: tuple
    outputs: tuple
    lock_time: int = 0

    def encode(self) -> bytes:
        return self.raw

    @cached
    def raw(self) -> bytes:
        return self._encode(True)

    def _encode(self, with_signatures: bool) -> bytes:
        # The same bytes as TxIn.encode and TxOut.encode, inlined: this runs twice per
        # transaction validated (tx_id and sighash).
        parts = [u32(self.version), compact_size(len(self.inputs))]
        for i in self.inputs:
            signature = i.signature if with_signatures else b""
            parts += (i.prev_tx_id, u32(i.output_index), compact_size(len(i.public_key)), i.public_key,
                      compact_size(len(signature)), signature)
        parts.append(compact_size(len(self.outputs)))
        for o in self.outputs:
            parts += (u64(o.amount), o.recipient)
        parts.append(u32(self.lock_time))
        return b"".join(parts)

    @cached
    def tx_id(self) -> bytes:
        return sha256d(self.raw)

    @cached
    def sighash(self) -> bytes:
        """What every input's signature signs: the transaction with all signatures emptied."""
        spans = self.__dict__.pop("_signature_spans", None)
        if spans is None:
            return sha256d(self._encode(False))
        # decoded from bytes: splice an empty signature (one 00 byte) over each signature field
        raw, parts, pos = self.raw, [], 0
        for start, end in spans:
            parts += (raw[pos:start], b"\x00")
            pos = end
        parts.append(raw[pos:])
        return sha256d(b"".join(parts))

    @property
    def size(self) -> int:
        return len(self.raw)

    @cached
    def is_coinbase(self) -> bool:
        return len(self.inputs) == 1 and self.inputs[0].is_null

    @property
    def output_total(self) -> int:
        return sum(o.amount for o in self.outputs)

    @property
    def coinbase_height(self) -> int | None:
        """The height a coinbase commits to, or None for another transaction."""
        if not self.is_coinbase or len(self.inputs[0].signature) < 4:
            return None
        return int.from_bytes(self.inputs[0].signature[:4], "little")

    def with_signatures(self, signatures) -> "Transaction":
        inputs = tuple(TxIn(i.prev_tx_id, i.output_index, i.public_key, s)
                       for i, s in zip(self.inputs, signatures, strict=True))
        return Transaction(self.version, inputs, self.outputs, self.lock_time)

    @classmethod
    def read(cls, r: Reader) -> "Transaction":
        """The transaction at r's position; its bytes (for tx_id and sighash) are the slice it was read from.

        The same checks as reading field by field through r (canonical compact
        sizes, the limits, no short field), made on r's bytes directly: this is
        the hot path of taking in blocks.  Every slice is checked at the end
        (a slice past the end is short, and the position then lies past it).
        """
        data, start = r.buffer_at()
        end = len(data)
        try:
            (version,) = _U32.unpack_from(data, start)
            pos = start + 4
            n_inputs = data[pos]
            pos += 1
            if n_inputs >= 0xFD:
                n_inputs, pos = _compact(data, pos - 1, MAX_TX_INPUTS)
            inputs, spans = [], []
            for _ in range(n_inputs):
                prev_tx_id = data[pos:pos + 32]
                (index,) = _U32.unpack_from(data, pos + 32)
                size = data[pos + 36]
                if size > 65:  # (a compact size of 0xFD and up is over the limit as well)
                    raise Malformed(f"byte string of {size} bytes over the limit of 65")
                pos += 37
                public_key = data[pos:pos + size]
                pos += size
                signature_at = pos
                size = data[pos]
                if size > MAX_COINBASE_DATA:
                    raise Malformed(f"byte string of {size} bytes over the limit of {MAX_COINBASE_DATA}")
                pos += 1
                signature = data[pos:pos + size]
                pos += size
                inputs.append(TxIn(prev_tx_id, index, public_key, signature))
                spans.append((signature_at - start, pos - start))
            n_outputs = data[pos]
            pos += 1
            if n_outputs >= 0xFD:
                n_outputs, pos = _compact(data, pos - 1, MAX_TX_OUTPUTS)
            outputs = []
            for _ in range(n_outputs):
                amount, recipient = _OUTPUT.unpack_from(data, pos)
                pos += _OUTPUT.size
                outputs.append(TxOut(amount, recipient))
            (lock_time,) = _U32.unpack_from(data, pos)
            pos += 4
        except (IndexError, struct.error):
            raise Malformed(f"truncated data: a transaction at offset {start} runs past the end") from None
        if pos > end:
            raise Malformed(f"truncated data: a transaction at offset {start} runs past the end")
        r.skip_to(pos)
        tx = cls(version, tuple(inputs), tuple(outputs), lock_time)
        # The decoder accepts only the canonical form, so the slice is what encode() would give:
        # keep it rather than build it again to hash.
        tx.__dict__["raw"] = data[start:pos]
        tx.__dict__["_signature_spans"] = spans
        return tx

    @classmethod
    def decode(cls, data: bytes) -> "Transaction":
        r = Reader(data)
        tx = cls.read(r)
        r.finish()
        return tx


def make_coinbase(height: int, outputs, extra: bytes = b"") -> Transaction:
    """A coinbase for the block at height, paying outputs [(payload, amount)], with optional extra data."""
    data = u32(height) + extra
    if len(data) > MAX_COINBASE_DATA:
        raise Malformed("coinbase extra data too long")
    return Transaction(1, (TxIn(NULL_TXID, NULL_INDEX, b"", data),),
                       tuple(TxOut(amount, payload) for payload, amount in outputs), 0)


@dataclass(frozen=True, slots=True)
class Coin:
    """An unspent output as the UTXO set holds it."""

    amount: int
    recipient: bytes
    height: int
    is_coinbase: bool
