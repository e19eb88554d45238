"""The miners' shared decisions: nonce ranges cover the nonce space once, in order; staleness (core.mining)."""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.mining import TEMPLATE_MAX_AGE_S, NonceRanges, is_stale


class NonceRangeTests(SynchronousTestCase):
    @given(st.integers(1, 2), st.integers(256, 70_000))
    def test_ranges_cover_the_space_once(self, nonce_size, chunk):
        """Ranges follow each other without gap or overlap and end exactly at the nonce limit."""
        ranges = NonceRanges(nonce_size, chunk)
        expected_start = 0
        while (taken := ranges.take()) is not None:
            start, count = taken
            self.assertEqual(start, expected_start)
            self.assertTrue(0 < count <= chunk)
            expected_start += count
        self.assertEqual(expected_start, 1 << (8 * nonce_size))
        self.assertTrue(ranges.exhausted)

    def test_zero_chunk_refused(self):
        """A range of no nonces is a programming error, refused at once."""
        self.assertRaises(ValueError, NonceRanges, 8, 0)


class StalenessTests(SynchronousTestCase):
    def test_fresh_template_is_kept(self):
        """Same tip, same mempool, younger than the maximum age: keep mining it."""
        self.assertFalse(is_stale(("tip", 3), ("tip", 3), TEMPLATE_MAX_AGE_S - 1))

    def test_new_tip_mempool_or_age_makes_it_stale(self):
        """A new tip, a changed mempool or reaching the maximum age each make the template stale."""
        self.assertTrue(is_stale(("tip", 3), ("new", 3), 0))
        self.assertTrue(is_stale(("tip", 3), ("tip", 4), 0))
        self.assertTrue(is_stale(("tip", 3), ("tip", 3), TEMPLATE_MAX_AGE_S))
