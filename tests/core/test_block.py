"""Headers, blocks, the merkle tree and work (CONTRACT 3): the fixed 120-byte header layout."""

import struct

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import (
    HEADER_SIZE, NONCE_OFFSET, NONCE_SIZE, Block, Header, block_work, merkle_root,
)
from chaincore.core.encoding import sha256d
from chaincore.core.errors import Malformed
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from tests.support.builders import ALICE, BOB, make_block, signed_tx

HEADER = Header(1, 0x0A0B, b"\x11" * 32, b"\x22" * 32, 0x0102030405, (1 << 255) - 1, 0x0807060504030201)
LEAVES = [sha256d(bytes([n])) for n in range(5)]


def _node(left: bytes, right: bytes) -> bytes:
    return sha256d(b"\x01" + left + right)


class HeaderTests(SynchronousTestCase):
    def test_layout_offsets(self):
        """Header bytes: version 0-4, height 4-8, previous 8-40, merkle 40-72, time 72-80, target 80-112, nonce 112-120."""
        raw = HEADER.raw
        self.assertEqual(len(raw), HEADER_SIZE)
        self.assertEqual(raw[0:4], struct.pack("<I", 1))
        self.assertEqual(raw[4:8], struct.pack("<I", 0x0A0B))
        self.assertEqual(raw[8:40], b"\x11" * 32)
        self.assertEqual(raw[40:72], b"\x22" * 32)
        self.assertEqual(raw[72:80], struct.pack("<Q", 0x0102030405))
        self.assertEqual(raw[80:112], ((1 << 255) - 1).to_bytes(32, "big"))
        self.assertEqual(raw[112:120].hex(), "0102030405060708")
        self.assertEqual((NONCE_OFFSET, NONCE_SIZE), (112, 8))

    def test_nonce_only_changes_its_bytes(self):
        """Changing the nonce changes exactly bytes [112, 120), as a little-endian u64."""
        other = HEADER.with_nonce(0xFFEE)
        self.assertEqual(other.raw[:NONCE_OFFSET], HEADER.raw[:NONCE_OFFSET])
        self.assertEqual(int.from_bytes(other.raw[NONCE_OFFSET:NONCE_OFFSET + NONCE_SIZE], "little"), 0xFFEE)

    def test_hash_in_digest_order(self):
        """The header hash is sha256d of its bytes, not reversed."""
        self.assertEqual(HEADER.hash, sha256d(HEADER.raw))

    def test_pow_compares_hash_as_big_endian_number(self):
        """Proof of work holds exactly when int(hash hex, 16) <= target."""
        seen = set()
        for nonce in range(64):
            header = HEADER.with_nonce(nonce)
            ok = int(header.hash.hex(), 16) <= header.target
            self.assertEqual(header.has_valid_pow, ok)
            seen.add(ok)
        self.assertEqual(seen, {True, False})
        self.assertTrue(Header(1, 0, bytes(32), bytes(32), 0, (1 << 256) - 1, 0).has_valid_pow)
        self.assertFalse(Header(1, 0, bytes(32), bytes(32), 0, 0, 0).has_valid_pow)

    def test_decode_round_trip(self):
        """decode(raw) gives back the header; any other length is Malformed."""
        self.assertEqual(Header.decode(HEADER.raw), HEADER)
        self.assertRaises(Malformed, Header.decode, HEADER.raw[:-1])
        self.assertRaises(Malformed, Header.decode, HEADER.raw + b"\0")


class BlockTests(SynchronousTestCase):
    def test_block_bytes(self):
        """A block is its header, a compact transaction count, then the transactions."""
        tx = signed_tx([(OutPoint(bytes(32), 0), ALICE)], [(BOB, 1)])
        block = make_block(REGTEST.genesis, [tx])
        self.assertEqual(block.raw, block.header.raw + b"\x02" + block.transactions[0].raw + tx.raw)
        self.assertEqual(block.size, len(block.raw))
        self.assertEqual(block.hash, block.header.hash)
        self.assertEqual(block.height, 1)

    def test_decode_round_trip(self):
        """decode(encode(block)) == block; trailing bytes are refused."""
        block = make_block(REGTEST.genesis, [signed_tx([(OutPoint(bytes(32), 0), ALICE)], [(BOB, 1)])])
        self.assertEqual(Block.decode(block.raw), block)
        self.assertEqual(Block.decode(REGTEST.genesis.raw), REGTEST.genesis)
        self.assertRaises(Malformed, Block.decode, block.raw + b"\0")
        self.assertRaises(Malformed, Block.decode, block.raw[:HEADER_SIZE + 5])

    def test_with_nonce_keeps_transactions(self):
        """with_nonce changes only the header's nonce."""
        block = REGTEST.genesis
        self.assertEqual(block.with_nonce(9).transactions, block.transactions)
        self.assertEqual(block.with_nonce(9).header.nonce, 9)


class MerkleTests(SynchronousTestCase):
    def test_empty(self):
        """The merkle root of no transactions is 32 zero bytes."""
        self.assertEqual(merkle_root([]), bytes(32))

    def test_one_leaf_is_its_own_root(self):
        """A single tx_id is the root."""
        self.assertEqual(merkle_root(LEAVES[:1]), LEAVES[0])

    def test_two_leaves(self):
        """Two leaves hash as sha256d(0x01 || left || right)."""
        self.assertEqual(merkle_root(LEAVES[:2]), _node(LEAVES[0], LEAVES[1]))

    def test_three_leaves_carry_the_odd_one(self):
        """An odd last node is carried up unchanged, never paired with itself."""
        a, b, c = LEAVES[:3]
        self.assertEqual(merkle_root([a, b, c]), _node(_node(a, b), c))
        self.assertNotEqual(merkle_root([a, b, c]), merkle_root([a, b, c, c]))

    def test_five_leaves(self):
        """Five leaves: the fifth is carried up two levels before it is paired."""
        a, b, c, d, e = LEAVES
        self.assertEqual(merkle_root(LEAVES), _node(_node(_node(a, b), _node(c, d)), e))

    def test_order_matters(self):
        """Swapping two leaves changes the root."""
        self.assertNotEqual(merkle_root(LEAVES[:2]), merkle_root(LEAVES[1::-1]))

    def test_accepts_any_iterable(self):
        """merkle_root reads a generator as well as a list."""
        self.assertEqual(merkle_root(iter(LEAVES)), merkle_root(LEAVES))


class WorkTests(SynchronousTestCase):
    def test_block_work(self):
        """Work is 2**256 // (target + 1): the expected number of hashes to meet target."""
        self.assertEqual(block_work((1 << 256) - 1), 1)
        self.assertEqual(block_work((1 << 255) - 1), 2)
        self.assertEqual(block_work((1 << 235) - 1), 1 << 21)
        self.assertEqual(block_work(0), 1 << 256)
        self.assertGreater(block_work(1 << 200), block_work(1 << 201))
