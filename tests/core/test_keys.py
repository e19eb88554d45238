"""Keys, signatures and addresses (CONTRACT 3): deterministic low-S ECDSA, 65-byte keys, Base58Check.

The signature and public-key tests run once per backend (pycryptodome and
libsecp256k1); the agreement tests check that both give the same bytes and the
same decisions on every case the encoding can express.
"""

import subprocess
import sys

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from chaincore.core import keys
from chaincore.core.errors import BadAddress, BadSignature, Malformed
from chaincore.core.keys import (
    ADDRESS_VERSION, FIELD_PRIME, HALF_ORDER, ORDER, PrivateKey, address_from_payload, address_of,
    address_payload, b58decode, b58encode, check_public_key, check_signature, hash160, payload_of,
    verify,
)
from tests.support.builders import ALICE, BOB
from tests.support.processes import child_env
from tests.support.strategies import FAST

SIGHASH = bytes(range(32))


def _sig(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _split(signature: bytes) -> tuple:
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")


def _forge_for_infinity(sighash: bytes) -> bytes:
    """A signature that verifies under the point at infinity for any sighash, without any secret."""
    k = 12345
    r = int(ECC.construct(curve="secp256k1", d=k).pointQ.x) % ORDER
    z = int.from_bytes(SHA256.new(sighash).digest(), "big") % ORDER
    s = z * pow(k, -1, ORDER) % ORDER
    return _sig(r, min(s, ORDER - s))


AVAILABLE = keys.available_backends()


class BackendTestCase(SynchronousTestCase):
    """Runs its tests with `backend` in use, restoring the previous one afterwards."""

    backend = None

    def setUp(self):
        previous = keys.use_backend(self.backend)
        self.addCleanup(keys.use_backend, previous)


def for_each_backend(cls):
    """One concrete test class per backend from a mixin, skipped where that backend is not installed."""
    made = {}
    for name in keys.BACKEND_NAMES:
        attrs = {"backend": name, "__doc__": f"{cls.__doc__} ({name})"}
        if name not in AVAILABLE:
            attrs["skip"] = f"the {name} backend is not installed"
        made[cls.__name__ + "_" + name] = type(cls.__name__ + "_" + name, (cls, BackendTestCase), attrs)
    return made


class SignatureTests:
    """Signing and verifying."""

    def test_backend_in_use(self):
        """The class's backend is the one signing and verifying."""
        self.assertEqual(keys.backend_name(), self.backend)

    def test_sign_then_verify(self):
        """A signature made by a key verifies under that key's public key."""
        signature = ALICE.sign(SIGHASH)
        self.assertEqual(len(signature), keys.SIGNATURE_SIZE)
        self.assertTrue(verify(ALICE.public_key, SIGHASH, signature))
        check_signature(ALICE.public_key, SIGHASH, signature)

    def test_signatures_are_deterministic(self):
        """Signing the same sighash twice gives the same bytes (RFC 6979)."""
        self.assertEqual(ALICE.sign(SIGHASH), ALICE.sign(SIGHASH))
        self.assertNotEqual(ALICE.sign(SIGHASH), ALICE.sign(bytes(32)))

    def test_signatures_are_low_s(self):
        """Every signature made has s in the lower half of the curve order."""
        for n in range(40):
            _, s = _split(ALICE.sign(n.to_bytes(32, "big")))
            self.assertTrue(1 <= s <= HALF_ORDER)

    def test_high_s_twin_is_refused(self):
        """The high-S twin (r, n - s) of a valid signature, valid in plain ECDSA, is refused."""
        r, s = _split(ALICE.sign(SIGHASH))
        twin = _sig(r, ORDER - s)
        err = self.assertRaises(BadSignature, check_signature, ALICE.public_key, SIGHASH, twin)
        self.assertEqual(err.code, "bad-signature")

    def test_other_key_is_refused(self):
        """A signature by another key does not verify."""
        err = self.assertRaises(BadSignature, check_signature, ALICE.public_key, SIGHASH, BOB.sign(SIGHASH))
        self.assertEqual(err.code, "bad-signature")

    def test_other_sighash_is_refused(self):
        """A signature over another sighash does not verify."""
        self.assertFalse(verify(ALICE.public_key, bytes(32), ALICE.sign(SIGHASH)))

    def test_malformed_signatures_are_refused(self):
        """Signatures of the wrong length, or with r or s zero or out of range, do not verify."""
        good = ALICE.sign(SIGHASH)
        r, s = _split(good)
        for bad in [b"", good[:63], good + b"\0", bytes(64), _sig(0, s), _sig(r, 0), _sig(ORDER, s), _sig(r, ORDER)]:
            self.assertFalse(verify(ALICE.public_key, SIGHASH, bad), bad.hex())

    def test_private_key_range(self):
        """A secret outside [1, n) is refused."""
        self.assertRaises(ValueError, PrivateKey.from_secret, 0)
        self.assertRaises(ValueError, PrivateKey.from_secret, ORDER)
        self.assertEqual(PrivateKey.from_secret(ORDER - 1).secret, ORDER - 1)

    def test_pem_round_trip(self):
        """A key exported to plain PEM imports as the same key (tests/cli covers the slow scrypt form)."""
        plain = ALICE.export_pem(None)
        self.assertEqual(PrivateKey.import_pem(plain, None).public_key, ALICE.public_key)


class PublicKeyTests:
    """Public keys."""

    def test_uncompressed_sec1(self):
        """Public keys are 65 bytes: 0x04, then x and y big-endian."""
        key = ALICE.public_key
        self.assertEqual(len(key), 65)
        self.assertEqual(key[0], 4)
        point = ECC.construct(curve="secp256k1", d=ALICE.secret).pointQ
        self.assertEqual(key[1:], int(point.x).to_bytes(32, "big") + int(point.y).to_bytes(32, "big"))
        check_public_key(key)

    def test_compressed_key_is_refused(self):
        """A 33-byte compressed key is refused, and signatures under it do not verify."""
        compressed = ECC.construct(curve="secp256k1", d=ALICE.secret).public_key().export_key(
            format="SEC1", compress=True)
        err = self.assertRaises(Malformed, check_public_key, compressed)
        self.assertEqual(err.code, "malformed")
        self.assertFalse(verify(compressed, SIGHASH, ALICE.sign(SIGHASH)))

    def test_point_off_the_curve_is_refused(self):
        """65 bytes that are not a point on secp256k1 are refused."""
        off = ALICE.public_key[:-1] + bytes([ALICE.public_key[-1] ^ 1])
        self.assertRaises(Malformed, check_public_key, off)
        self.assertFalse(verify(off, SIGHASH, ALICE.sign(SIGHASH)))

    def test_coordinates_at_or_above_p_are_refused(self):
        """A key whose x is the real x plus p (the same point mod p) is refused, not reduced."""
        x = int.from_bytes(ALICE.public_key[1:33], "big")
        if x + FIELD_PRIME >= 1 << 256:
            x = FIELD_PRIME  # still out of range
        else:
            x += FIELD_PRIME
        alias = b"\x04" + x.to_bytes(32, "big") + ALICE.public_key[33:]
        self.assertRaises(Malformed, check_public_key, alias)
        self.assertFalse(verify(alias, SIGHASH, ALICE.sign(SIGHASH)))

    def test_point_at_infinity_is_refused(self):
        """The all-zero key (pycryptodome's point at infinity), under which anyone can forge, is refused."""
        infinity = b"\x04" + bytes(64)
        self.assertRaises(Malformed, check_public_key, infinity)
        self.assertFalse(verify(infinity, SIGHASH, _forge_for_infinity(SIGHASH)))


    def test_hybrid_prefixes_are_refused(self):
        """SEC1 hybrid keys (prefix 06 or 07, which libsecp256k1 would parse) are refused like any other prefix."""
        for prefix in (2, 3, 6, 7, 5, 0):
            other = bytes((prefix,)) + ALICE.public_key[1:]
            self.assertRaises(Malformed, check_public_key, other)
            self.assertFalse(verify(other, SIGHASH, ALICE.sign(SIGHASH)))

    def test_wrong_lengths_are_refused(self):
        """Keys of 0, 64 or 66 bytes are refused."""
        for bad in (b"", ALICE.public_key[:64], ALICE.public_key + b"\0"):
            self.assertRaises(Malformed, check_public_key, bad)
            self.assertFalse(verify(bad, SIGHASH, ALICE.sign(SIGHASH)))


globals().update(for_each_backend(SignatureTests))
globals().update(for_each_backend(PublicKeyTests))
del SignatureTests, PublicKeyTests


def edge_cases() -> list:
    """(name, public_key, sighash, signature, expected) for every kind of input the encoding can carry."""
    good = ALICE.sign(SIGHASH)
    r, s = _split(good)
    pub = ALICE.public_key
    x = int.from_bytes(pub[1:33], "big")
    y = int.from_bytes(pub[33:], "big")
    return [
        ("valid", pub, SIGHASH, good, True),
        ("high S twin", pub, SIGHASH, _sig(r, ORDER - s), False),
        ("r zero", pub, SIGHASH, _sig(0, s), False),
        ("s zero", pub, SIGHASH, _sig(r, 0), False),
        ("r = n", pub, SIGHASH, _sig(ORDER, s), False),
        ("s = n", pub, SIGHASH, _sig(r, ORDER), False),
        ("r = n + r", pub, SIGHASH, _sig(ORDER + r, s) if ORDER + r < 1 << 256 else _sig((1 << 256) - 1, s), False),
        ("r all ones", pub, SIGHASH, _sig((1 << 256) - 1, s), False),
        ("s = n/2 + 1", pub, SIGHASH, _sig(r, HALF_ORDER + 1), False),
        ("all-zero signature", pub, SIGHASH, bytes(64), False),
        ("63 bytes", pub, SIGHASH, good[:63], False),
        ("65 bytes", pub, SIGHASH, good + b"\0", False),
        ("empty signature", pub, SIGHASH, b"", False),
        ("DER signature", pub, SIGHASH, b"\x30\x44\x02\x20" + good[:32] + b"\x02\x20" + good[32:], False),
        ("other sighash", pub, bytes(32), good, False),
        ("other key", BOB.public_key, SIGHASH, good, False),
        ("infinity key with forged signature", b"\x04" + bytes(64), SIGHASH, _forge_for_infinity(SIGHASH), False),
        ("off-curve key", pub[:-1] + bytes([pub[-1] ^ 1]), SIGHASH, good, False),
        ("x = p", b"\x04" + FIELD_PRIME.to_bytes(32, "big") + pub[33:], SIGHASH, good, False),
        ("y + p", pub[:33] + (y + FIELD_PRIME).to_bytes(32, "big"), SIGHASH, good, False)
        if y + FIELD_PRIME < 1 << 256 else ("y = p", pub[:33] + FIELD_PRIME.to_bytes(32, "big"), SIGHASH, good, False),
        ("x + p", b"\x04" + (x + FIELD_PRIME).to_bytes(32, "big") + pub[33:], SIGHASH, good, False)
        if x + FIELD_PRIME < 1 << 256 else ("x all ones", b"\x04" + b"\xff" * 32 + pub[33:], SIGHASH, good, False),
        ("negated key (x, p - y)", pub[:33] + (FIELD_PRIME - y).to_bytes(32, "big"), SIGHASH, good, False),
        ("hybrid prefix", bytes((6 + (y & 1),)) + pub[1:], SIGHASH, good, False),
        ("compressed key", bytes((2 + (y & 1),)) + pub[1:33], SIGHASH, good, False),
        ("empty key", b"", SIGHASH, good, False),
    ]


AGREEMENT = settings(max_examples=300, deadline=None, database=None)


class BackendAgreementTests(SynchronousTestCase):
    if len(AVAILABLE) < 2:
        skip = "only one backend is installed"

    def each_backend(self, fn):
        """fn() under each backend, as {name: result}."""
        results = {}
        for name in AVAILABLE:
            previous = keys.use_backend(name)
            try:
                results[name] = fn()
            finally:
                keys.use_backend(previous)
        return results

    def test_edge_cases_decide_alike(self):
        """Every edge case of keys and signatures gets the expected, identical decision from both backends."""
        for name, public_key, sighash, signature, expected in edge_cases():
            decisions = self.each_backend(lambda: verify(public_key, sighash, signature))
            self.assertEqual(set(decisions.values()), {expected}, f"{name}: {decisions}")

    def test_public_key_checks_agree(self):
        """Both backends accept and refuse the same public keys."""
        for name, public_key, _, _, _ in edge_cases():
            def accepted():
                try:
                    check_public_key(public_key)
                except Malformed:
                    return False
                return True
            decisions = self.each_backend(accepted)
            self.assertEqual(len(set(decisions.values())), 1, f"{name}: {decisions}")

    @AGREEMENT
    @given(st.integers(1, ORDER - 1), st.binary(min_size=32, max_size=32))
    def test_random_signatures_are_byte_identical(self, secret, sighash):
        """For random keys and sighashes both backends sign the same bytes, and both accept both."""
        key = PrivateKey.from_secret(secret)
        signatures = self.each_backend(lambda: key.sign(sighash))
        self.assertEqual(len(set(signatures.values())), 1, signatures)
        signature = signatures[AVAILABLE[0]]
        self.assertEqual(set(self.each_backend(lambda: verify(key.public_key, sighash, signature)).values()),
                         {True})

    @AGREEMENT
    @given(st.integers(1, ORDER - 1), st.binary(min_size=32, max_size=32), st.integers(0, 511), st.integers(0, 7))
    def test_random_corruptions_decide_alike(self, secret, sighash, position, bit):
        """A signature, key or sighash with one bit flipped gets the same decision from both backends."""
        key = PrivateKey.from_secret(secret)
        signature = key.sign(sighash)
        blob = bytearray(key.public_key + sighash + signature)
        blob[position % len(blob)] ^= 1 << bit
        blob = bytes(blob)
        public_key, sighash2, signature2 = blob[:65], blob[65:97], blob[97:]
        decisions = self.each_backend(lambda: verify(public_key, sighash2, signature2))
        self.assertEqual(len(set(decisions.values())), 1, decisions)

    @FAST
    @given(st.binary(min_size=65, max_size=65), st.binary(min_size=64, max_size=64))
    def test_random_bytes_decide_alike(self, public_key, signature):
        """Random 65-byte keys and 64-byte signatures get the same decision from both backends."""
        for candidate in (public_key, b"\x04" + public_key[1:]):
            decisions = self.each_backend(lambda: verify(candidate, SIGHASH, signature))
            self.assertEqual(len(set(decisions.values())), 1, decisions)


class BackendChoiceTests(SynchronousTestCase):
    def test_pycryptodome_is_always_available(self):
        """pycryptodome works wherever ChainCore does, and the fastest available backend is the default."""
        self.assertIn("pycryptodome", AVAILABLE)
        previous = keys.use_backend(None)
        self.addCleanup(keys.use_backend, previous)
        self.assertEqual(keys.backend_name(), AVAILABLE[0])

    def test_unknown_backend_is_refused(self):
        """An unknown backend name is a ValueError naming the known ones, and the backend in use stays."""
        before = keys.backend_name()
        err = self.assertRaises(ValueError, keys.use_backend, "openssl")
        self.assertIn("pycryptodome", str(err))
        self.assertEqual(keys.backend_name(), before)

    def test_environment_forces_a_backend(self):
        """CHAINCORE_CRYPTO names the backend a fresh process uses; an unknown name stops it with that name."""
        def run(value):
            env = child_env(CHAINCORE_CRYPTO=value)
            return subprocess.run([sys.executable, "-c", "from chaincore.core import keys; print(keys.backend_name())"],
                                  env=env, capture_output=True, text=True, timeout=60)
        for name in AVAILABLE:
            self.assertEqual(run(name).stdout.strip(), name)
        bad = run("nope")
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("CHAINCORE_CRYPTO='nope'", bad.stderr)


    def test_verifying_with_libsecp256k1_leaves_pycryptodome_unloaded(self):
        """A process that only verifies through libsecp256k1 (a worker) never imports pycryptodome."""
        if "libsecp256k1" not in AVAILABLE:
            raise SkipTest("the libsecp256k1 backend is not installed")
        code = ("import sys; from chaincore.core import keys, rules; "
                "assert rules.verify_batch([(keys._GENERATOR, bytes(32), bytes(64))]) == 0; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'Crypto'))")
        done = subprocess.run([sys.executable, "-c", code], env=child_env(CHAINCORE_CRYPTO="libsecp256k1"),
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.stdout.strip(), "[]", done.stderr)


class AddressTests(SynchronousTestCase):
    def test_hash160_vector(self):
        """hash160 is RIPEMD-160 of SHA-256 (checked against the known value for empty input)."""
        self.assertEqual(hash160(b"").hex(), "b472a266d0bd89c13706a4132ccfb16f7c3b9fcb")

    def test_address_round_trip(self):
        """An address decodes to its 21-byte payload: the version byte 0x1C and HASH160 of the key."""
        address = address_of(ALICE.public_key)
        self.assertEqual(address, ALICE.address)
        payload = address_payload(address)
        self.assertEqual(payload, payload_of(ALICE.public_key))
        self.assertEqual(payload, bytes((ADDRESS_VERSION,)) + hash160(ALICE.public_key))
        self.assertEqual(address_from_payload(payload), address)

    def test_address_starts_with_c(self):
        """Version byte 0x1C makes every address a 34-character string starting with 'C'."""
        for n in range(20):
            address = address_from_payload(bytes((ADDRESS_VERSION,)) + bytes([n]) * 20)
            self.assertEqual(address[0], "C")
            self.assertEqual(len(address), 34)
        self.assertEqual(address_from_payload(bytes((ADDRESS_VERSION,)) + b"\xff" * 20)[0], "C")

    def test_mistyped_address_is_refused(self):
        """An address with one character changed fails its checksum: BadAddress."""
        address = ALICE.address
        typo = address[:10] + ("2" if address[10] != "2" else "3") + address[11:]
        err = self.assertRaises(BadAddress, address_payload, typo)
        self.assertEqual(err.code, "bad-address")
        self.assertIn("checksum", str(err))

    def test_wrong_version_is_refused(self):
        """A well-formed Base58Check string with another version byte is refused."""
        other = address_from_payload(b"\x00" + hash160(ALICE.public_key))
        err = self.assertRaises(BadAddress, address_payload, other)
        self.assertEqual(err.code, "bad-address")
        self.assertIn("version", str(err))

    def test_malformed_addresses_are_refused(self):
        """Non-Base58 characters, wrong lengths and non-strings are refused with BadAddress."""
        address = ALICE.address
        for bad in [address[:-1] + "0", address[:-1] + "l", "O" + address[1:], address[:19], address + "1" * 7,
                    b58encode(b"\x1c" + bytes(20)), "", None, 42]:
            err = self.assertRaises(BadAddress, address_payload, bad)
            self.assertEqual(err.code, "bad-address")

    def test_base58_leading_zeros(self):
        """Leading zero bytes are kept as leading '1's, both ways."""
        for data in [b"", b"\0", b"\0\0\x01", b"\x01\0", bytes(range(30))]:
            self.assertEqual(b58decode(b58encode(data)), data)
        self.assertEqual(b58encode(b"\0\0\x01"), "112")
