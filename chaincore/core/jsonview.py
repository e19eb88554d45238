"""Strict JSON views of transactions and blocks (CONTRACT 3).

JSON is only a view: parsing builds the objects from their fields and
recomputes every hash.  A supplied `tx_id` or `hash` must match what the
contents hash to, or the object is refused.  Integers must be JSON integers
(never floats or booleans) within their byte width; errors name the field.
`loads` is the one way from untrusted bytes to JSON values: every failure,
too deep a nesting included, is Malformed.
"""

import json
import math
import re
from itertools import accumulate

from .block import Block, Header
from .errors import BadAmount, Malformed, TooLarge
from .keys import address_payload
from .tx import Transaction, TxIn, TxOut

U32_MAX = 0xFFFFFFFF
U64_MAX = 0xFFFFFFFFFFFFFFFF
MAX_JSON_DEPTH = 64             # our deepest view (a block's input) is 4 deep
MAX_JSON_BYTES = 4_000_000

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_NESTING = {"[": 1, "{": 1, "]": -1, "}": -1}


def loads(raw: bytes, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES):
    """The JSON value raw holds, strictly: Malformed for anything that is not one UTF-8 JSON text
    nested at most max_depth deep, without NaN, infinities or repeated keys; TooLarge past max_bytes.

    The depth is measured before parsing, without recursion, so a 100,000-deep
    text is refused as cheaply as it is read instead of exhausting the stack.
    """
    if len(raw) > max_bytes:
        raise TooLarge(f"JSON text of {len(raw)} bytes is over {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Malformed(f"JSON text is not UTF-8 (byte {e.start})") from None
    # no text can nest deeper than it has brackets: most bodies are checked by counting them
    depth = 0 if text.count("{") + text.count("[") <= max_depth else json_depth(text)
    if depth > max_depth:
        raise Malformed(f"JSON nested {depth} deep, more than {max_depth}")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, a refused constant or key, a 4,300-digit int
        raise Malformed(f"not valid JSON: {str(e)[:200]}") from None


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in text (strings skipped); an upper bound for broken text."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_NESTING.__getitem__, brackets)), default=0)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {repeated[:40]!r} appears twice in an object")
    return obj


def require_int(value, name: str, lo: int = 0, hi: int = U64_MAX) -> int:
    """value as an int in [lo, hi]; Malformed naming `name` for anything else (floats and booleans too)."""
    if type(value) is not int:
        raise Malformed(f"{name} must be an integer, not {_kind(value)}")
    if not lo <= value <= hi:
        raise Malformed(f"{name} must be between {lo} and {hi}")
    return value


def require_amount(value, name: str, max_money: int) -> int:
    """An integer amount of base units from 0 to max_money (zero is valid in consensus, as in Bitcoin)."""
    if type(value) is not int:
        raise BadAmount(f"{name} must be an integer number of base units, not {_kind(value)}")
    if value < 0:
        raise BadAmount(f"{name} must not be negative")
    if value > max_money:
        raise BadAmount(f"{name} is over the money supply")
    return value


