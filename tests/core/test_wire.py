"""Binary transfer: objects decoded from bytes hash those bytes, and the framing of lists refuses every bad shape."""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import HEADER_SIZE, Block, Header
from chaincore.core.encoding import compact_size, sha256d
from chaincore.core.errors import Malformed
from chaincore.core.tx import OutPoint, Transaction
from chaincore.core.wire import (
    MAX_WIRE_BLOCKS, MAX_WIRE_HEADERS, MEDIA_TYPE, decode_block, decode_blocks, decode_headers, decode_tx,
    encode_blocks, encode_headers, frame_list, read_list,
)
from tests.support.builders import ALICE, BOB, make_block, regtest_chain, signed_tx
from tests.support.strategies import FAST, headers, raw_blocks, raw_transactions, signed_transactions

MAX_BLOCK = 1_000_000


def _fresh(tx: Transaction) -> Transaction:
    """The same transaction built from its fields, so its bytes and hashes come from encoding."""
    return Transaction(tx.version, tx.inputs, tx.outputs, tx.lock_time)


def _chain_with_payments(n: int = 3) -> list:
    blocks = regtest_chain(n)
    spend = signed_tx([(OutPoint(b"\x01" * 32, 0), ALICE), (OutPoint(b"\x02" * 32, 1), BOB)], [(BOB, 5), (ALICE, 7)])
    return blocks[1:] + [make_block(blocks[-1], [spend])]


class DecodedBytesTests(SynchronousTestCase):
    def test_decoded_objects_keep_their_slices(self):
        """A decoded block, its header and each transaction hold the exact input bytes before any hash is taken."""
        block = _chain_with_payments()[-1]
        data = block.raw
        decoded = Block.decode(data)
        self.assertIs(decoded.__dict__["raw"], data)
        self.assertEqual(decoded.header.__dict__["raw"], data[:HEADER_SIZE])
        offset = HEADER_SIZE + 1
        for tx in decoded.transactions:
            raw = tx.__dict__["raw"]
            self.assertEqual(raw, data[offset:offset + len(raw)])
            offset += len(raw)
        self.assertEqual(offset, len(data))

    def test_hashes_match_the_encoded_objects(self):
        """Hash, tx_ids and sighashes of a decoded block equal those of the objects it was encoded from."""
        for block in _chain_with_payments():
            decoded = Block.decode(block.raw)
            self.assertEqual(decoded.hash, block.hash)
            self.assertEqual([t.tx_id for t in decoded.transactions], [t.tx_id for t in block.transactions])
            self.assertEqual([t.sighash for t in decoded.transactions],
                             [_fresh(t).sighash for t in block.transactions])

    @FAST
    @given(raw_transactions)
    def test_spliced_sighash_equals_encoded_sighash(self, tx):
        """The sighash spliced from received bytes equals sha256d of the unsigned encoding, for any transaction."""
        decoded = Transaction.decode(tx.raw)
        self.assertEqual(decoded.sighash, sha256d(tx._encode(False)))
        self.assertEqual(decoded.tx_id, sha256d(tx._encode(True)))

    @FAST
    @given(signed_transactions(), st.integers(0, 10_000), st.integers(0, 255))
    def test_any_accepted_bytes_are_canonical(self, tx, position, value):
        """Bytes with one byte changed either are refused or re-encode to themselves, so hashing the slice is sound."""
        data = bytearray(tx.raw)
        data[position % len(data)] = value
        try:
            decoded = Transaction.decode(bytes(data))
        except Malformed:
            return
        self.assertEqual(_fresh(decoded).raw, bytes(data))
        self.assertEqual(decoded.sighash, _fresh(decoded).sighash)

    @FAST
    @given(raw_blocks)
    def test_block_round_trip(self, block):
        """bytes -> Block -> bytes is the identity, and the decoded block equals the original."""
        decoded = Block.decode(block.raw)
        self.assertEqual(decoded, block)
        self.assertEqual(decoded.raw, block.raw)
        self.assertEqual(decoded.hash, block.hash)


