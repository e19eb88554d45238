"""search_nonce finds exactly the nonces a brute-force loop over Header.has_valid_pow finds."""

import hashlib

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import NONCE_OFFSET, NONCE_SIZE, Header
from chaincore.core.pow import nonce_limit, search_nonce
from chaincore.core.params import REGTEST

HEADER = Header(1, 7, bytes(range(32)), bytes(range(32, 64)), 1_796_000_420, (1 << 256) >> 6, 0)


def brute_force(header: Header, start: int, count: int):
    """The first nonce in [start, start + count) meeting the header's target, the slow obvious way."""
    for nonce in range(start, start + count):
        if header.with_nonce(nonce).has_valid_pow:
            return nonce
    return None


class SearchNonceTests(SynchronousTestCase):
    def search(self, header, start, count, target=None):
        return search_nonce(header.raw, NONCE_OFFSET, NONCE_SIZE, header.target if target is None else target,
                            start, count)

    def test_finds_the_first_valid_nonce(self):
        """From several starts, the nonce found is the first one Header.has_valid_pow accepts."""
        for start in (0, 1, 500, 2**40):
            expected = brute_force(HEADER, start, 2_000)
            self.assertIsNotNone(expected)
            self.assertEqual(self.search(HEADER, start, 2_000), expected)

    def test_nonce_in_the_header_bytes_is_ignored(self):
        """Whatever nonce the given header bytes hold, the search starts at start."""
        self.assertEqual(self.search(HEADER.with_nonce(12345), 0, 2_000), brute_force(HEADER, 0, 2_000))

    def test_none_when_the_range_has_no_solution(self):
        """A range without a valid nonce gives None, and so does an empty range."""
        first = brute_force(HEADER, 0, 2_000)
        self.assertIsNone(self.search(HEADER, 0, first))
        self.assertIsNone(self.search(HEADER, 0, 0))
        self.assertIsNone(self.search(HEADER, 0, 1_000, target=0))

    def test_trivial_target_takes_the_start(self):
        """With the highest possible target every nonce is valid, so the start itself is returned."""
        self.assertEqual(self.search(HEADER, 99, 10, target=(1 << 256) - 1), 99)
        regtest = HEADER.with_nonce(0)
        found = self.search(regtest, 0, 100, target=REGTEST.pow_limit)
        self.assertLessEqual(int.from_bytes(regtest.with_nonce(found).hash, "big"), REGTEST.pow_limit)

    def test_target_equal_to_the_hash_is_met(self):
        """Proof of work holds when the hash equals the target exactly (<=, CONTRACT 3)."""
        exact = int.from_bytes(HEADER.with_nonce(5).hash, "big")
        self.assertEqual(self.search(HEADER, 5, 1, target=exact), 5)
        self.assertIsNone(self.search(HEADER, 5, 1, target=exact - 1))

    def test_nonce_in_the_middle_of_the_header(self):
        """A nonce followed by more header bytes is written at its offset (little-endian)."""
        raw = bytes(range(40))
        found = search_nonce(raw, 10, 4, (1 << 256) >> 5, 0, 1_000)
        for nonce in range(found + 1):
            candidate = raw[:10] + nonce.to_bytes(4, "little") + raw[14:]
            digest = hashlib.sha256(hashlib.sha256(candidate).digest()).digest()
            self.assertEqual(int.from_bytes(digest, "big") <= (1 << 256) >> 5, nonce == found)

    def test_range_is_cut_at_the_nonce_size(self):
        """Nonces that do not fit in nonce_size bytes are never tried."""
        raw = bytes(8)
        self.assertEqual(nonce_limit(1), 256)
        self.assertIsNone(search_nonce(raw, 7, 1, 0, 250, 100))
        self.assertEqual(search_nonce(raw, 7, 1, (1 << 256) - 1, 255, 100), 255)

    def test_bad_arguments(self):
        """A nonce that does not fit the header, or a negative range, is a ValueError."""
        self.assertRaises(ValueError, search_nonce, bytes(120), 115, 8, 1, 0, 1)
        self.assertRaises(ValueError, search_nonce, bytes(120), 0, 0, 1, 0, 1)
        self.assertRaises(ValueError, search_nonce, bytes(120), 112, 8, 1, -1, 1)
