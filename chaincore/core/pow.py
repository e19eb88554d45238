"""Nonce search for proof of work (CONTRACT 3 and 5).

Pure and top-level so that miner worker processes can import and run it.  The
header bytes before the nonce are hashed once and the SHA-256 state copied
for every nonce; the digest is compared as bytes with the big-endian target,
which orders exactly like `int(hash, 16) <= target`.
"""

import hashlib

HASH_SIZE = 32


def nonce_limit(nonce_size: int) -> int:
    """One past the largest nonce that fits in nonce_size bytes."""
    return 1 << (8 * nonce_size)


def search_nonce(header: bytes, nonce_offset: int, nonce_size: int, target: int,
                 start: int, count: int) -> int | None:
    """The first nonce in [start, start + count) whose header meets target, or None.

    The nonce is an unsigned little-endian integer of nonce_size bytes at
    nonce_offset; whatever bytes header holds there are ignored.  The range is
    cut at the largest nonce that fits.
    """
    if not 0 <= nonce_offset <= len(header) - nonce_size or nonce_size <= 0:
        raise ValueError(f"nonce of {nonce_size} bytes at {nonce_offset} does not fit a {len(header)}-byte header")
    if start < 0 or count < 0:
        raise ValueError("start and count must not be negative")
    if target < 0:
        return None
    target_bytes = min(target, (1 << (8 * HASH_SIZE)) - 1).to_bytes(HASH_SIZE, "big")
    stop = min(start + count, nonce_limit(nonce_size))
    sha256 = hashlib.sha256
    copy = sha256(header[:nonce_offset]).copy
    suffix = bytes(header[nonce_offset + nonce_size:])
    if suffix:
        for nonce in range(start, stop):
            h = copy()
            h.update(nonce.to_bytes(nonce_size, "little") + suffix)
            if sha256(h.digest()).digest() <= target_bytes:
                return nonce
    else:
        for nonce in range(start, stop):
            h = copy()
            h.update(nonce.to_bytes(nonce_size, "little"))
            if sha256(h.digest()).digest() <= target_bytes:
                return nonce
    return None