class FramingTests(SynchronousTestCase):
    def test_media_type(self):
        """Binary bodies travel as application/octet-stream."""
        self.assertEqual(MEDIA_TYPE, "application/octet-stream")

    def test_layout(self):
        """A list is compact(count) then each item as compact(length) || bytes; an empty list is one 00 byte."""
        self.assertEqual(frame_list([]), b"\x00")
        self.assertEqual(frame_list([b"ab", b"", b"c"]), b"\x03\x02ab\x00\x01c")
        self.assertEqual(frame_list([b"x" * 300])[:4], b"\x01\xfd\x2c\x01")

    @FAST
    @given(st.lists(st.binary(max_size=300), max_size=20))
    def test_round_trip(self, items):
        """Any list of byte strings reads back as itself."""
        self.assertEqual(read_list(frame_list(items), 20, 300), items)

    def test_every_truncation_is_refused(self):
        """Every proper prefix of a framed list is Malformed."""
        data = frame_list([b"abc", b"", b"defgh"])
        for n in range(len(data)):
            self.assertRaises(Malformed, read_list, data[:n], 10, 10)

    def test_trailing_bytes_are_refused(self):
        """Bytes after the last item are Malformed."""
        err = self.assertRaises(Malformed, read_list, frame_list([b"abc"]) + b"\x00", 10, 10)
        self.assertIn("trailing", str(err))

    def test_count_over_the_limit_is_refused(self):
        """A count above the limit is Malformed before any item is read."""
        self.assertEqual(len(read_list(frame_list([b"a"] * 3), 3, 1)), 3)
        err = self.assertRaises(Malformed, read_list, frame_list([b"a"] * 4), 3, 1)
        self.assertIn("count 4", str(err))

    def test_count_beyond_the_bytes_is_refused(self):
        """A count larger than the bytes could hold (here 2^32 items in 3 bytes) is Malformed at once."""
        data = b"\xfe\x00\x00\x00\x01" + b"\x01a\x00"
        self.assertRaises(Malformed, read_list, data, 1 << 40, 10)

    def test_counts_that_disagree_with_the_items_are_refused(self):
        """One count too many is a truncation, one too few leaves trailing bytes: both Malformed."""
        body = b"\x01a\x01b"
        self.assertEqual(read_list(b"\x02" + body, 10, 10), [b"a", b"b"])
        self.assertRaises(Malformed, read_list, b"\x03" + body, 10, 10)
        self.assertRaises(Malformed, read_list, b"\x01" + body, 10, 10)

    def test_non_minimal_count_and_length_are_refused(self):
        """A count or a length written in a longer form than needed is Malformed."""
        self.assertRaises(Malformed, read_list, b"\xfd\x01\x00\x01a", 10, 10)
        self.assertRaises(Malformed, read_list, b"\x01\xfd\x01\x00a", 10, 10)

    def test_oversize_item_is_refused_before_reading(self):
        """An item length over the limit is Malformed even when the bytes are not there."""
        data = b"\x01" + compact_size(2_000_000) + b"abc"
        err = self.assertRaises(Malformed, read_list, data, 10, MAX_BLOCK)
        self.assertIn("over the limit", str(err))


