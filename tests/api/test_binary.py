"""Binary transfer by content negotiation (CONTRACT 7, docs/protocol.md 11), through StubTreq.

`Accept: application/octet-stream` on /block/<hash>, /blocks and /headers
answers canonical bytes (lists framed); `Content-Type: application/octet-stream`
on /submit_block and /add_transaction carries them.  JSON stays the default,
for `*/*`, ties and lower q-values; every error stays JSON.
"""

from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.routes import wants_binary
from chaincore.api.schema import openapi
from chaincore.core import wire
from chaincore.core.block import HEADER_SIZE
from chaincore.core.encoding import compact_size
from chaincore.core.params import REGTEST

from ..support.api import (
    FUNDED_HEIGHT, APIClient, assert_error, assert_json, funded_chain, funded_node, mature_outpoint, state_of,
)
from ..support.builders import ALICE, BOB, make_block, signed_tx

OCTETS = "application/octet-stream"
FEE = 1_000


def good_tx(height: int = 1):
    return signed_tx([(mature_outpoint(height), ALICE)], [(BOB, REGTEST.block_reward(height) - FEE)])


class _Request:
    """Just enough of a twisted.web request for wants_binary."""

    def __init__(self, accept):
        self.accept = accept

    def getHeader(self, name):
        return self.accept


class NegotiationTests(SynchronousTestCase):
    def test_accept_header_decides(self):
        """Binary only for an explicit octet-stream ranked above every JSON range; else JSON."""
        cases = {
            None: False,
            "": False,
            "*/*": False,
            "application/json": False,
            OCTETS: True,
            f"{OCTETS}, */*;q=0.1": True,
            f"application/json;q=0.5, {OCTETS}": True,
            f"{OCTETS};q=0.5, application/json": False,
            f"{OCTETS}, application/json": False,           # a tie keeps the default
            f"{OCTETS};q=0": False,
            f"{OCTETS};q=0.9, */*;q=0.9": False,
            f"{OCTETS};q=0.9, application/*;q=0.8": True,
            f"{OCTETS};q=bogus": False,
            "APPLICATION/OCTET-STREAM": True,
        }
        for accept, binary in cases.items():
            self.assertEqual(wants_binary(_Request(accept)), binary, accept)


class BinaryAnswerTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.client = APIClient(self, self.service)
        self.chain = funded_chain()

    def get_bytes(self, path: str, accept: str = OCTETS):
        answer = self.client.get(path, headers={"Accept": accept})
        self.assertEqual(answer.status, 200, answer.body[:200])
        self.assertEqual(answer.content_type, OCTETS)
        return answer

    def test_block_is_its_canonical_bytes(self):
        """GET /block/<hash> with Accept octet-stream answers exactly the block's canonical bytes."""
        block = self.chain[7]
        answer = self.get_bytes(f"/block/{block.hash.hex()}")
        self.assertEqual(answer.body, block.raw)
        self.assertEqual(wire.decode_block(answer.body, REGTEST.max_block_size).hash, block.hash)
        self.assertEqual(answer.header("Vary"), "Accept")

    def test_blocks_are_framed(self):
        """GET /blocks in binary is compact(count) then each block as var_bytes, with the tip height beside."""
        answer = self.get_bytes("/blocks?start=3&limit=4")
        expected = self.chain[3:7]
        framed = compact_size(4) + b"".join(compact_size(len(b.raw)) + b.raw for b in expected)
        self.assertEqual(answer.body, framed)
        decoded = wire.decode_blocks(answer.body, REGTEST.max_block_size)
        self.assertEqual([b.hash for b in decoded], [b.hash for b in expected])
        self.assertEqual(answer.header("X-ChainCore-Height"), str(FUNDED_HEIGHT))

    def test_blocks_stop_at_max_bytes_and_say_more(self):
        """A binary /blocks answer stops before max_bytes (one block at least) and says so in X-ChainCore-More."""
        one = len(self.chain[3].raw)
        answer = self.get_bytes(f"/blocks?start=3&limit=10&max_bytes={2 * one + 10}")
        decoded = wire.decode_blocks(answer.body, REGTEST.max_block_size)
        self.assertEqual([b.hash for b in decoded], [b.hash for b in self.chain[3:5]])
        self.assertEqual(answer.header("X-ChainCore-More"), "true")
        tiny = self.get_bytes("/blocks?start=3&limit=10&max_bytes=1")
        self.assertEqual(len(wire.decode_blocks(tiny.body, REGTEST.max_block_size)), 1)
        whole = self.get_bytes("/blocks?start=3&limit=4")
        self.assertEqual(whole.header("X-ChainCore-More"), "false")

    def test_headers_say_whether_the_tip_lies_beyond(self):
        """A binary /headers answer cut by its limit says more; one that reaches the tip does not."""
        cut = self.get_bytes(f"/headers?locator={self.chain[100].hash.hex()}&limit=1")
        self.assertEqual(len(wire.decode_headers(cut.body)), 1)
        self.assertEqual(cut.header("X-ChainCore-More"), "true")
        whole = self.get_bytes(f"/headers?locator={self.chain[100].hash.hex()}")
        self.assertEqual(whole.header("X-ChainCore-More"), "false")

    def test_headers_are_framed(self):
        """GET /headers in binary is a framed list of 120-byte headers after the locator's hash."""
        answer = self.get_bytes(f"/headers?locator={self.chain[100].hash.hex()}")
        headers = wire.decode_headers(answer.body)
        self.assertEqual([h.hash for h in headers], [b.hash for b in self.chain[101:]])
        self.assertEqual(len(answer.body), 1 + len(headers) * (1 + HEADER_SIZE))

    def test_empty_list_is_one_byte(self):
        """Blocks past the tip in binary are the single byte 00."""
        self.assertEqual(self.get_bytes(f"/blocks?start={FUNDED_HEIGHT + 5}").body, b"\x00")

    def test_json_stays_the_default(self):
        """Without Accept, with */*, or with octet-stream ranked lower, the answer is the JSON one."""
        block = self.chain[7]
        for accept in (None, "*/*", f"{OCTETS};q=0.2, application/json"):
            headers = {"Accept": accept} if accept else {}
            answer = self.client.get(f"/block/{block.hash.hex()}", headers=headers)
            self.assertEqual(answer.status, 200)
            assert_json(self, answer)
            self.assertEqual(answer.json["hash"], block.hash.hex())

    def test_errors_stay_json(self):
        """An unknown block asked for in binary is still a 404 JSON error."""
        answer = self.client.get("/block/" + "ab" * 32, headers={"Accept": OCTETS})
        assert_error(self, answer, 404, "not-found")

    def test_bad_parameter_stays_json(self):
        """A bad /blocks parameter asked for in binary is a 400 JSON error."""
        answer = self.client.get("/blocks?start=x", headers={"Accept": OCTETS})
        assert_error(self, answer, 400, "malformed")


class BinaryPostTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def post_bytes(self, path: str, data: bytes, client=None):
        return (client or self.client).request("POST", path, data=data, content_type=OCTETS)

    def test_transaction_round_trip(self):
        """A transaction posted as bytes is accepted, and GET /tx gives back the same transaction."""
        tx = good_tx()
        answer = self.post_bytes("/add_transaction", tx.raw)
        self.assertEqual(answer.status, 200, answer.body)
        assert_json(self, answer)
        self.assertEqual(answer.json, {"status": "accepted", "tx_id": tx.tx_id.hex()})
        self.assertIn(tx.tx_id, self.node.mempool)
        self.assertEqual(self.client.get_json(f"/tx/{tx.tx_id.hex()}")["tx_id"], tx.tx_id.hex())

    def test_block_round_trip(self):
        """A block posted as bytes becomes the tip, and GET /block in binary gives back the same bytes."""
        block = make_block(self.node.chain.block(self.node.chain.tip.hash), [good_tx()], fees=FEE)
        answer = self.post_bytes("/submit_block", block.raw)
        self.assertEqual(answer.status, 200, answer.body)
        self.assertEqual(answer.json["status"], "accepted")
        self.assertEqual(self.node.chain.tip.hash, block.hash)
        again = self.client.get(f"/block/{block.hash.hex()}", headers={"Accept": OCTETS})
        self.assertEqual(again.body, block.raw)

    def test_bad_bytes_are_400_json(self):
        """Bytes that are not exactly one object (cut, trailing, garbage) get 400 malformed and change nothing."""
        tx = good_tx()
        block = make_block(self.node.chain.block(self.node.chain.tip.hash))
        before = state_of(self.node)
        for path, data in (("/add_transaction", tx.raw[:-1]), ("/add_transaction", tx.raw + b"\x00"),
                           ("/add_transaction", b""), ("/submit_block", block.raw[:100]),
                           ("/submit_block", block.raw + b"\x01"), ("/submit_block", b"\xff" * 300)):
            assert_error(self, self.post_bytes(path, data), 400, "malformed")
        self.assertEqual(state_of(self.node), before)

    def test_rule_breaking_bytes_get_the_rule(self):
        """A well-formed transaction whose signature is wrong is refused with its rule's code, as in JSON."""
        tx = good_tx()
        forged = tx.with_signatures([bytes(64)])
        assert_error(self, self.post_bytes("/add_transaction", forged.raw), 400, "bad-signature")

    def test_oversize_block_is_413(self):
        """Bytes over the block size limit are refused with 413 JSON before they are decoded."""
        data = b"\x00" * (REGTEST.max_block_size + 1)
        answer = self.post_bytes("/submit_block", data)
        assert_error(self, answer, 413, "too-large")

    def test_oversize_body_is_413_at_the_site(self):
        """Bytes over the site's body limit are refused by the site with 413 JSON, unread."""
        limited = APIClient(self, self.service, max_body_bytes=1000)
        answer = self.post_bytes("/add_transaction", b"\x01" * 5000, client=limited)
        self.assertEqual(answer.status, 413)
        assert_json(self, answer)

    def test_json_body_with_octet_type_is_malformed(self):
        """A JSON body sent as octet-stream is read as bytes, and refused as malformed."""
        answer = self.post_bytes("/add_transaction", b'{"transaction": {}}')
        assert_error(self, answer, 400, "malformed")


class DocumentTests(SynchronousTestCase):
    def test_openapi_names_the_binary_forms(self):
        """The OpenAPI document offers octet-stream on the ten operations that take or give bytes, and no other;
        errors are JSON (the explorer's pages refuse with pages)."""
        doc = openapi()
        binary = set()
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                bodies = [op.get("requestBody", {}).get("content", {})]
                bodies += [r.get("content", {}) for r in op["responses"].values()]
                if any(OCTETS in c for c in bodies):
                    binary.add((method, path))
                page = path == "/" or path.startswith(("/explorer/", "/search"))
                for status, response in op["responses"].items():
                    if int(status) >= 400 and not (page and status in ("400", "404")):
                        self.assertEqual(list(response["content"]), ["application/json"])
        self.assertEqual(binary, {("get", "/block/{hash}"), ("get", "/blocks"), ("get", "/headers"),
                                  ("post", "/submit_block"), ("post", "/add_transaction"), ("post", "/announce"),
                                  ("post", "/announce_txs"), ("post", "/send_compact"), ("get", "/compact/{hash}"), ("post", "/block_txs"), ("post", "/txs")})


class StoredBytesTests(SynchronousTestCase):
    def test_binary_answers_are_the_stored_bytes(self):
        """Binary /block and /blocks answers are the store's bytes as they are, never a re-encoding."""
        service = funded_node()
        node = service.node
        block = funded_chain()[9]
        self.assertEqual(node.block_bytes(block.hash), node.store.get_block(block.hash))
        self.assertEqual(node.main_block_bytes(8, 3), [node.store.get_block(b.hash) for b in funded_chain()[8:11]])
        self.assertEqual(node.main_block_bytes(FUNDED_HEIGHT, 10), [funded_chain()[-1].raw])
