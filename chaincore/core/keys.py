"""secp256k1 keys, signatures and addresses (CONTRACT 3).

Public keys travel as 65-byte uncompressed SEC1 (importing a compressed key
costs as much as a verify).  Signatures are deterministic ECDSA (RFC 6979)
over SHA-256 of the 32-byte signature hash, encoded as 64 bytes r||s with s in
the lower half of the curve order, so a signature has exactly one encoding.
Addresses are Base58Check of a version byte and HASH160 of the public key.

Two backends sign and verify: pycryptodome, always there, and libsecp256k1
through coincurve (`pip install 'chaincore[fast]'`, 9-12x faster), chosen when
importable, at the first key operation (a process that never needs one never
loads one).  CHAINCORE_CRYPTO=pycryptodome|libsecp256k1 forces one.  Both see
the same encoding checks here first and give the same bytes and decisions.
"""

import functools
import hashlib
import os

from .errors import BadAddress, BadSignature, Malformed

CURVE = "secp256k1"
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = ORDER // 2
FIELD_PRIME = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F
PUBKEY_SIZE = 65
SIGNATURE_SIZE = 64
ADDRESS_VERSION = 0x1C
ADDRESS_PAYLOAD_SIZE = 21  # version byte + 20-byte HASH160

_ZERO32 = bytes(32)
_ORDER_BYTES = ORDER.to_bytes(32, "big")
_HALF_ORDER_BYTES = HALF_ORDER.to_bytes(32, "big")

# Caches are bounded in bytes: each holds at most its budget, at the measured size of one entry
# (tracemalloc, Python 3.11), so what the node keeps does not grow with the chain or the key set.
ADDRESS_CACHE_BYTES = 2_000_000   # each way
_ADDRESS_ENTRY_BYTES = 220        # a 21-byte payload, a 34-character address and the cache's link
KEY_CACHE_BYTES = 4_000_000       # parsed public keys of the backend in use
_KEY_ENTRY_BYTES = {"pycryptodome": 500, "libsecp256k1": 200}  # an EccKey and its DSS / a secp256k1_pubkey

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _ripemd160_hashlib(data: bytes) -> bytes:
    h = _RIPEMD160_PROTO.copy()  # copying a fresh object costs half of hashlib.new("ripemd160")
    h.update(data)
    return h.digest()


def _ripemd160_pycryptodome(data: bytes) -> bytes:
    from Crypto.Hash import RIPEMD160  # loaded only where OpenSSL lacks RIPEMD-160
    return RIPEMD160.new(data).digest()


_RIPEMD160_EMPTY = bytes.fromhex("9c1185a5c5e9fc54612808977ee8f548b2258d31")
try:  # OpenSSL's RIPEMD-160 is 4x faster, but OpenSSL 3 may leave it out
    _RIPEMD160_PROTO = hashlib.new("ripemd160")
    _ripemd160 = _ripemd160_hashlib if _ripemd160_hashlib(b"") == _RIPEMD160_EMPTY else _ripemd160_pycryptodome
except ValueError:
    _ripemd160 = _ripemd160_pycryptodome
_sha256 = hashlib.sha256


def hash160(data: bytes) -> bytes:
    """RIPEMD-160 of SHA-256 of data."""
    return _ripemd160(_sha256(data).digest())


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


