"""secp256k1 keys, signatures and addresses (CONTRACT 3).

Public keys travel as 65-byte uncompressed SEC1 (importing a compressed key
costs as much as a verify).  Signatures are deterministic ECDSA (RFC 6979)
over SHA-256 of the 32-byte signature hash, encoded as 64 bytes r||s with s in
the lower half of the curve order, so a signature has exactly one encoding.
Addresses are Base58Check of a version byte and HASH160 of the public key.
"""

import functools
import hashlib

from Crypto.Hash import RIPEMD160, SHA256
from Crypto.PublicKey import ECC
from Crypto.Signature import DSS

from .errors import BadAddress, BadSignature, Malformed

CURVE = "secp256k1"
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = ORDER // 2
FIELD_PRIME = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
PUBKEY_SIZE = 65
SIGNATURE_SIZE = 64
ADDRESS_VERSION = 0x1C
ADDRESS_PAYLOAD_SIZE = 21  # version byte + 20-byte HASH160

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _ripemd160_hashlib(data: bytes) -> bytes:
    return hashlib.new("ripemd160", data).digest()


def _ripemd160_pycryptodome(data: bytes) -> bytes:
    return RIPEMD160.new(data).digest()


try:  # OpenSSL's RIPEMD-160 is 4x faster, but OpenSSL 3 may leave it out
    _ripemd160 = _ripemd160_hashlib if _ripemd160_hashlib(b"") == _ripemd160_pycryptodome(b"") else None
except ValueError:
    _ripemd160 = None
_ripemd160 = _ripemd160 or _ripemd160_pycryptodome


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256 of data."""
    return _ripemd160(hashlib.sha256(data).digest())


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        try:
            n = n * 58 + _B58_INDEX[c]
        except KeyError:
            raise BadAddress(f"character {c!r} is not Base58") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


@functools.lru_cache(maxsize=65536)
def address_from_payload(payload: bytes) -> str:
    """The Base58Check text of a 21-byte address payload."""
    check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return b58encode(payload + check)


def address_payload(address: str) -> bytes:
    """The 21-byte payload of a Base58Check address; BadAddress if its checksum or form is wrong."""
    if not isinstance(address, str) or not 20 <= len(address) <= 40:
        raise BadAddress(f"not an address: {address!r}"[:120])
    return _decode_address(address)


@functools.lru_cache(maxsize=65536)
def _decode_address(address: str) -> bytes:
    raw = b58decode(address)
    if len(raw) != ADDRESS_PAYLOAD_SIZE + 4:
        raise BadAddress(f"address {address} has the wrong length")
    payload, check = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != check:
        raise BadAddress(f"address {address} fails its checksum (mistyped?)")
    if payload[0] != ADDRESS_VERSION:
        raise BadAddress(f"address {address} has an unknown version byte")
    return payload


def address_of(public_key: bytes) -> str:
    """The address that a 65-byte public key owns."""
    return address_from_payload(bytes((ADDRESS_VERSION,)) + hash160(public_key))


def payload_of(public_key: bytes) -> bytes:
    return bytes((ADDRESS_VERSION,)) + hash160(public_key)


class PrivateKey:
    """A secp256k1 signing key."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: ECC.EccKey):
        if not key.has_private() or "256k1" not in key.curve:
            raise ValueError("not a secp256k1 private key")
        self._key = key
        self.public_key = key.public_key().export_key(format="SEC1", compress=False)

    @classmethod
    def generate(cls) -> "PrivateKey":
        return cls(ECC.generate(curve=CURVE))

    @classmethod
    def from_secret(cls, secret: int) -> "PrivateKey":
        if not 1 <= secret < ORDER:
            raise ValueError("secret out of range")
        return cls(ECC.construct(curve=CURVE, d=secret))

    @property
    def secret(self) -> int:
        return int(self._key.d)

    @property
    def address(self) -> str:
        return address_of(self.public_key)

    def sign(self, sighash: bytes) -> bytes:
        """A deterministic low-S signature of a 32-byte signature hash."""
        sig = DSS.new(self._key, "deterministic-rfc6979").sign(SHA256.new(sighash))
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        if s > HALF_ORDER:
            s = ORDER - s
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def export_pem(self, passphrase: str | None) -> str:
        """PKCS#8 PEM, encrypted with scrypt and AES-256 when a passphrase is given."""
        if passphrase:
            return self._key.export_key(format="PEM", passphrase=passphrase,
                                        protection="scryptAndAES256-CBC", use_pkcs8=True)
        return self._key.export_key(format="PEM", use_pkcs8=True)

    @classmethod
    def import_pem(cls, pem: str, passphrase: str | None) -> "PrivateKey":
        return cls(ECC.import_key(pem, passphrase=passphrase or None))


@functools.lru_cache(maxsize=8192)
def _verifier(public_key: bytes):
    if len(public_key) != PUBKEY_SIZE or public_key[0] != 4:
        raise Malformed("public key must be 65 bytes of uncompressed SEC1")
    x, y = int.from_bytes(public_key[1:33], "big"), int.from_bytes(public_key[33:], "big")
    # SEC1 2.3.4: coordinates at or above p are refused (EccPoint would reduce them mod p),
    # and so is (0, 0), which pycryptodome reads as the point at infinity: under it,
    # (r, s) = (x(kG), z/k) verifies for any k, so anyone could spend its coins.
    if x >= FIELD_PRIME or y >= FIELD_PRIME or (x == 0 and y == 0):
        raise Malformed("public key is not a point on secp256k1")
    try:
        # EccPoint checks the point is on the curve, at a quarter of import_key's cost.
        key = ECC.EccKey(curve=CURVE, point=ECC.EccPoint(x, y, CURVE))
    except ValueError:
        raise Malformed("public key is not a point on secp256k1") from None
    return DSS.new(key, "deterministic-rfc6979")


def check_public_key(public_key: bytes) -> None:
    """Raise Malformed unless public_key is a valid uncompressed secp256k1 point."""
    _verifier(public_key)


class _Digest:
    """What DSS.verify reads of a hash object in deterministic mode: digest(). A hashlib digest wrapped
    this way costs a quarter of a Crypto.Hash object, and verifying is the hot path of validation."""

    __slots__ = ("_digest",)

    def __init__(self, digest: bytes):
        self._digest = digest

    def digest(self) -> bytes:
        return self._digest


def verify(public_key: bytes, sighash: bytes, signature: bytes) -> bool:
    """True when signature is the low-S signature of sighash by public_key."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    s = int.from_bytes(signature[32:], "big")
    if not 1 <= s <= HALF_ORDER:
        return False
    try:
        verifier = _verifier(public_key)
    except Malformed:
        return False
    try:
        verifier.verify(_Digest(hashlib.sha256(sighash).digest()), signature)
    except ValueError:
        return False
    return True


def check_signature(public_key: bytes, sighash: bytes, signature: bytes) -> None:
    if not verify(public_key, sighash, signature):
        raise BadSignature("signature does not verify")
