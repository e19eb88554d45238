"""A battery of bad requests: each gets the right 4xx with a JSON {"error"} and leaves the node unchanged.

One line per case: what to send (built from a fresh funded node), the status
and the error code.  After each, the tip, the mempool size and the UTXO count
must be what they were just before the request (CONTRACT 2: errors are JSON,
4xx for bad input; CONTRACT 3 and 4: amounts and consensus rules).
"""

import dataclasses
import json

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import jsonview
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint, make_coinbase

from ..support.api import (
    FUNDED_HEIGHT, APIClient, assert_error, assert_json, funded_chain, funded_node, mature_outpoint, state_of,
)
from ..support.builders import ALICE, BOB, CAROL, make_block, payload, signed_tx, solve
from tests.support.nodes import settled

FEE = 1_000
REWARD = REGTEST.block_reward(FUNDED_HEIGHT + 1)


@dataclasses.dataclass
class Req:
    path: str
    body: object = None          # a JSON value, or bytes sent as they are
    content_type: str | None = "application/json"
    headers: dict = dataclasses.field(default_factory=dict)
    client: str = "loopback"     # "loopback", "remote" (203.0.113.7) or "limited" (1000-byte body limit)


def good_tx(height: int = 1, key=ALICE, to=BOB, fee: int = FEE):
    return signed_tx([(mature_outpoint(height), key)], [(to, REGTEST.block_reward(height) - fee)])


def tx_json(tx=None) -> dict:
    return jsonview.tx_to_json(tx or good_tx())


def with_output(**changes) -> dict:
    """The good transaction's JSON with its first output changed (tx_id dropped: it would no longer match)."""
    body = tx_json()
    del body["tx_id"]
    body["outputs"][0].update(changes)
    return body


def post_tx(tx_obj) -> Req:
    return Req("/add_transaction", {"transaction": tx_obj})


def post_block(block_obj, **kw) -> Req:
    return Req("/submit_block", {"block": block_obj}, **kw)


def tip():
    return funded_chain()[-1]


def block_json(block=None, **changes) -> dict:
    body = jsonview.block_to_json(block or make_block(tip(), pay_to=BOB))
    body.update(changes)
    return body


def failing_pow_nonce(header) -> int:
    return next(n for n in range(1000) if not header.with_nonce(n).has_valid_pow)


def with_header(block, **changes):
    """block with its header fields changed and proof of work found again."""
    return dataclasses.replace(block, header=solve(dataclasses.replace(block.header, nonce=0, **changes)))


def double_spend(t) -> Req:
    settled(t.node.submit_tx(good_tx(height=1, to=BOB)))
    return post_tx(tx_json(good_tx(height=1, to=CAROL)))


def tampered_signature() -> dict:
    body = tx_json()
    sig = bytearray(bytes.fromhex(body["inputs"][0]["signature"]))
    sig[5] ^= 0x01
    body["inputs"][0]["signature"] = sig.hex()
    del body["tx_id"]
    return body


def raw_amount(literal: str) -> bytes:
    """The good transaction's body with its first amount written as `literal`, byte for byte."""
    body = {"transaction": with_output(amount=12345678987654321)}
    return json.dumps(body).replace("12345678987654321", literal).encode()


def bad_checksum(address: str) -> str:
    return address[:-1] + ("2" if address[-1] != "2" else "3")


