"""Strict JSON views (CONTRACT 3): round trips, and refusal of every ill-typed or tampered field by name."""

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.errors import BadAddress, BadAmount, Malformed, TooLarge
from chaincore.core.jsonview import (
    block_to_json, header_to_json, loads, parse_block, parse_header, parse_tx, tx_to_json,
)
from chaincore.core.params import MAX_MONEY, REGTEST
from chaincore.core.tx import OutPoint
from tests.support.builders import ALICE, BOB, CAROL, make_block, signed_tx
from tests.support.strategies import FAST

FUNDING = OutPoint(bytes(range(32)), 3)


def _tx():
    return signed_tx([(FUNDING, ALICE)], [(BOB, 70_000), (CAROL, 29_000)], lock_time=5)


def _block():
    return make_block(REGTEST.genesis, [_tx()], fees=1_000)


class RoundTripTests(SynchronousTestCase):
    def test_tx_round_trip(self):
        """A transaction survives object -> JSON text -> object -> JSON unchanged."""
        tx = _tx()
        obj = json.loads(json.dumps(tx_to_json(tx)))
        self.assertEqual(parse_tx(obj), tx)
        self.assertEqual(tx_to_json(parse_tx(obj)), tx_to_json(tx))

    def test_tx_json_shape(self):
        """The transaction view has the contract's keys, hex strings and integer amounts."""
        tx = _tx()
        obj = tx_to_json(tx)
        self.assertEqual(set(obj), {"tx_id", "version", "inputs", "outputs", "lock_time"})
        self.assertEqual(obj["tx_id"], tx.tx_id.hex())
        self.assertEqual(obj["inputs"][0], {"tx_id": FUNDING.tx_id.hex(), "output_index": 3,
                                            "public_key": ALICE.public_key.hex(),
                                            "signature": tx.inputs[0].signature.hex()})
        self.assertEqual(obj["outputs"][0], {"amount": 70_000, "recipient_address": BOB.address})

    def test_block_round_trip(self):
        """A block (coinbase included) survives object -> JSON text -> object -> JSON unchanged."""
        block = _block()
        obj = json.loads(json.dumps(block_to_json(block)))
        self.assertEqual(parse_block(obj), block)
        self.assertEqual(block_to_json(parse_block(obj)), block_to_json(block))

    def test_block_json_shape(self):
        """The block view has the contract's keys; target is 64 hex digits, timestamp an integer."""
        block = _block()
        obj = block_to_json(block)
        self.assertEqual(set(obj), {"hash", "index", "previous_hash", "merkle_root", "timestamp", "target",
                                    "nonce", "version", "transactions"})
        self.assertEqual(obj["hash"], block.hash.hex())
        self.assertEqual(len(obj["target"]), 64)
        self.assertEqual(int(obj["hash"], 16) <= int(obj["target"], 16), True)
        self.assertEqual(obj["index"], 1)
        self.assertEqual(header_to_json(block.header), {k: v for k, v in obj.items() if k != "transactions"})

    def test_hash_and_tx_id_are_optional(self):
        """Without `hash` or `tx_id`, parsing computes them from the contents."""
        obj = block_to_json(_block())
        del obj["hash"]
        del obj["transactions"][1]["tx_id"]
        self.assertEqual(parse_block(obj), _block())

    def test_uppercase_hex_is_accepted(self):
        """Hex is case-insensitive: the bytes, not the spelling, are what is hashed."""
        obj = tx_to_json(_tx())
        obj["tx_id"] = obj["tx_id"].upper()
        obj["inputs"][0]["signature"] = obj["inputs"][0]["signature"].upper()
        self.assertEqual(parse_tx(obj), _tx())


def refused(path, value, error=Malformed, names=None, what="block"):
    """A test that sets the field at path (a list of keys; value DELETE removes it) and expects error."""
    def test(self):
        obj = block_to_json(_block()) if what == "block" else tx_to_json(_tx())
        target = obj
        for key in path[:-1]:
            target = target[key]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        parse = parse_block if what == "block" else parse_tx
        err = self.assertRaises(error, parse, obj)
        self.assertEqual(err.code, error.code)
        self.assertIn(names, str(err))
    test.__doc__ = f"A {what} whose {'.'.join(map(str, path))} is {value!r} is refused with {error.__name__}."
    return test


DELETE = object()
OUT0 = ["outputs", 0]
IN0 = ["inputs", 0]


