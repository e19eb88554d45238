"""Binary transfer between peers: canonical bytes for one object, and a framing for lists (docs/protocol.md 11).

One block or transaction travels as its canonical encoding, nothing around it.
A list (the answer of `/blocks` or `/headers`) is compact(count), then each
item as var_bytes: compact(length) then the item's bytes.  Lengths and counts
are checked against the caller's limits before anything is read past them.
Decoded objects keep their slices of the input as their bytes, so every hash
is taken over the bytes received, never over a re-encoding.
"""

from .block import HEADER_SIZE, Block, Header
from .encoding import Reader, compact_size
from .errors import Malformed
from .tx import Transaction

MEDIA_TYPE = "application/octet-stream"
MAX_WIRE_BLOCKS = 500     # the cap of GET /blocks
MAX_WIRE_HEADERS = 2000   # the cap of GET /headers


def frame_list(items) -> bytes:
    """compact(count) then each item (bytes) as compact(length) || item."""
    items = list(items)
    parts = [compact_size(len(items))]
    for item in items:
        parts += (compact_size(len(item)), item)
    return b"".join(parts)


def read_list(data: bytes, max_items: int, max_item_bytes: int) -> list:
    """The items of a framed list, as bytes; Malformed for a bad count, an oversize or cut item, or trailing bytes."""
    r = Reader(data)
    count = r.count(max_items)
    # every item takes at least its one-byte length, so a count beyond the bytes left is a lie
    if count > r.remaining():
        raise Malformed(f"a list of {count} items in {r.remaining()} bytes")
    items = [r.var_bytes(max_item_bytes) for _ in range(count)]
    r.finish()
    return items


def decode_tx(data: bytes, max_tx_bytes: int) -> Transaction:
    """The transaction whose canonical bytes are data (at most max_tx_bytes); Malformed otherwise."""
    if len(data) > max_tx_bytes:
        raise Malformed(f"transaction of {len(data)} bytes is over {max_tx_bytes}")
    return Transaction.decode(data)


def decode_block(data: bytes, max_block_bytes: int) -> Block:
    """The block whose canonical bytes are data (at most max_block_bytes); Malformed otherwise."""
    if len(data) > max_block_bytes:
        raise Malformed(f"block of {len(data)} bytes is over {max_block_bytes}")
    return Block.decode(data)


def encode_blocks(blocks) -> bytes:
    """A framed list of blocks, as `GET /blocks` answers in binary."""
    return frame_list(block.raw for block in blocks)


def decode_blocks(data: bytes, max_block_bytes: int, max_blocks: int = MAX_WIRE_BLOCKS) -> list:
    """The blocks of a framed list; Malformed if the framing or any block is."""
    return [Block.decode(raw) for raw in read_list(data, max_blocks, max_block_bytes)]


def encode_headers(headers) -> bytes:
    """A framed list of 120-byte headers, as `GET /headers` answers in binary."""
    return frame_list(header.raw for header in headers)


def decode_headers(data: bytes, max_headers: int = MAX_WIRE_HEADERS) -> list:
    """The headers of a framed list; Malformed if the framing is, or an item is not 120 bytes."""
    return [Header.decode(raw) for raw in read_list(data, max_headers, HEADER_SIZE)]