@functools.lru_cache(maxsize=ADDRESS_CACHE_BYTES // _ADDRESS_ENTRY_BYTES)
def address_from_payload(payload: bytes) -> str:
    """The Base58Check text of a 21-byte address payload."""
    check = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return b58encode(payload + check)


def address_payload(address: str) -> bytes:
    """The 21-byte payload of a Base58Check address; BadAddress if its checksum or form is wrong."""
    if not isinstance(address, str) or not 20 <= len(address) <= 40:
        raise BadAddress(f"not an address: {address!r}"[:120])
    return _decode_address(address)


@functools.lru_cache(maxsize=ADDRESS_CACHE_BYTES // _ADDRESS_ENTRY_BYTES)
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


_VERSION_BYTE = bytes((ADDRESS_VERSION,))


def payload_of(public_key: bytes) -> bytes:
    return _VERSION_BYTE + _ripemd160(_sha256(public_key).digest())


def _coordinates(public_key: bytes) -> tuple:
    """(x, y) of a 65-byte uncompressed SEC1 key, or Malformed: the encoding rules both backends share."""
    if len(public_key) != PUBKEY_SIZE or public_key[0] != 4:
        raise Malformed("public key must be 65 bytes of uncompressed SEC1")
    x, y = int.from_bytes(public_key[1:33], "big"), int.from_bytes(public_key[33:], "big")
    # SEC1 2.3.4: coordinates at or above p are refused (EccPoint would reduce them mod p),
    # and so is (0, 0), which pycryptodome reads as the point at infinity: under it,
    # (r, s) = (x(kG), z/k) verifies for any k, so anyone could spend its coins.
    if x >= FIELD_PRIME or y >= FIELD_PRIME or (x == 0 and y == 0):
        raise Malformed("public key is not a point on secp256k1")
    return x, y


class _Digest:
    """What DSS.verify reads of a hash object in deterministic mode: digest(). A hashlib digest wrapped
    this way costs a quarter of a Crypto.Hash object, and verifying is the hot path of validation."""

    __slots__ = ("_digest",)

    def __init__(self, digest: bytes):
        self._digest = digest

    def digest(self) -> bytes:
        return self._digest


class _Pycryptodome:
    """ECDSA by pycryptodome: always installed, the slower of the two."""

    name = "pycryptodome"

    def __init__(self):
        # loaded only when this backend is chosen: a libsecp256k1 worker never imports pycryptodome
        from Crypto.Hash import SHA256
        from Crypto.PublicKey import ECC  # (as above)
        from Crypto.Signature import DSS  # (as above)
        self._ECC, self._DSS, self._SHA256 = ECC, DSS, SHA256
        self._verifier = functools.lru_cache(maxsize=KEY_CACHE_BYTES // _KEY_ENTRY_BYTES[self.name])(
            self._load_verifier)

    def _load_verifier(self, public_key: bytes):
        x, y = _coordinates(public_key)
        try:
            # EccPoint checks the point is on the curve, at a quarter of import_key's cost.
            key = self._ECC.EccKey(curve=CURVE, point=self._ECC.EccPoint(x, y, CURVE))
        except ValueError:
            raise Malformed("public key is not a point on secp256k1") from None
        return self._DSS.new(key, "deterministic-rfc6979")

    def check_public_key(self, public_key: bytes) -> None:
        self._verifier(public_key)

    def verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        try:
            verifier = self._verifier(public_key)
        except Malformed:
            return False
        try:
            verifier.verify(_Digest(digest), signature)
        except ValueError:
            return False
        return True

    def verify_batch(self, checks) -> int:
        for n, (public_key, sighash, signature) in enumerate(checks):
            if not _signature_in_range(signature) or not self.verify(public_key, _sha256(sighash).digest(),
                                                                     signature):
                return n
        return -1

    def sign(self, key: "PrivateKey", sighash: bytes) -> bytes:
        # DSS derives the RFC 6979 nonce with HMAC over the hash object, so it needs a real one here.
        return self._DSS.new(key._key, "deterministic-rfc6979").sign(self._SHA256.new(sighash))

    def clear_caches(self) -> None:
        self._verifier.cache_clear()


class _Libsecp256k1:
    """ECDSA by libsecp256k1 (Bitcoin Core's library) through coincurve's cffi bindings.

    The compact r||s calls are used directly: coincurve's own PublicKey.verify
    takes DER, and converting each signature would cost a third of a verify.
    """

    name = "libsecp256k1"

    def __init__(self):
        from coincurve._libsecp256k1 import ffi, lib  # optional: only when the fast extra is installed
        from coincurve.context import GLOBAL_CONTEXT  # (as above)
        self._ffi, self._lib, self._ctx = ffi, lib, GLOBAL_CONTEXT.ctx
        self._pubkey = functools.lru_cache(maxsize=KEY_CACHE_BYTES // _KEY_ENTRY_BYTES[self.name])(self._parse)

    def _parse(self, public_key: bytes):
        # libsecp256k1 also takes hybrid keys (06, 07): the protocol does not.  The rest of _coordinates'
        # rules it keeps itself: a coordinate at or above p, and (0, 0), are not points to it.
        if len(public_key) != PUBKEY_SIZE or public_key[0] != 4:
            raise Malformed("public key must be 65 bytes of uncompressed SEC1")
        point = self._ffi.new("secp256k1_pubkey *")
        if not self._lib.secp256k1_ec_pubkey_parse(self._ctx, point, public_key, len(public_key)):
            raise Malformed("public key is not a point on secp256k1")
        return point

    def check_public_key(self, public_key: bytes) -> None:
        self._pubkey(public_key)

    def verify(self, public_key: bytes, digest: bytes, signature: bytes) -> bool:
        try:
            point = self._pubkey(public_key)
        except Malformed:
            return False
        sig = self._ffi.new("secp256k1_ecdsa_signature *")
        # parse_compact refuses r or s >= n; verify refuses r or s zero and high S
        if not self._lib.secp256k1_ecdsa_signature_parse_compact(self._ctx, sig, signature):
            return False
        return self._lib.secp256k1_ecdsa_verify(self._ctx, sig, digest, point) == 1

    def verify_batch(self, checks) -> int:
        """verify() over (public_key, sighash, signature) checks, with what they share set up once: the
        signature struct, the bound functions, and each transaction's digest (its inputs share one sighash)."""
        ctx, parse, check = self._ctx, self._lib.secp256k1_ecdsa_signature_parse_compact, \
            self._lib.secp256k1_ecdsa_verify
        pubkey, sig = self._pubkey, self._ffi.new("secp256k1_ecdsa_signature *")
        last = digest = None
        for n, (public_key, sighash, signature) in enumerate(checks):
            # _signature_in_range, inlined
            if len(signature) != SIGNATURE_SIZE or not _ZERO32 < signature[:32] < _ORDER_BYTES \
                    or not _ZERO32 < signature[32:] <= _HALF_ORDER_BYTES:
                return n
            if sighash is not last:  # held in `last`, so the same object is the same value
                last, digest = sighash, _sha256(sighash).digest()
            try:
                point = pubkey(public_key)
            except Malformed:
                return n
            if not parse(ctx, sig, signature) or check(ctx, sig, digest, point) != 1:
                return n
        return -1

    def sign(self, key: "PrivateKey", sighash: bytes) -> bytes:
        sig = self._ffi.new("secp256k1_ecdsa_signature *")
        # a NULL nonce function is libsecp256k1's RFC 6979 with SHA-256, as DSS's deterministic mode
        if not self._lib.secp256k1_ecdsa_sign(self._ctx, sig, hashlib.sha256(sighash).digest(),
                                              key.secret.to_bytes(32, "big"), self._ffi.NULL, self._ffi.NULL):
            raise ValueError("libsecp256k1 could not sign")
        out = self._ffi.new("unsigned char[64]")
        self._lib.secp256k1_ecdsa_signature_serialize_compact(self._ctx, out, sig)
        return bytes(self._ffi.buffer(out, SIGNATURE_SIZE))

    def clear_caches(self) -> None:
        self._pubkey.cache_clear()


CRYPTO_ENV = "CHAINCORE_CRYPTO"
BACKEND_NAMES = ("libsecp256k1", "pycryptodome")  # in order of preference
_BACKEND_CLASSES = {"libsecp256k1": _Libsecp256k1, "pycryptodome": _Pycryptodome}
_NEEDS = {"libsecp256k1": "coincurve (pip install 'chaincore[fast]')", "pycryptodome": "pycryptodome"}
# Private key 1 (public key G) signing 32 zero bytes: each backend must accept it, and refuse it
# for another message, before it is used.
_GENERATOR = bytes.fromhex("0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                           "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8")
_KNOWN_SIGNATURE = bytes.fromhex("6afcd7a88de76639f15d95985a6ebfb87d19a2a2ac57d0eac7ecdd7334d82a0a"
                                 "1145977710687e95f0478c94d0a9243b8b8ea5ea2e97032fa08817cb0cf4e6aa")
_loaded: dict = {}


def _load(name: str):
    """The backend called name, built and checked once; ImportError when it cannot be used here."""
    if name not in _loaded:
        if name not in _BACKEND_CLASSES:
            raise ValueError(f"{CRYPTO_ENV}={name!r}: the backends are {', '.join(BACKEND_NAMES)}")
        try:
            backend = _BACKEND_CLASSES[name]()
        except (ImportError, AttributeError, OSError) as err:
            raise ImportError(f"the {name} backend needs {_NEEDS[name]}: {err}") from None
        # verifying only, so that a verifying process never needs pycryptodome's keys (tests compare signing)
        digest, other = hashlib.sha256(bytes(32)).digest(), hashlib.sha256(bytes(31)).digest()
        if not backend.verify(_GENERATOR, digest, _KNOWN_SIGNATURE) or backend.verify(_GENERATOR, other,
                                                                                      _KNOWN_SIGNATURE):
            raise ImportError(f"the {name} backend fails its known-answer check")
        _loaded[name] = backend
    return _loaded[name]


def available_backends() -> tuple:
    """The names of the backends that work here, fastest first."""
    found = []
    for name in BACKEND_NAMES:
        try:
            _load(name)
        except ImportError:
            continue
        found.append(name)
    return tuple(found)


def use_backend(name: str | None = None) -> str:
    """Sign and verify with backend `name` from now on (None: the fastest available); return the previous name.

    ImportError if that backend cannot be used here, ValueError for an unknown name.
    """
    global _backend
    previous = _backend.name if _backend is not None else ""
    if name:
        _backend = _load(name)
    else:
        for candidate in BACKEND_NAMES:
            try:
                _backend = _load(candidate)
                break
            except ImportError:
                continue
    return previous


def backend_name() -> str:
    """The name of the backend in use: "libsecp256k1" or "pycryptodome"."""
    return _current().name


def loaded_backend_name() -> str | None:
    """The name of the backend in use, or None while no key operation has needed one yet."""
    return None if _backend is None else _backend.name


def _current():
    """The backend in use, chosen and checked at the first key operation (CHAINCORE_CRYPTO, else the fastest).

    Loading it maps the library's tables and runs its known-answer check
    (about 2 MB of memory), which a process that never signs or verifies, such
    as an idle node whose workers verify for it, does without.
    """
    if _backend is None:
        use_backend(os.environ.get(CRYPTO_ENV) or None)
        if _backend is None:
            raise ImportError(f"no signature backend works here: install {' or '.join(_NEEDS.values())}")
    return _backend


def clear_caches() -> None:
    """Forget every parsed public key (benchmarks start cold with this)."""
    for backend in _loaded.values():
        backend.clear_caches()


def _normalise(signature: bytes) -> bytes:
    """The low-S form of a 64-byte r||s signature."""
    s = int.from_bytes(signature[32:], "big")
    if s > HALF_ORDER:
        return signature[:32] + (ORDER - s).to_bytes(32, "big")
    return signature


def _ecc():
    from Crypto.PublicKey import ECC  # only where keys are made or stored: verifying never needs it
    return ECC


class PrivateKey:
    """A secp256k1 signing key (a pycryptodome key, whichever backend signs)."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key):
        if not key.has_private() or "256k1" not in key.curve:
            raise ValueError("not a secp256k1 private key")
        self._key = key
        self.public_key = key.public_key().export_key(format="SEC1", compress=False)

    @classmethod
    def generate(cls) -> "PrivateKey":
        return cls(_ecc().generate(curve=CURVE))

    @classmethod
    def from_secret(cls, secret: int) -> "PrivateKey":
        if not 1 <= secret < ORDER:
            raise ValueError("secret out of range")
        return cls(_ecc().construct(curve=CURVE, d=secret))

    @property
    def secret(self) -> int:
        return int(self._key.d)

    @property
    def address(self) -> str:
        return address_of(self.public_key)

    def sign(self, sighash: bytes) -> bytes:
        """A deterministic low-S signature of a 32-byte signature hash."""
        return _normalise(_current().sign(self, sighash))

    def export_pem(self, passphrase: str | None) -> str:
        """PKCS#8 PEM, encrypted with scrypt and AES-256 when a passphrase is given."""
        if passphrase:
            return self._key.export_key(format="PEM", passphrase=passphrase,
                                        protection="scryptAndAES256-CBC", use_pkcs8=True)
        return self._key.export_key(format="PEM", use_pkcs8=True)

    @classmethod
    def import_pem(cls, pem: str, passphrase: str | None) -> "PrivateKey":
        return cls(_ecc().import_key(pem, passphrase=passphrase or None))


def check_public_key(public_key: bytes) -> None:
    """Raise Malformed unless public_key is a valid uncompressed secp256k1 point."""
    _current().check_public_key(public_key)


def _signature_in_range(signature: bytes) -> bool:
    """64 bytes r||s with 1 <= r < n and 1 <= s <= n/2: the encoding rules both backends share."""
    # compared as 32-byte big-endian strings (as numbers, but cheaper)
    return len(signature) == SIGNATURE_SIZE and _ZERO32 < signature[:32] < _ORDER_BYTES \
        and _ZERO32 < signature[32:] <= _HALF_ORDER_BYTES


def verify(public_key: bytes, sighash: bytes, signature: bytes) -> bool:
    """True when signature is the low-S signature of sighash by public_key."""
    if not _signature_in_range(signature):
        return False
    return _current().verify(public_key, _sha256(sighash).digest(), signature)


def verify_batch(checks) -> int:
    """Verify (public_key, sighash, signature) triples as verify() does; the index of the first bad one, or -1."""
    return _current().verify_batch(checks)


def check_signature(public_key: bytes, sighash: bytes, signature: bytes) -> None:
    if not verify(public_key, sighash, signature):
        raise BadSignature("signature does not verify")


_backend = None
if os.environ.get(CRYPTO_ENV) and os.environ[CRYPTO_ENV] not in _BACKEND_CLASSES:  # a typo stops the process at once
    raise ValueError(f"{CRYPTO_ENV}={os.environ[CRYPTO_ENV]!r}: the backends are {', '.join(BACKEND_NAMES)}")