class TxRefusalTests(SynchronousTestCase):
    test_float_amount = refused(OUT0 + ["amount"], 70_000.0, BadAmount, "transaction.outputs[0].amount", "tx")
    test_boolean_amount = refused(OUT0 + ["amount"], True, BadAmount, "transaction.outputs[0].amount", "tx")
    test_string_amount = refused(OUT0 + ["amount"], "70000", BadAmount, "transaction.outputs[0].amount", "tx")
    test_negative_amount = refused(OUT0 + ["amount"], -1, BadAmount, "transaction.outputs[0].amount", "tx")
    test_over_supply_amount = refused(OUT0 + ["amount"], MAX_MONEY + 1, BadAmount, "transaction.outputs[0].amount",
                                      "tx")
    test_missing_amount = refused(OUT0 + ["amount"], DELETE, Malformed, "transaction.outputs[0].amount", "tx")
    test_missing_recipient = refused(OUT0 + ["recipient_address"], DELETE, Malformed,
                                     "transaction.outputs[0].recipient_address", "tx")
    test_recipient_not_string = refused(OUT0 + ["recipient_address"], 5, Malformed,
                                        "transaction.outputs[0].recipient_address", "tx")
    test_recipient_typo = refused(OUT0 + ["recipient_address"], BOB.address[:-1] + (
        "2" if BOB.address[-1] != "2" else "3"), BadAddress, "checksum", "tx")
    test_float_output_index = refused(IN0 + ["output_index"], 3.0, Malformed, "transaction.inputs[0].output_index",
                                      "tx")
    test_boolean_output_index = refused(IN0 + ["output_index"], False, Malformed,
                                        "transaction.inputs[0].output_index", "tx")
    test_negative_output_index = refused(IN0 + ["output_index"], -1, Malformed,
                                         "transaction.inputs[0].output_index", "tx")
    test_output_index_over_u32 = refused(IN0 + ["output_index"], 1 << 32, Malformed,
                                         "transaction.inputs[0].output_index", "tx")
    test_missing_input_tx_id = refused(IN0 + ["tx_id"], DELETE, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_missing_output_index = refused(IN0 + ["output_index"], DELETE, Malformed,
                                        "transaction.inputs[0].output_index", "tx")
    test_bad_hex_input_tx_id = refused(IN0 + ["tx_id"], "zz" * 32, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_odd_hex_input_tx_id = refused(IN0 + ["tx_id"], "0" * 63, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_short_input_tx_id = refused(IN0 + ["tx_id"], "00" * 31, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_long_input_tx_id = refused(IN0 + ["tx_id"], "00" * 33, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_spaced_hex_input_tx_id = refused(IN0 + ["tx_id"], "00 " * 32, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_input_tx_id_not_string = refused(IN0 + ["tx_id"], 0, Malformed, "transaction.inputs[0].tx_id", "tx")
    test_long_public_key = refused(IN0 + ["public_key"], "04" * 66, Malformed, "transaction.inputs[0].public_key",
                                   "tx")
    test_bad_hex_signature = refused(IN0 + ["signature"], "0g" * 64, Malformed, "transaction.inputs[0].signature",
                                     "tx")
    test_missing_inputs = refused(["inputs"], DELETE, Malformed, "transaction.inputs", "tx")
    test_inputs_not_list = refused(["inputs"], {}, Malformed, "transaction.inputs", "tx")
    test_input_not_object = refused(["inputs", 0], [], Malformed, "transaction.inputs[0]", "tx")
    test_missing_outputs = refused(["outputs"], DELETE, Malformed, "transaction.outputs", "tx")
    test_float_version = refused(["version"], 1.0, Malformed, "transaction.version", "tx")
    test_boolean_version = refused(["version"], True, Malformed, "transaction.version", "tx")
    test_negative_lock_time = refused(["lock_time"], -5, Malformed, "transaction.lock_time", "tx")
    test_float_lock_time = refused(["lock_time"], 5.0, Malformed, "transaction.lock_time", "tx")
    test_lock_time_over_u32 = refused(["lock_time"], 1 << 32, Malformed, "transaction.lock_time", "tx")
    test_tampered_tx_id = refused(["tx_id"], "11" * 32, Malformed, "transaction.tx_id", "tx")
    test_bad_hex_tx_id = refused(["tx_id"], "xy" * 32, Malformed, "transaction.tx_id", "tx")

    def test_tampered_amount_with_old_tx_id(self):
        """Changing an amount but keeping the old tx_id is refused: the tx_id is recomputed."""
        obj = tx_to_json(_tx())
        obj["outputs"][0]["amount"] += 1
        err = self.assertRaises(Malformed, parse_tx, obj)
        self.assertIn("does not match", str(err))

    def test_not_an_object(self):
        """A transaction that is not a JSON object is refused, naming what it is."""
        for value, kind in [([], "an array"), ("tx", "a string"), (None, "null"), (1.5, "a float")]:
            err = self.assertRaises(Malformed, parse_tx, value)
            self.assertIn(kind, str(err))

    def test_custom_name_and_money(self):
        """The caller's name prefixes every field, and max_money bounds amounts."""
        obj = tx_to_json(_tx())
        err = self.assertRaises(BadAmount, parse_tx, obj, "body.transaction", 69_999)
        self.assertIn("body.transaction.outputs[0].amount", str(err))


class BlockRefusalTests(SynchronousTestCase):
    test_tampered_hash = refused(["hash"], "00" * 32, Malformed, "block.hash")
    test_float_index = refused(["index"], 1.0, Malformed, "block.index")
    test_boolean_index = refused(["index"], True, Malformed, "block.index")
    test_negative_index = refused(["index"], -1, Malformed, "block.index")
    test_float_timestamp = refused(["timestamp"], 1_796_000_060.5, Malformed, "block.timestamp")
    test_boolean_timestamp = refused(["timestamp"], False, Malformed, "block.timestamp")
    test_negative_nonce = refused(["nonce"], -1, Malformed, "block.nonce")
    test_nonce_over_u64 = refused(["nonce"], 1 << 64, Malformed, "block.nonce")
    test_short_target = refused(["target"], "7f" * 31, Malformed, "block.target")
    test_integer_target = refused(["target"], 1 << 200, Malformed, "block.target")
    test_bad_hex_previous = refused(["previous_hash"], "g" * 64, Malformed, "block.previous_hash")
    test_short_merkle_root = refused(["merkle_root"], "00" * 16, Malformed, "block.merkle_root")
    test_missing_previous = refused(["previous_hash"], DELETE, Malformed, "block.previous_hash")
    test_missing_version = refused(["version"], DELETE, Malformed, "block.version")
    test_missing_transactions = refused(["transactions"], DELETE, Malformed, "block.transactions")
    test_transactions_not_list = refused(["transactions"], "[]", Malformed, "block.transactions")
    test_tx_float_amount = refused(["transactions", 1, "outputs", 0, "amount"], 1.5, BadAmount,
                                   "block.transactions[1].outputs[0].amount")
    test_tx_tampered_id = refused(["transactions", 0, "tx_id"], "22" * 32, Malformed, "block.transactions[0].tx_id")

    def test_header_hash_recomputed(self):
        """parse_header trusts no supplied hash: a nonce change with the old hash is refused."""
        obj = header_to_json(_block().header)
        obj["nonce"] += 1
        err = self.assertRaises(Malformed, parse_header, obj)
        self.assertIn("does not match", str(err))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


class StrictLoadsTests(SynchronousTestCase):

    @FAST
    @given(st.binary(max_size=64))
    def test_any_bytes_parse_or_are_malformed(self, raw):
        """Any bytes give a value or Malformed, never another exception."""
        try:
            loads(raw)
        except Malformed:
            pass

    @FAST
    @given(st.text(alphabet='[]{}":,0-9a\\ \n', max_size=80))
    def test_bracket_soup_parses_or_is_malformed(self, text):
        """Text made of JSON's structural characters gives a value or Malformed, never another exception."""
        try:
            loads(text.encode())
        except Malformed:
            pass

    @FAST
    @given(json_values)
    def test_round_trip(self, value):
        """What json.dumps writes, loads reads back unchanged."""
        self.assertEqual(loads(json.dumps(value).encode()), value)

    def test_deep_nesting_is_malformed(self):
        """Arrays or objects nested 100,000 deep are Malformed, not a RecursionError."""
        for raw in (nested(100_000), b'{"a":' * 100_000 + b"1" + b"}" * 100_000, b"[" * 100_000):
            err = self.assertRaises(Malformed, loads, raw)
            self.assertIn("deep", str(err))

    def test_depth_limit_is_exact(self):
        """Nesting up to max_depth parses; one more level is Malformed."""
        self.assertEqual(loads(nested(5), max_depth=5), [[[[[]]]]])
        self.assertRaises(Malformed, loads, nested(6), max_depth=5)

    def test_brackets_in_strings_do_not_count(self):
        """Brackets and escaped quotes inside strings are not nesting."""
        raw = json.dumps(["[" * 500 + '\\"{' * 100]).encode()
        self.assertEqual(loads(raw, max_depth=1), ["[" * 500 + '\\"{' * 100])

    def test_strictness(self):
        """Non-UTF-8 bytes, NaN, an infinite number, a repeated key, a BOM and trailing data are Malformed."""
        for raw in (b'"\xff"', b"[NaN]", b"[Infinity]", b"[1e999]", b'{"a": 1, "a": 2}',
                    b'\xef\xbb\xbf{}', b"{} {}", b"", b"9" * 5000):
            self.assertRaises(Malformed, loads, raw)

    def test_too_many_bytes(self):
        """A text over max_bytes is TooLarge before it is read."""
        err = self.assertRaises(TooLarge, loads, b"[" + b"1," * 100 + b"1]", max_bytes=100)
        self.assertEqual(err.code, "too-large")