class BlockListTests(SynchronousTestCase):
    def test_blocks_round_trip(self):
        """A framed list of blocks decodes to equal blocks with equal hashes."""
        blocks = _chain_with_payments()
        decoded = decode_blocks(encode_blocks(blocks), MAX_BLOCK)
        self.assertEqual(decoded, blocks)
        self.assertEqual([b.hash for b in decoded], [b.hash for b in blocks])
        self.assertEqual(decode_blocks(encode_blocks([]), MAX_BLOCK), [])

    @FAST
    @given(st.lists(raw_blocks, max_size=3))
    def test_any_blocks_round_trip(self, blocks):
        """Any list of blocks the encoding can carry reads back as itself."""
        self.assertEqual(decode_blocks(encode_blocks(blocks), MAX_BLOCK), blocks)

    def test_wire_size_is_close_to_canonical(self):
        """The framing adds a few bytes per block: well under 5% over the blocks' own bytes."""
        blocks = _chain_with_payments()
        canonical = sum(len(b.raw) for b in blocks)
        framed = len(encode_blocks(blocks))
        self.assertEqual(framed, canonical + 1 + sum(len(compact_size(len(b.raw))) for b in blocks))
        self.assertLessEqual(framed, canonical * 1.05)

    def test_bad_block_inside_a_list_is_refused(self):
        """A list whose item is not a whole block (cut, or with a byte more) is Malformed."""
        raw = _chain_with_payments()[-1].raw
        self.assertRaises(Malformed, decode_blocks, frame_list([raw[:-1]]), MAX_BLOCK)
        self.assertRaises(Malformed, decode_blocks, frame_list([raw + b"\x00"]), MAX_BLOCK)
        self.assertRaises(Malformed, decode_blocks, frame_list([b""]), MAX_BLOCK)

    def test_block_limits(self):
        """Blocks over the byte limit and lists over the count limit are Malformed."""
        blocks = _chain_with_payments()
        self.assertRaises(Malformed, decode_blocks, encode_blocks(blocks), len(blocks[-1].raw) - 1)
        self.assertRaises(Malformed, decode_blocks, encode_blocks(blocks), MAX_BLOCK, len(blocks) - 1)
        self.assertEqual(MAX_WIRE_BLOCKS, 500)

    def test_one_block_or_transaction(self):
        """One block or transaction is its canonical bytes alone, refused when over its size limit or with extra bytes."""
        block = _chain_with_payments()[-1]
        self.assertEqual(decode_block(block.raw, MAX_BLOCK), block)
        self.assertRaises(Malformed, decode_block, block.raw, len(block.raw) - 1)
        self.assertRaises(Malformed, decode_block, block.raw + b"\x00", MAX_BLOCK)
        tx = block.transactions[-1]
        self.assertEqual(decode_tx(tx.raw, MAX_BLOCK).tx_id, tx.tx_id)
        self.assertRaises(Malformed, decode_tx, tx.raw, len(tx.raw) - 1)
        self.assertRaises(Malformed, decode_tx, tx.raw + b"\x00", MAX_BLOCK)
        self.assertRaises(Malformed, decode_tx, tx.raw[:-1], MAX_BLOCK)


class HeaderListTests(SynchronousTestCase):
    @FAST
    @given(st.lists(headers, max_size=10))
    def test_round_trip(self, items):
        """Any list of headers reads back as itself, each hashed over its 120 received bytes."""
        decoded = decode_headers(encode_headers(items))
        self.assertEqual(decoded, items)
        self.assertEqual([h.hash for h in decoded], [sha256d(h.raw) for h in items])

    def test_items_must_be_120_bytes(self):
        """A header item of 119 or 121 bytes is Malformed."""
        raw = regtest_chain(1)[1].header.raw
        self.assertEqual(decode_headers(frame_list([raw]))[0], Header.decode(raw))
        self.assertRaises(Malformed, decode_headers, frame_list([raw[:-1]]))
        self.assertRaises(Malformed, decode_headers, frame_list([raw + b"\x00"]))

    def test_count_limit(self):
        """More headers than the limit are Malformed; the default limit is the /headers cap."""
        raw = regtest_chain(1)[1].header.raw
        self.assertEqual(len(decode_headers(frame_list([raw] * 3), 3)), 3)
        self.assertRaises(Malformed, decode_headers, frame_list([raw] * 4), 3)
        self.assertEqual(MAX_WIRE_HEADERS, 2000)
