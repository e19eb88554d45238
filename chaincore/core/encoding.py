"""Canonical byte encoding: the only bytes ChainCore ever hashes or signs.

Integers are fixed-width little-endian; counts and byte strings carry a
compact-size length (Bitcoin's varint, minimal form only, so every value has
exactly one encoding).  docs/protocol.md describes every layout built from
these pieces.
"""

import hashlib
import struct

from .errors import Malformed

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class cached:
    """A computed attribute stored in the instance's __dict__ on first use.

    functools.cached_property, without its per-instance lock (Python 3.11
    takes one on every first read, which costs a microsecond on the hot
    paths that read tx_id, raw and sighash once per transaction).  Frozen
    dataclasses keep their __dict__ writable this way, so a decoder may also
    set the value itself.
    """

    def __init__(self, func):
        self.func, self.name, self.__doc__ = func, func.__name__, func.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


_sha256 = hashlib.sha256


def sha256d(data: bytes) -> bytes:
    """Double SHA-256 of data, in digest order."""
    return _sha256(_sha256(data).digest()).digest()


def u32(value: int) -> bytes:
    return _U32.pack(value)


def u64(value: int) -> bytes:
    return _U64.pack(value)


def compact_size(n: int) -> bytes:
    """The minimal compact-size encoding of a non-negative integer n."""
    if n < 0xFD:
        return bytes((n,))
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def var_bytes(data: bytes) -> bytes:
    return compact_size(len(data)) + data


class Reader:
    """Reads the canonical encoding from a bytes object, refusing short or non-minimal input."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes):
        self._data = data if type(data) is bytes else bytes(data)  # slices of it become objects' bytes
        self._pos = 0

    @property
    def pos(self) -> int:
        """The offset of the next byte to read."""
        return self._pos

    def buffer_at(self) -> tuple:
        """(the whole input as bytes, the position): for a decoder that reads many fields at once."""
        return self._data, self._pos

    def skip_to(self, pos: int) -> None:
        """Move to pos (a decoder reading on its own has checked the bytes up to it)."""
        if not self._pos <= pos <= len(self._data):
            raise Malformed(f"truncated data: position {pos} is past the end")
        self._pos = pos

    def since(self, start: int) -> bytes:
        """The bytes read from offset start up to here."""
        return self._data[start:self._pos]

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise Malformed(f"truncated data: wanted {n} bytes at offset {self._pos}")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def compact_size(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        width = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
        n = int.from_bytes(self.take(width), "little")
        if compact_size(n)[0] != first:
            raise Malformed("non-minimal compact size")
        return n

    def var_bytes(self, limit: int) -> bytes:
        n = self.compact_size()
        if n > limit:
            raise Malformed(f"byte string of {n} bytes over the limit of {limit}")
        return self.take(n)

    def count(self, limit: int) -> int:
        n = self.compact_size()
        if n > limit:
            raise Malformed(f"count {n} over the limit of {limit}")
        return n

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def done(self) -> bool:
        return self._pos == len(self._data)

    def finish(self) -> None:
        if not self.done():
            raise Malformed(f"{len(self._data) - self._pos} trailing bytes")
