"""Keys, signatures and addresses (CONTRACT 3): deterministic low-S ECDSA, 65-byte keys, Base58Check."""

from Crypto.Hash import SHA256
from Crypto.PublicKey import ECC
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import keys
from chaincore.core.errors import BadAddress, BadSignature, Malformed
from chaincore.core.keys import (
    ADDRESS_VERSION, FIELD_PRIME, HALF_ORDER, ORDER, PrivateKey, address_from_payload, address_of,
    address_payload, b58decode, b58encode, check_public_key, check_signature, hash160, payload_of,
    verify,
)
from tests.support.builders import ALICE, BOB

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


class SignatureTests(SynchronousTestCase):
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


class PublicKeyTests(SynchronousTestCase):
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