def require_hex(value, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise Malformed(f"{name} must be a hex string, not {_kind(value)}")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise Malformed(f"{name} is not valid hex") from None
    if len(value) != 2 * len(raw):  # fromhex skips whitespace; one value, one spelling (up to case)
        raise Malformed(f"{name} is not valid hex")
    if size is not None and len(raw) != size:
        raise Malformed(f"{name} must be {size} bytes ({2 * size} hex characters)")
    if max_size is not None and len(raw) > max_size:
        raise Malformed(f"{name} must be at most {max_size} bytes")
    return raw


def require_dict(value, name: str) -> dict:
    if not isinstance(value, dict):
        raise Malformed(f"{name} must be a JSON object, not {_kind(value)}")
    return value


def require_list(value, name: str, max_len: int) -> list:
    if not isinstance(value, list):
        raise Malformed(f"{name} must be a JSON array, not {_kind(value)}")
    if len(value) > max_len:
        raise Malformed(f"{name} has more than {max_len} entries")
    return value


def field(obj: dict, key: str, name: str):
    try:
        return obj[key]
    except KeyError:
        raise Malformed(f"{name}.{key} is missing") from None


def _kind(value) -> str:
    return {bool: "a boolean", float: "a float", str: "a string", list: "an array",
            dict: "an object", type(None): "null", int: "an integer"}.get(type(value), type(value).__name__)


def tx_to_json(tx: Transaction) -> dict:
    return {
        "tx_id": tx.tx_id.hex(),
        "version": tx.version,
        "inputs": [{"tx_id": i.prev_tx_id.hex(), "output_index": i.output_index,
                    "public_key": i.public_key.hex(), "signature": i.signature.hex()} for i in tx.inputs],
        "outputs": [{"amount": o.amount, "recipient_address": o.address} for o in tx.outputs],
        "lock_time": tx.lock_time,
    }


def parse_tx(obj, name: str = "transaction", max_money: int = 21_000_000 * 100_000_000) -> Transaction:
    """A Transaction from its JSON view; Malformed (naming the field) if any part is off."""
    obj = require_dict(obj, name)
    version = require_int(obj.get("version", 1), f"{name}.version", hi=U32_MAX)
    lock_time = require_int(obj.get("lock_time", 0), f"{name}.lock_time", hi=U32_MAX)
    inputs = []
    for n, raw in enumerate(require_list(field(obj, "inputs", name), f"{name}.inputs", 10_000)):
        txin = _plain_input(raw)
        if txin is not None:
            inputs.append(txin)
            continue
        where = f"{name}.inputs[{n}]"  # the careful path: it names what is wrong
        raw = require_dict(raw, where)
        inputs.append(TxIn(
            require_hex(field(raw, "tx_id", where), f"{where}.tx_id", 32),
            require_int(field(raw, "output_index", where), f"{where}.output_index", hi=U32_MAX),
            require_hex(raw.get("public_key", ""), f"{where}.public_key", max_size=65),
            require_hex(raw.get("signature", ""), f"{where}.signature", max_size=100),
        ))
    outputs = []
    for n, raw in enumerate(require_list(field(obj, "outputs", name), f"{name}.outputs", 10_000)):
        if type(raw) is dict:
            amount, address = raw.get("amount"), raw.get("recipient_address")
            if type(amount) is int and 0 <= amount <= max_money and type(address) is str:
                outputs.append(TxOut(amount, address_payload(address)))  # (its errors are the careful path's)
                continue
        where = f"{name}.outputs[{n}]"
        raw = require_dict(raw, where)
        amount = require_amount(field(raw, "amount", where), f"{where}.amount", max_money)
        address = field(raw, "recipient_address", where)
        if not isinstance(address, str):
            raise Malformed(f"{where}.recipient_address must be a string")
        outputs.append(TxOut(amount, address_payload(address)))
    tx = Transaction(version, tuple(inputs), tuple(outputs), lock_time)
    if "tx_id" in obj:
        claimed = require_hex(obj["tx_id"], f"{name}.tx_id", 32)
        if claimed != tx.tx_id:
            raise Malformed(f"{name}.tx_id {obj['tx_id']} does not match its contents ({tx.tx_id.hex()})")
    return tx


def _plain_input(raw) -> TxIn | None:
    """The input raw describes when every field is present and well formed, else None: parse_tx's fast
    path, which takes exactly what its careful path takes (and leaves that path to name the error)."""
    if type(raw) is not dict:
        return None
    tx_id, index = raw.get("tx_id"), raw.get("output_index")
    key, signature = raw.get("public_key", ""), raw.get("signature", "")
    if type(tx_id) is not str or type(index) is not int or type(key) is not str or type(signature) is not str \
            or len(tx_id) != 64 or len(key) > 130 or len(signature) > 200 or not 0 <= index <= U32_MAX:
        return None
    try:
        prev, key_bytes, signature_bytes = bytes.fromhex(tx_id), bytes.fromhex(key), bytes.fromhex(signature)
    except ValueError:
        return None
    # fromhex skips whitespace: one value, one spelling, as require_hex
    if len(prev) != 32 or 2 * len(key_bytes) != len(key) or 2 * len(signature_bytes) != len(signature):
        return None
    return TxIn(prev, index, key_bytes, signature_bytes)


def header_to_json(header: Header) -> dict:
    return {
        "hash": header.hash.hex(),
        "index": header.height,
        "previous_hash": header.previous_hash.hex(),
        "merkle_root": header.merkle_root.hex(),
        "timestamp": header.timestamp,
        "target": f"{header.target:064x}",
        "nonce": header.nonce,
        "version": header.version,
    }


def block_to_json(block: Block) -> dict:
    out = header_to_json(block.header)
    out["transactions"] = [tx_to_json(tx) for tx in block.transactions]
    return out


def parse_header(obj, name: str = "header") -> Header:
    obj = require_dict(obj, name)
    header = Header(
        version=require_int(field(obj, "version", name), f"{name}.version", hi=U32_MAX),
        height=require_int(field(obj, "index", name), f"{name}.index", hi=U32_MAX),
        previous_hash=require_hex(field(obj, "previous_hash", name), f"{name}.previous_hash", 32),
        merkle_root=require_hex(field(obj, "merkle_root", name), f"{name}.merkle_root", 32),
        timestamp=require_int(field(obj, "timestamp", name), f"{name}.timestamp"),
        target=int.from_bytes(require_hex(field(obj, "target", name), f"{name}.target", 32), "big"),
        nonce=require_int(field(obj, "nonce", name), f"{name}.nonce"),
    )
    if "hash" in obj:
        claimed = require_hex(obj["hash"], f"{name}.hash", 32)
        if claimed != header.hash:
            raise Malformed(f"{name}.hash {obj['hash']} does not match the header ({header.hash.hex()})")
    return header


def parse_block(obj, name: str = "block", max_money: int = 21_000_000 * 100_000_000) -> Block:
    """A Block from its JSON view, every hash recomputed; Malformed (naming the field) if any part is off."""
    header = parse_header(obj, name)
    txs = require_list(field(obj, "transactions", name), f"{name}.transactions", 100_000)
    return Block(header, tuple(parse_tx(t, f"{name}.transactions[{n}]", max_money) for n, t in enumerate(txs)))
