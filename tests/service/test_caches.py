"""Caches that would grow with the chain or the key set are bounded in bytes (at each entry's measured size)."""

import inspect
import os

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import chainstate, keys, rules
from chaincore.service.node import SIG_CACHE_ENTRY_BYTES, SigCache


class CacheBoundTests(SynchronousTestCase):
    def test_sig_cache_keeps_to_its_bytes(self):
        """The node's verified-transaction cache never holds more entries than its byte budget allows."""
        cache = SigCache(max_bytes=10 * SIG_CACHE_ENTRY_BYTES)
        for _ in range(100):
            cache.add(os.urandom(32))
            self.assertLessEqual(len(cache) * SIG_CACHE_ENTRY_BYTES, 10 * SIG_CACHE_ENTRY_BYTES)

    def test_sig_cache_forgets_one_at_a_time(self):
        """At its bound, the verified-transaction cache drops one old tx_id for each new one, not all of them."""
        cache = SigCache(max_bytes=10 * SIG_CACHE_ENTRY_BYTES)
        old = [os.urandom(32) for _ in range(10)]
        for tx_id in old:
            cache.add(tx_id)
        cache.add(os.urandom(32))
        self.assertEqual(len(cache), 10)
        self.assertEqual(sum(tx_id in cache for tx_id in old), 9)
        cache.add(old[-1])  # one it holds already: nothing leaves
        self.assertEqual(len(cache), 10)

    def test_key_and_address_caches_fit_their_budgets(self):
        """The address caches and the backend's key cache hold at most their byte budgets' worth of entries."""
        for cache in (keys.address_from_payload, keys._decode_address):
            self.assertLessEqual(cache.cache_info().maxsize * keys._ADDRESS_ENTRY_BYTES, keys.ADDRESS_CACHE_BYTES)
        for name in keys.available_backends():
            backend = keys._load(name)
            cached = getattr(backend, "_verifier", None) or backend._pubkey
            self.assertLessEqual(cached.cache_info().maxsize * keys._KEY_ENTRY_BYTES[name], keys.KEY_CACHE_BYTES)

    def test_entry_and_signature_caches_fit_their_budgets(self):
        """The chain state's block entries and the verified-check cache default to their byte budgets."""
        cache = rules.SignatureCache()
        self.assertLessEqual(cache.max_entries * rules.SignatureCache.ENTRY_BYTES, rules.SignatureCache.MAX_BYTES)
        self.assertEqual(len(cache._table), cache.max_entries * rules.SignatureCache.ENTRY_BYTES)
        default = inspect.signature(chainstate.ChainState).parameters["cache_entries"].default
        self.assertLessEqual(default * chainstate.ENTRY_BYTES, chainstate.ENTRY_CACHE_BYTES)


class SigCacheTests(SynchronousTestCase):
    def test_oldest_go_first(self):
        """Past its bound the verified-transaction cache forgets its oldest entry only, not everything."""
        cache = SigCache(max_bytes=3 * SIG_CACHE_ENTRY_BYTES)
        for tx_id in (b"a", b"b", b"c", b"d"):
            cache.add(tx_id)
        self.assertEqual([t in cache for t in (b"a", b"b", b"c", b"d")], [False, True, True, True])
