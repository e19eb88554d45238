"""Properties of the canonical encoding, JSON views, signatures and addresses, over generated objects."""

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.block import Block, Header
from chaincore.core.encoding import Reader, compact_size
from chaincore.core.errors import BadAddress, BadSignature, Invalid, Malformed
from chaincore.core.jsonview import block_to_json, parse_block, parse_tx, tx_to_json
from chaincore.core.keys import address_from_payload, address_payload
from chaincore.core.params import REGTEST
from chaincore.core.rules import check_signatures, check_tx_sanity, verify_batch
from chaincore.core.tx import Transaction
from tests.support.strategies import (
    FAST, SLOW, U64, headers, json_blocks, json_transactions, payloads, raw_blocks, raw_transactions,
    signed_transactions,
)

BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class EncodingRoundTrips(SynchronousTestCase):
    @FAST
    @given(U64)
    def test_compact_size(self, n):
        """Every u64 reads back from its compact size, which is 1, 3, 5 or 9 bytes."""
        raw = compact_size(n)
        self.assertIn(len(raw), (1, 3, 5, 9))
        reader = Reader(raw)
        self.assertEqual(reader.compact_size(), n)
        reader.finish()

    @FAST
    @given(raw_transactions)
    def test_transaction_bytes(self, tx):
        """bytes -> Transaction -> bytes is the identity, and so is the object round trip."""
        decoded = Transaction.decode(tx.raw)
        self.assertEqual(decoded, tx)
        self.assertEqual(decoded.raw, tx.raw)
        self.assertEqual(decoded.tx_id, tx.tx_id)

    @FAST
    @given(raw_transactions, st.data())
    def test_truncated_transaction_is_malformed(self, tx, data):
        """Every proper prefix of a transaction's bytes is refused as Malformed."""
        cut = data.draw(st.integers(0, len(tx.raw) - 1))
        self.assertRaises(Malformed, Transaction.decode, tx.raw[:cut])

    @FAST
    @given(headers)
    def test_header_bytes(self, header):
        """bytes -> Header -> bytes is the identity; the header is always 120 bytes."""
        self.assertEqual(len(header.raw), 120)
        self.assertEqual(Header.decode(header.raw), header)
        self.assertEqual(Header.decode(header.raw).raw, header.raw)

    @FAST
    @given(raw_blocks)
    def test_block_bytes(self, block):
        """bytes -> Block -> bytes is the identity."""
        decoded = Block.decode(block.raw)
        self.assertEqual(decoded, block)
        self.assertEqual(decoded.raw, block.raw)


class JsonRoundTrips(SynchronousTestCase):
    @FAST
    @given(json_transactions)
    def test_transaction_json(self, tx):
        """object -> JSON text -> object -> JSON gives back the same object and the same JSON."""
        view = tx_to_json(tx)
        parsed = parse_tx(json.loads(json.dumps(view)))
        self.assertEqual(parsed, tx)
        self.assertEqual(tx_to_json(parsed), view)

    @FAST
    @given(json_blocks)
    def test_block_json(self, block):
        """object -> JSON text -> object -> JSON gives back the same block, hash included."""
        view = block_to_json(block)
        parsed = parse_block(json.loads(json.dumps(view)))
        self.assertEqual(parsed, block)
        self.assertEqual(block_to_json(parsed), view)


class TamperTests(SynchronousTestCase):
    @SLOW
    @given(signed_transactions(), st.data())
    def test_any_single_byte_change_breaks_a_signed_transaction(self, tx, data):
        """A signed transaction with any one byte changed fails to decode, fails sanity, or fails its signatures.

        When it still decodes and is sane, its signatures must not verify under the
        original public keys (those the spent coins name), nor under its own.
        """
        check_signatures(tx)
        raw = tx.raw
        pos = data.draw(st.integers(0, len(raw) - 1), label="position")
        byte = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="new byte")
        mutated = raw[:pos] + bytes((byte,)) + raw[pos + 1:]
        try:
            changed = Transaction.decode(mutated)
        except Malformed:
            return
        self.assertNotEqual(changed.tx_id, tx.tx_id)
        try:
            check_tx_sanity(changed, REGTEST)
        except Invalid:
            return
        original_keys = [i.public_key for i in tx.inputs]
        self.assertEqual(len(changed.inputs), len(original_keys))
        checks = [(key, changed.sighash, i.signature) for key, i in zip(original_keys, changed.inputs)]
        self.assertGreaterEqual(verify_batch(checks), 0, f"byte {pos} changed to {byte} still verifies")
        self.assertRaises(BadSignature, check_signatures, changed)


class AddressProperties(SynchronousTestCase):
    @FAST
    @given(payloads, st.data())
    def test_checksum_detects_any_substitution(self, payload, data):
        """An address with any one character replaced by another Base58 character is refused."""
        address = address_from_payload(payload)
        self.assertEqual(address_payload(address), payload)
        pos = data.draw(st.integers(0, len(address) - 1), label="position")
        char = data.draw(st.sampled_from(BASE58).filter(lambda c: c != address[pos]), label="new character")
        typo = address[:pos] + char + address[pos + 1:]
        err = self.assertRaises(BadAddress, address_payload, typo)
        self.assertEqual(err.code, "bad-address")
