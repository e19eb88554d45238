"""Transactions: their byte layout, tx_id, signature hash and coinbase form (CONTRACT 3)."""

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.encoding import Reader, sha256d
from chaincore.core.errors import Malformed
from chaincore.core.keys import ADDRESS_PAYLOAD_SIZE
from chaincore.core.tx import (
    MAX_COINBASE_DATA, MAX_TX_INPUTS, MAX_TX_OUTPUTS, NULL_INDEX, NULL_TXID, OutPoint, Transaction, TxIn, TxOut,
    make_coinbase,
)
from tests.support.builders import ALICE, BOB, payload, signed_tx

FUNDING = OutPoint(bytes(range(32)), 7)


def _tx(**kw):
    return signed_tx([(FUNDING, ALICE)], [(BOB, 5_000)], **kw)


class LayoutTests(SynchronousTestCase):
    def test_exact_bytes(self):
        """The encoding is version, inputs, outputs, lock_time, in the documented field order and widths."""
        tx = Transaction(1, (TxIn(b"\xaa" * 32, 2, b"\x04" * 3, b"\x05" * 2),), (TxOut(258, b"\x1c" * 21),), 9)
        expected = ("01000000" "01" + "aa" * 32 + "02000000" "03" + "04" * 3 + "02" + "05" * 2
                    + "01" "0201000000000000" + "1c" * 21 + "09000000")
        self.assertEqual(tx.raw.hex(), expected)
        self.assertEqual(tx.encode(), tx.raw)
        self.assertEqual(tx.size, len(expected) // 2)

    def test_inlined_encoding_matches_parts(self):
        """The transaction bytes are exactly the concatenation of its inputs' and outputs' encodings."""
        tx = signed_tx([(FUNDING, ALICE), (OutPoint(bytes(32), 1), BOB)], [(BOB, 1), (ALICE, 2)])
        parts = (b"\x01\x00\x00\x00\x02" + b"".join(i.encode() for i in tx.inputs) + b"\x02"
                 + b"".join(o.encode() for o in tx.outputs) + bytes(4))
        self.assertEqual(tx.raw, parts)

    def test_tx_id_is_sha256d_of_bytes(self):
        """tx_id is sha256d of the whole encoding, signatures included."""
        tx = _tx()
        self.assertEqual(tx.tx_id, sha256d(tx.raw))

    def test_decode_round_trip(self):
        """decode(encode(tx)) == tx, for a signed transaction and a coinbase."""
        for tx in (_tx(lock_time=77), make_coinbase(5, [(payload(ALICE), 10)], b"extra")):
            self.assertEqual(Transaction.decode(tx.raw), tx)
            self.assertEqual(Transaction.decode(tx.raw).tx_id, tx.tx_id)

    def test_decode_refuses_trailing_or_missing_bytes(self):
        """A transaction with a byte too many or too few is Malformed."""
        raw = _tx().raw
        self.assertRaises(Malformed, Transaction.decode, raw + b"\0")
        self.assertRaises(Malformed, Transaction.decode, raw[:-1])

    def test_decode_limits_field_sizes(self):
        """A public key over 65 bytes or a signature over 100 bytes does not decode."""
        long_key = Transaction(1, (TxIn(bytes(32), 0, b"\x04" * 66, b""),), (), 0)
        long_sig = Transaction(1, (TxIn(bytes(32), 0, b"", b"s" * 101),), (), 0)
        self.assertRaises(Malformed, Transaction.decode, long_key.raw)
        self.assertRaises(Malformed, Transaction.decode, long_sig.raw)


class SighashTests(SynchronousTestCase):
    def test_sighash_ignores_signatures(self):
        """The signature hash is sha256d of the encoding with every signature emptied."""
        tx = _tx()
        unsigned = tx.with_signatures([b""])
        self.assertEqual(tx.sighash, unsigned.sighash)
        self.assertEqual(tx.sighash, sha256d(unsigned.raw))
        self.assertNotEqual(tx.sighash, tx.tx_id)

    def test_sighash_covers_everything_else(self):
        """Changing the version, an outpoint, a public key, an output or lock_time changes the sighash."""
        tx = _tx()
        i, o = tx.inputs[0], tx.outputs[0]
        variants = [
            Transaction(2, tx.inputs, tx.outputs, 0),
            Transaction(1, (TxIn(i.prev_tx_id, 8, i.public_key, i.signature),), tx.outputs, 0),
            Transaction(1, (TxIn(bytes(32), 7, i.public_key, i.signature),), tx.outputs, 0),
            Transaction(1, (TxIn(i.prev_tx_id, 7, BOB.public_key, i.signature),), tx.outputs, 0),
            Transaction(1, tx.inputs, (TxOut(o.amount + 1, o.recipient),), 0),
            Transaction(1, tx.inputs, (TxOut(o.amount, payload(ALICE)),), 0),
            Transaction(1, tx.inputs, tx.outputs + (o,), 0),
            Transaction(1, tx.inputs, tx.outputs, 1),
        ]
        for variant in variants:
            self.assertNotEqual(variant.sighash, tx.sighash, variant)

    def test_with_signatures_needs_one_per_input(self):
        """with_signatures refuses a signature count that differs from the input count."""
        self.assertRaises(ValueError, _tx().with_signatures, [])


class CoinbaseTests(SynchronousTestCase):
    def test_coinbase_layout(self):
        """A coinbase has one null input whose signature field starts with the height as u32."""
        cb = make_coinbase(0x010203, [(payload(ALICE), 50)], b"hi")
        self.assertTrue(cb.is_coinbase)
        self.assertEqual(cb.inputs[0].prev_tx_id, NULL_TXID)
        self.assertEqual(cb.inputs[0].output_index, NULL_INDEX)
        self.assertEqual(cb.inputs[0].public_key, b"")
        self.assertEqual(cb.inputs[0].signature, bytes.fromhex("03020100") + b"hi")
        self.assertEqual(cb.coinbase_height, 0x010203)
        self.assertEqual(cb.output_total, 50)

    def test_coinbases_of_different_heights_differ(self):
        """Two coinbases paying the same at different heights have different tx_ids."""
        outputs = [(payload(ALICE), 50)]
        self.assertNotEqual(make_coinbase(1, outputs).tx_id, make_coinbase(2, outputs).tx_id)

    def test_non_coinbase_has_no_height(self):
        """Only a coinbase commits to a height; a short coinbase data commits to none."""
        self.assertFalse(_tx().is_coinbase)
        self.assertIsNone(_tx().coinbase_height)
        short = Transaction(1, (TxIn(NULL_TXID, NULL_INDEX, b"", b"\x01"),), (TxOut(1, payload(ALICE)),), 0)
        self.assertIsNone(short.coinbase_height)

    def test_coinbase_extra_data_limit(self):
        """Coinbase data (height + extra) over 100 bytes cannot be built."""
        make_coinbase(1, [(payload(ALICE), 1)], b"x" * 96)
        self.assertRaises(Malformed, make_coinbase, 1, [(payload(ALICE), 1)], b"x" * 97)

    def test_outpoint(self):
        """An input's outpoint names the transaction and output it spends."""
        self.assertEqual(_tx().inputs[0].outpoint, FUNDING)
        self.assertFalse(_tx().inputs[0].is_null)


def reference_read(r: Reader) -> Transaction:
    """The transaction at r's position, read field by field through Reader (what Transaction.read must equal)."""
    version = r.u32()
    inputs = []
    for _ in range(r.count(MAX_TX_INPUTS)):
        prev_tx_id, index, public_key = r.take(32), r.u32(), r.var_bytes(65)
        inputs.append(TxIn(prev_tx_id, index, public_key, r.var_bytes(MAX_COINBASE_DATA)))
    outputs = [TxOut(r.u64(), r.take(ADDRESS_PAYLOAD_SIZE)) for _ in range(r.count(MAX_TX_OUTPUTS))]
    return Transaction(version, tuple(inputs), tuple(outputs), r.u32())


def decoded(read, data: bytes):
    """(transaction, position after it), or "Malformed"."""
    r = Reader(data)
    try:
        tx = read(r)
    except Malformed:
        return "Malformed"
    return tx, r.pos


VALID = [_tx().raw, make_coinbase(7, [(payload(BOB), 50)], b"x").raw,
         signed_tx([(FUNDING, ALICE), (OutPoint(bytes(32), 1), BOB)], [(payload(BOB), 1)] * 3).raw]


class DecoderTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(VALID), st.integers(0, 400), st.binary(max_size=4), st.integers(0, 400))
    def test_read_equals_field_by_field(self, raw, at, patch, cut):
        """On valid bytes patched and cut anywhere, Transaction.read returns what the field-by-field reader
        does, to the byte, or both refuse them as Malformed."""
        data = (raw[:at] + patch + raw[at + len(patch):])[:max(cut, 1)] + raw[cut:]
        self.assertEqual(decoded(Transaction.read, data), decoded(reference_read, data))

    def test_long_counts_and_over_limit_lengths_are_refused(self):
        """A non-minimal input count and a public key longer than 65 bytes are Malformed."""
        raw = _tx().raw
        self.assertRaises(Malformed, Transaction.decode, raw[:4] + b"\xfd\x01\x00" + raw[5:])
        at = 4 + 1 + 32 + 4
        self.assertRaises(Malformed, Transaction.decode, raw[:at] + b"\x42" + raw[at + 1:])
