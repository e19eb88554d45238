"""CPU budgets of signature checking: the verified-check cache and the recently-rejected set.

A counting verifier stands in for ECDSA where only the number of checks
matters; one test runs real signatures to show the cache answers as verify_batch.
"""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.errors import BadSignature, FeeTooLow, MissingInput, NotFound, TooManyAncestors
from chaincore.core.rules import RecentRejects, SignatureCache, signature_checks, verify_batch, verify_cached
from chaincore.core.tx import OutPoint
from tests.support.builders import ALICE, BOB, CAROL, signed_tx
from tests.support.strategies import FAST

TIP_A, TIP_B = b"\xaa" * 32, b"\xbb" * 32


class CountingVerify:
    """verify_batch over fake checks: a check is good unless its signature is b"bad"; counts what it sees."""

    def __init__(self):
        self.verified = 0
        self.batches = []

    def __call__(self, checks):
        self.batches.append(list(checks))
        for n, (_, _, signature) in enumerate(checks):
            self.verified += 1
            if signature == b"bad":
                return n
        return -1


def check(n: int, signature: bytes = b"good"):
    return (bytes([n % 256]) * 65, b"\x01" * 32, signature)


def many(n: int):
    """The n-th of many distinct checks (check() repeats after 256)."""
    return (n.to_bytes(4, "big") * 16 + b"\x04", b"\x01" * 32, b"good")


def naive_first_bad(checks) -> int:
    return next((n for n, (_, _, sig) in enumerate(checks) if sig == b"bad"), -1)


class SignatureCacheTests(SynchronousTestCase):

    def test_amplification_costs_two_verifies(self):
        """Thousands of identical checks and one bad one last cost two verifies, and the bad index is exact."""
        cache, verify = SignatureCache(), CountingVerify()
        checks = [check(1)] * 5000 + [check(2, b"bad")]
        self.assertEqual(verify_cached(checks, cache, verify), 5000)
        self.assertEqual(verify.verified, 2)
        self.assertEqual(verify_cached(checks, cache, verify), 5000)
        self.assertEqual(verify.verified, 3)  # the good one is cached; the bad one is tried again

    def test_verified_checks_are_not_verified_again(self):
        """A batch whose checks verified before reaches the verifier not at all."""
        cache, verify = SignatureCache(), CountingVerify()
        checks = [check(n) for n in range(10)]
        self.assertEqual(verify_cached(checks, cache, verify), -1)
        self.assertEqual(verify_cached(list(reversed(checks)), cache, verify), -1)
        self.assertEqual((verify.verified, len(verify.batches)), (10, 1))

    def test_checks_after_a_bad_one_are_not_cached(self):
        """Only the checks the verifier vouched for are cached: those after the first bad one are not."""
        cache, verify = SignatureCache(), CountingVerify()
        verify_cached([check(1), check(2, b"bad"), check(3)], cache, verify)
        self.assertIn(check(1), cache)
        self.assertNotIn(check(2, b"bad"), cache)
        self.assertNotIn(check(3), cache)

    def test_bounded_in_bytes(self):
        """The cache holds at most max_bytes // 32 checks, however many it is given, and the newest is always in."""
        cache = SignatureCache(max_bytes=64 * 32, salt=b"fixed")
        for n in range(1000):
            cache.add(many(n))
            self.assertIn(many(n), cache)
            self.assertLessEqual(len(cache), 64)
        self.assertEqual(cache.max_entries, 64)

    def test_full_cache_forgets_a_few_at_a_time(self):
        """Adding to a full cache forgets at most one old check per new one, never the whole cache at once."""
        cache = SignatureCache(max_bytes=256 * 32, salt=b"fixed")
        for n in range(2000):
            cache.add(many(n))
        held = {n for n in range(2000) if many(n) in cache}
        cache.add(many(2000))
        after = {n for n in range(2000) if many(n) in cache}
        self.assertLessEqual(len(held - after), 1)
        self.assertGreater(len(after), 0.8 * 256)  # two slots a key keep the table well filled

    def test_recent_checks_stay(self):
        """After a table's worth of new checks, most of the last quarter of them are still held."""
        cache = SignatureCache(max_bytes=1024 * 32, salt=b"fixed")
        for n in range(4096):
            cache.add(many(n))
        recent = sum(many(n) in cache for n in range(4096 - 256, 4096))
        self.assertGreater(recent, 0.75 * 256)

    def test_salt_changes_every_key(self):
        """Two caches with different salts key the same check differently, so slots cannot be aimed at from outside."""
        a, b = SignatureCache(max_bytes=1024, salt=b"a"), SignatureCache(max_bytes=1024, salt=b"b")
        self.assertNotEqual(a.key(check(1)), b.key(check(1)))

    def test_fields_do_not_run_together(self):
        """Moving bytes from one field to the next makes another check, not a cache hit."""
        cache = SignatureCache()
        cache.add((b"ab", b"c", b"d"))
        self.assertNotIn((b"a", b"bc", b"d"), cache)

    @FAST
    @given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=40), st.integers(1, 8))
    def test_same_answer_as_verify_batch(self, spec, bound):
        """Whatever was cached before, verify_cached names the same first bad check as verifying them all."""
        cache, verify = SignatureCache(max_bytes=bound * 32), CountingVerify()
        checks = [check(n, b"bad" if bad else b"good") for n, bad in spec]
        for _ in range(2):
            self.assertEqual(verify_cached(checks, cache, verify), naive_first_bad(checks))
        self.assertLessEqual(len(cache), max(2, bound))

    def test_real_signatures(self):
        """With ECDSA, a transaction with a forged last signature is found bad at that input."""
        spends = [(OutPoint(bytes([n]) * 32, 0), key) for n, key in enumerate((ALICE, BOB, CAROL))]
        good = signed_tx(spends, [(BOB, 1000)])
        forged = good.with_signatures([i.signature for i in good.inputs[:2]] + [good.inputs[0].signature])
        cache = SignatureCache()
        self.assertEqual(verify_cached(signature_checks(good), cache), -1)
        self.assertEqual(verify_cached(signature_checks(forged), cache), verify_batch(signature_checks(forged)))
        self.assertEqual(verify_cached(signature_checks(forged), cache), 2)


