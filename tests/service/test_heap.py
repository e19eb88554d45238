"""Freed heap pages go back to the system where the C library can do it (glibc's malloc_trim)."""

import platform
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from chaincore.service.heap import trim_heap


class RecordingLibc:
    """A C library with malloc_trim that records its calls."""

    def __init__(self):
        self.calls = []

    def malloc_trim(self, pad):
        self.calls.append(pad)
        return 1


class HeapTests(SynchronousTestCase):
    def test_trims_with_malloc_trim(self):
        """With malloc_trim, trim_heap calls it once with no padding kept and says so."""
        libc = RecordingLibc()
        self.assertTrue(trim_heap(libc))
        self.assertEqual(libc.calls, [0])

    def test_without_malloc_trim_does_nothing(self):
        """A C library without malloc_trim (musl, macOS) is left alone."""
        self.assertFalse(trim_heap(object()))

    def test_this_process(self):
        """On glibc, the running process's own malloc_trim is found and called."""
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("malloc_trim is glibc's")
        self.assertTrue(trim_heap())