CASES = {  # name: (make(testcase) -> Req, status, code or None)
    "malformed_json": (lambda t: Req("/add_transaction", b'{"transaction": {'), 400, "malformed"),
    "body_not_object": (lambda t: Req("/add_transaction", [tx_json()]), 400, "malformed"),
    "body_a_string": (lambda t: Req("/submit_block", "block"), 400, "malformed"),
    "missing_transaction": (lambda t: Req("/add_transaction", {"tx": tx_json()}), 400, "malformed"),
    "missing_block": (lambda t: Req("/submit_block", {}), 400, "malformed"),
    "wrong_content_type": (lambda t: Req("/add_transaction", {"transaction": tx_json()}, "text/plain"),
                           400, "malformed"),
    "no_content_type": (lambda t: Req("/add_transaction", {"transaction": tx_json()}, None), 400, "malformed"),
    "float_amount": (lambda t: post_tx(with_output(amount=1.5)), 400, "bad-amount"),
    "integral_float_amount": (lambda t: post_tx(with_output(amount=1000.0)), 400, "bad-amount"),
    "negative_amount": (lambda t: post_tx(with_output(amount=-1000)), 400, "bad-amount"),
    "zero_amount": (lambda t: post_tx(with_output(amount=0)), 400, "bad-amount"),
    "boolean_amount": (lambda t: post_tx(with_output(amount=True)), 400, "bad-amount"),
    "huge_amount": (lambda t: post_tx(with_output(amount=10 ** 30)), 400, "bad-amount"),
    "over_money_supply": (lambda t: post_tx(with_output(amount=REGTEST.max_money + 1)), 400, "bad-amount"),
    "string_amount": (lambda t: post_tx(with_output(amount="1000")), 400, "bad-amount"),
    "null_amount": (lambda t: post_tx(with_output(amount=None)), 400, "bad-amount"),
    "nan_literal": (lambda t: Req("/add_transaction", raw_amount("NaN")), 400, "malformed"),
    "infinity_literal": (lambda t: Req("/add_transaction", raw_amount("Infinity")), 400, "malformed"),
    "exponent_literal": (lambda t: Req("/add_transaction", raw_amount("1e400")), 400, "malformed"),
    "5000_digit_literal": (lambda t: Req("/add_transaction", raw_amount("9" * 5000)), 400, "malformed"),
    "float_output_index": (lambda t: post_tx(dict(tx_json(), inputs=[dict(tx_json()["inputs"][0],
                                                                         output_index=0.0)])), 400, "malformed"),
    "boolean_version": (lambda t: post_tx(dict(with_output(), version=True)), 400, "malformed"),
    "tx_id_mismatch": (lambda t: post_tx(dict(tx_json(), tx_id="00" * 32)), 400, "malformed"),
    "oversize_body": (lambda t: Req("/add_transaction", b'{"transaction": "' + b"a" * 5000 + b'"}',
                                    client="limited"), 413, "too-large"),
    "tampered_signature": (lambda t: post_tx(tampered_signature()), 400, "bad-signature"),
    "unknown_input": (lambda t: post_tx(tx_json(signed_tx([(OutPoint(b"\x07" * 32, 0), ALICE)], [(BOB, 5000)]))),
                      400, "missing-input"),
    "immature_coinbase": (lambda t: post_tx(tx_json(good_tx(height=FUNDED_HEIGHT))), 400, "immature-coinbase"),
    "double_spend_vs_mempool": (double_spend, 400, "double-spend"),
    "fee_too_low": (lambda t: post_tx(tx_json(good_tx(fee=0))), 400, "fee-too-low"),
    "overspend": (lambda t: post_tx(tx_json(good_tx(fee=-1))), 400, "insufficient-funds"),
    "wrong_key": (lambda t: post_tx(tx_json(good_tx(key=BOB))), 400, "wrong-key"),
    "coinbase_as_transaction": (lambda t: post_tx(tx_json(make_coinbase(5, [(payload(BOB), 100)]))),
                                400, "coinbase"),
    "output_address_bad_checksum": (lambda t: post_tx(with_output(recipient_address=bad_checksum(BOB.address))),
                                    400, "bad-address"),
    "block_bad_merkle_root": (lambda t: post_block(block_json(with_header(make_block(tip()), merkle_root=bytes(32)))),
                              400, "bad-merkle-root"),
    "block_pow_fails": (lambda t: post_block({k: v for k, v in block_json(
        nonce=failing_pow_nonce(make_block(tip()).header)).items() if k != "hash"}), 400, "bad-pow"),
    "block_hash_mismatch": (lambda t: post_block(block_json(hash=tip().hash.hex())), 400, "malformed"),
    "block_tx_replaced": (lambda t: post_block(block_json(make_block(tip(), [good_tx(1)], fees=FEE))
                                               | {"transactions": block_json(make_block(tip(), [good_tx(2)], fees=FEE))
                                                  ["transactions"]}), 400, "bad-merkle-root"),
    "block_tx_dropped": (lambda t: post_block(block_json(make_block(tip(), [good_tx()], fees=FEE))
                                              | {"transactions": block_json()["transactions"][:1]}),
                         400, "bad-merkle-root"),
    "block_future_timestamp": (lambda t: post_block(block_json(make_block(
        tip(), timestamp=t.node.now() + REGTEST.max_future_s + 1))), 400, "time-too-new"),
    "block_timestamp_at_median": (lambda t: post_block(block_json(make_block(
        tip(), timestamp=t.node.chain.tip.median_time_past))), 400, "time-too-old"),
    "block_easier_target": (lambda t: post_block(block_json(make_block(tip(), target=(1 << 256) - 1))),
                            400, "bad-target"),
    "block_wrong_height": (lambda t: post_block(block_json(make_block(tip(), height=FUNDED_HEIGHT + 2))),
                           400, "bad-height"),
    "block_coinbase_overpays": (lambda t: post_block(block_json(make_block(tip(), reward=REWARD + 1))),
                                400, "bad-coinbase-value"),
    "block_two_coinbases": (lambda t: post_block(block_json(make_block(tip(), [make_coinbase(
        FUNDED_HEIGHT + 1, [(payload(BOB), 1)], b"second")]))), 400, "extra-coinbase"),
    "block_spends_immature_coinbase": (lambda t: post_block(block_json(make_block(
        tip(), [good_tx(height=FUNDED_HEIGHT)], fees=FEE))), 400, "immature-coinbase"),
    "block_float_timestamp": (lambda t: post_block(block_json(timestamp=float(tip().header.timestamp + 60))),
                              400, "malformed"),
    "block_negative_index": (lambda t: post_block(block_json(index=-1)), 400, "malformed"),
    "block_short_target": (lambda t: post_block(block_json(target="7f")), 400, "malformed"),
    "local_mining_from_remote": (lambda t: post_block(block_json(), headers={"X-Local-Mining": "true"},
                                                      client="remote"), 403, "forbidden"),
    "add_peer_from_remote": (lambda t: Req("/peers", {"url": "http://localhost:5001"}, client="remote"),
                             403, "forbidden"),
}


