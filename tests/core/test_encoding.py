"""The canonical encoding: fixed-width little-endian integers, minimal compact sizes, sha256d."""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.encoding import Reader, compact_size, sha256d, u32, u64, var_bytes
from chaincore.core.errors import Malformed

BOUNDARIES = [
    (0, "00"), (0xFC, "fc"), (0xFD, "fdfd00"), (0xFFFF, "fdffff"), (0x10000, "fe00000100"),
    (0xFFFFFFFF, "feffffffff"), (0x100000000, "ff0000000001000000"),
    (0xFFFFFFFFFFFFFFFF, "ffffffffffffffffff"),
]


class EncodingTests(SynchronousTestCase):
    def test_sha256d_vector(self):
        """sha256d is SHA-256 applied twice, in digest order."""
        self.assertEqual(sha256d(b"").hex(), "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456")
        self.assertEqual(sha256d(b"abc"), hashlib.sha256(hashlib.sha256(b"abc").digest()).digest())

    def test_fixed_width_integers_are_little_endian(self):
        """u32 and u64 are little-endian and refuse values that do not fit."""
        self.assertEqual(u32(0x01020304).hex(), "04030201")
        self.assertEqual(u64(1).hex(), "0100000000000000")
        self.assertRaises(Exception, u32, 1 << 32)
        self.assertRaises(Exception, u64, -1)

    def test_compact_size_boundaries(self):
        """Compact sizes use the shortest of 1, 3, 5 or 9 bytes, little-endian after the marker."""
        for n, expected in BOUNDARIES:
            self.assertEqual(compact_size(n).hex(), expected, n)
            self.assertEqual(Reader(compact_size(n)).compact_size(), n)

    def test_non_minimal_compact_size_is_refused(self):
        """A compact size written longer than needed is refused, so every count has one encoding."""
        for raw in ["fdfc00", "fd0000", "feffff0000", "fe00000000", "ffffffffff00000000", "ff0000000000000000"]:
            err = self.assertRaises(Malformed, Reader(bytes.fromhex(raw)).compact_size)
            self.assertEqual(err.code, "malformed")

    def test_var_bytes(self):
        """var_bytes is a compact length then the bytes; reading honours a size limit."""
        self.assertEqual(var_bytes(b"abc"), b"\x03abc")
        self.assertEqual(Reader(var_bytes(b"x" * 300)).var_bytes(300), b"x" * 300)
        self.assertRaises(Malformed, Reader(var_bytes(b"x" * 301)).var_bytes, 300)

    def test_count_limit(self):
        """A count above its limit is refused before anything is allocated."""
        self.assertEqual(Reader(compact_size(10)).count(10), 10)
        self.assertRaises(Malformed, Reader(compact_size(11)).count, 10)

    def test_truncated_input_is_refused(self):
        """Reading past the end is Malformed, not an IndexError or a short value."""
        self.assertRaises(Malformed, Reader(b"\x01\x02\x03").u32)
        self.assertRaises(Malformed, Reader(b"").compact_size)
        self.assertRaises(Malformed, Reader(b"\xfd\x01").compact_size)
        self.assertRaises(Malformed, Reader(b"\x05ab").var_bytes, 10)

    def test_trailing_bytes_are_refused(self):
        """finish() refuses unread bytes; done() tells whether all were read."""
        r = Reader(b"\x01\x00\x00\x00\xff")
        self.assertEqual(r.u32(), 1)
        self.assertFalse(r.done())
        self.assertRaises(Malformed, r.finish)
        self.assertEqual(r.take(1), b"\xff")
        self.assertTrue(r.done())
        r.finish()