class RecentRejectsTests(SynchronousTestCase):

    def test_refusal_is_repeated(self):
        """A refused tx_id is refused again with the same error class, without checking it."""
        rejects = RecentRejects()
        self.assertTrue(rejects.add(b"t" * 32, BadSignature("input 3 signature does not verify"), TIP_A))
        again = rejects.refusal(b"t" * 32, TIP_A)
        self.assertIsInstance(again, BadSignature)
        self.assertEqual(again.code, "bad-signature")
        self.assertIsNone(rejects.refusal(b"u" * 32, TIP_A))

    def test_cleared_when_the_tip_changes(self):
        """A new tip forgets every refusal: a transaction may have become valid (a fee or a limit)."""
        rejects = RecentRejects()
        rejects.add(b"t" * 32, TooManyAncestors("chain too long"), TIP_A)
        self.assertIsNone(rejects.refusal(b"t" * 32, TIP_B))
        self.assertEqual(len(rejects), 0)

    def test_missing_inputs_and_our_errors_are_not_kept(self):
        """A missing input (its parent may come next) and errors that are not the sender's fault are not kept."""
        rejects = RecentRejects()
        self.assertFalse(rejects.add(b"m" * 32, MissingInput("unknown"), TIP_A))
        self.assertFalse(rejects.add(b"n" * 32, NotFound("gone"), TIP_A))
        self.assertFalse(rejects.add(b"o" * 32, RuntimeError("bug"), TIP_A))
        self.assertTrue(rejects.add(b"f" * 32, FeeTooLow("cheap"), TIP_A))
        self.assertEqual(len(rejects), 1)

    def test_malleated_copy_is_not_shadowed(self):
        """A copy of a valid transaction with a bad signature has its own tx_id: refusing it spares the original."""
        good = signed_tx([(OutPoint(b"\x05" * 32, 0), ALICE)], [(BOB, 1000)])
        forged = good.with_signatures([BOB.sign(good.sighash)])
        self.assertNotEqual(good.tx_id, forged.tx_id)
        rejects = RecentRejects()
        rejects.add(forged.tx_id, BadSignature("bad"), TIP_A)
        self.assertIsNone(rejects.refusal(good.tx_id, TIP_A))

    def test_bounded(self):
        """Past max_entries the oldest refusal is forgotten first."""
        rejects = RecentRejects(max_entries=2)
        for n in range(3):
            rejects.add(bytes([n]) * 32, FeeTooLow("cheap"), TIP_A)
        self.assertEqual(len(rejects), 2)
        self.assertIsNone(rejects.refusal(bytes([0]) * 32, TIP_A))
        self.assertIsNotNone(rejects.refusal(bytes([2]) * 32, TIP_A))