def refused(make, status, code):
    def test(self):
        request = make(self)
        before = state_of(self.node)
        answer = self.send(request)
        assert_error(self, answer, status, code)
        self.assertEqual(state_of(self.node), before)
    test.__doc__ = f"The request is refused with {status}{f' ({code})' if code else ''} and changes nothing."
    return test


class RefusalTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node

    def send(self, req: Req):
        kw = {"client_address": "203.0.113.7"} if req.client == "remote" else {}
        if req.client == "limited":
            kw["max_body_bytes"] = 1_000
        client = APIClient(self, self.service, **kw)
        data = req.body if isinstance(req.body, bytes) else json.dumps(req.body).encode()
        return client.request("POST", req.path, data=data, headers=req.headers, content_type=req.content_type)

    for _name, (_make, _status, _code) in CASES.items():
        locals()["test_" + _name] = refused(_make, _status, _code)
    del _name, _make, _status, _code

    def test_battery_is_large(self):
        """The battery holds at least 25 distinct bad requests."""
        self.assertGreaterEqual(len(CASES), 25)

    def test_good_request_after_refusals(self):
        """The same client's good transaction is still accepted after a refused one (no state left behind)."""
        self.send(post_tx(tampered_signature()))
        answer = self.send(post_tx(tx_json()))
        self.assertEqual((answer.status, answer.json["status"]), (200, "accepted"))

    def test_orphan_is_not_an_error(self):
        """A block with an unknown parent is a 202 orphan, not an error, and the tip, mempool and UTXOs stay."""
        parent = make_block(tip(), pay_to=BOB)
        before = state_of(self.node)
        answer = self.send(post_block(block_json(make_block(parent, pay_to=BOB))))
        self.assertEqual(answer.status, 202)
        assert_json(self, answer)
        self.assertEqual((answer.json["status"], answer.json["missing"]), ("orphan", parent.hash.hex()))
        self.assertEqual(state_of(self.node), before)

    def test_local_mining_from_loopback(self):
        """X-Local-Mining from a loopback client is honoured: the block is accepted."""
        answer = self.send(post_block(block_json(), headers={"X-Local-Mining": "true"}))
        self.assertEqual((answer.status, answer.json["status"]), (200, "accepted"))

    def test_limit_lets_small_bodies_through(self):
        """Under the LimitedRequest, a body within the limit is parsed as usual."""
        answer = self.send(Req("/add_transaction", {"transaction": 5}, client="limited"))
        assert_error(self, answer, 400, "malformed")

    def test_bad_json_is_named_once(self):
        """A body that is not JSON is refused saying so once, with where the parser stopped."""
        answer = self.send(Req("/add_transaction", b'{"transaction": {'))
        assert_error(self, answer, 400, "malformed")
        self.assertTrue(answer.json["error"].startswith("body is not valid JSON: "), answer.json["error"])
        self.assertEqual(answer.json["error"].count("JSON"), 1, answer.json["error"])
