"""Every endpoint of CONTRACT 2 through Klein and StubTreq, with no sockets.

Each test starts from a fresh regtest node holding a funded chain
(tests/support/api.py) and checks the answer's status, its JSON content type
(text for /metrics, HTML for /) and the fields the contract names.
"""

import hashlib
import re

from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.routes import NodeAPI, is_loopback
from chaincore.api.schema import openapi
from chaincore.core import jsonview
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint

from ..support.api import (
    FUNDED_HEIGHT, APIClient, assert_error, assert_json, funded_chain, funded_node, mature_outpoint, state_of,
)
from ..support.builders import ALICE, BOB, CAROL, make_block, signed_tx
from tests.support.nodes import settled

STATUS_FIELDS = {"node_id", "version", "network", "genesis_hash", "height", "blockchain_length", "tip_hash",
                 "chainwork", "target", "peer_count", "mempool_size", "coinbase_maturity", "block_reward",
                 "url", "syncing"}


def pay_bob(height: int = 1, amount: int = 10_000_000, fee: int = 1_000):
    """A valid transaction spending ALICE's coinbase at height: amount to BOB, the change back to ALICE."""
    coin = REGTEST.block_reward(height)
    return signed_tx([(mature_outpoint(height), ALICE)], [(BOB, amount), (ALICE, coin - amount - fee)])


class APITestCase(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.node = self.service.node
        self.client = APIClient(self, self.service)
        self.tip = funded_chain()[-1]


class StatusAndChainTests(APITestCase):
    def test_status_fields(self):
        """/status names every CONTRACT 2 field, with blockchain_length = height + 1 and the advertised url."""
        status = self.client.get_json("/status")
        self.assertLessEqual(STATUS_FIELDS, set(status))
        self.assertEqual(status["height"], FUNDED_HEIGHT)
        self.assertEqual(status["blockchain_length"], FUNDED_HEIGHT + 1)
        self.assertEqual(status["tip_hash"], self.tip.hash.hex())
        self.assertEqual(status["genesis_hash"], REGTEST.genesis_hash.hex())
        self.assertEqual(status["network"], "regtest")
        self.assertEqual(status["url"], "http://localhost:5000")
        self.assertEqual(status["coinbase_maturity"], 100)
        self.assertEqual(status["block_reward"], REGTEST.block_reward(FUNDED_HEIGHT + 1))
        self.assertEqual(int(status["target"], 16), REGTEST.pow_limit)
        self.assertEqual((status["mempool_size"], status["peer_count"], status["syncing"]), (0, 0, False))

    def test_whole_chain(self):
        """/chain without parameters is every main-chain block from genesis, with the length."""
        body = self.client.get_json("/chain")
        self.assertEqual(body["length"], FUNDED_HEIGHT + 1)
        self.assertEqual([b["hash"] for b in body["chain"]], [b.hash.hex() for b in funded_chain()])
        self.assertEqual(body["chain"][5], jsonview.block_to_json(funded_chain()[5]))

    def test_chain_window(self):
        """/chain?start=H&limit=N is N blocks from height H; the length is still the whole chain's."""
        body = self.client.get_json("/chain?start=10&limit=3")
        self.assertEqual([b["index"] for b in body["chain"]], [10, 11, 12])
        self.assertEqual(body["length"], FUNDED_HEIGHT + 1)

    def test_blocks(self):
        """/blocks?start&limit gives main-chain blocks by height and stops at the tip."""
        body = self.client.get_json(f"/blocks?start={FUNDED_HEIGHT - 1}&limit=5")
        self.assertEqual([b["index"] for b in body["blocks"]], [FUNDED_HEIGHT - 1, FUNDED_HEIGHT])
        self.assertEqual(body["blocks"][-1]["hash"], self.tip.hash.hex())

    def test_blocks_limit_capped(self):
        """A /blocks limit over the cap is served as the cap (CONTRACT 2: "N capped"), not refused."""
        body = self.client.get_json("/blocks?start=0&limit=100000")
        self.assertEqual(len(body["blocks"]), min(500, FUNDED_HEIGHT + 1))

    def test_huge_limit_capped(self):
        """A limit of any size is taken as the cap, as the OpenAPI document says (no maximum, "more than 500 is
        taken as 500"): 2^64 and 30 digits too, which were refused."""
        for limit in (str(2 ** 64), "9" * 30):
            body = self.client.get_json(f"/blocks?start=0&limit={limit}")
            self.assertEqual(len(body["blocks"]), min(500, FUNDED_HEIGHT + 1))
            self.assertEqual(len(self.client.get_json(f"/headers?limit={limit}")["headers"]), FUNDED_HEIGHT)
            self.assertIn("history", self.client.get_json(f"/history/{ALICE.address}?limit={limit}"))

    def test_out_of_range_parameter_names_its_range(self):
        """An integer parameter out of its range is refused with a message giving the range it has (a start
        of 30 digits too); one with no maximum is not said to be "between 1 and None"."""
        answer = self.client.get("/blocks?start=" + "9" * 30)
        assert_error(self, answer, 400, "malformed")
        self.assertIn("between 0 and 4294967295", answer.json["error"])
        answer = self.client.get("/blocks?limit=0")
        assert_error(self, answer, 400, "malformed")
        self.assertIn("at least 1", answer.json["error"])
        self.assertNotIn("None", answer.json["error"])

    def test_headers_limit_capped(self):
        """A /headers limit over 2000 is taken as 2000; a zero limit is refused."""
        body = self.client.get_json("/headers?limit=999999")
        self.assertEqual(len(body["headers"]), FUNDED_HEIGHT)
        assert_error(self, self.client.get("/headers?limit=0"), 400, "malformed")

    def test_block_by_hash(self):
        """/block/<hash> is the block, with main_chain and its confirmations."""
        block = funded_chain()[7]
        body = self.client.get_json(f"/block/{block.hash.hex()}")
        self.assertEqual(body["hash"], block.hash.hex())
        self.assertEqual(body["index"], 7)
        self.assertEqual(len(body["transactions"]), 1)
        self.assertTrue(body["main_chain"])
        self.assertEqual(body["confirmations"], FUNDED_HEIGHT - 7 + 1)

    def test_unknown_block(self):
        """/block/<hash> of a block nobody mined is a JSON 404."""
        assert_error(self, self.client.get("/block/" + "ab" * 32), 404, "not-found")

    def test_block_bad_hash(self):
        """/block/<not a hash> is a JSON 400."""
        assert_error(self, self.client.get("/block/xyz"), 400, "malformed")

    def test_headers_after_locator(self):
        """/headers gives the main-chain headers after the first locator hash the node knows."""
        chain = funded_chain()
        locator = ",".join(["cd" * 32, chain[20].hash.hex(), chain[10].hash.hex()])
        body = self.client.get_json(f"/headers?locator={locator}&limit=3")
        self.assertEqual([h["hash"] for h in body["headers"]], [b.hash.hex() for b in chain[21:24]])
        self.assertNotIn("transactions", body["headers"][0])

    def test_headers_unknown_locator_starts_after_genesis(self):
        """A locator the node does not know gives headers from height 1 (fork point: genesis)."""
        body = self.client.get_json(f"/headers?locator={'ee' * 32}&limit=2")
        self.assertEqual([h["index"] for h in body["headers"]], [1, 2])


class PeerTests(APITestCase):
    def test_peers_lists(self):
        """/peers lists the peer table's known and active peers, the relay peers and the active count."""
        table = self.service.peers.discovery.table
        table.add("http://b:1", 0)
        table.mark_alive("http://a:1", "node-a", 0)
        body = self.client.get_json("/peers")
        self.assertEqual(body, {"peers": ["http://a:1", "http://b:1"], "active_peers": ["http://a:1"],
                                "relay_peers": ["http://a:1"], "peer_count": 1})
        self.assertEqual(self.client.get_json("/status")["peer_count"], 1)

    def test_add_peer_from_loopback(self):
        """POST /peers from loopback puts the URL, without a trailing slash, in the peer table: "added"."""
        answer = self.client.post("/peers", {"url": "http://localhost:5003/"})
        self.assertEqual((answer.status, answer.json), (200, {"status": "added", "url": "http://localhost:5003"}))
        self.assertIsNotNone(self.service.peers.discovery.table.get("http://localhost:5003"))

    def test_add_known_peer_is_not_added(self):
        """POST /peers with a URL the table holds already answers "known", never "added"."""
        self.client.post("/peers", {"url": "http://localhost:5003"})
        answer = self.client.post("/peers", {"url": "HTTP://LOCALHOST:5003/"})
        self.assertEqual(answer.json, {"status": "known", "url": "http://localhost:5003"})

    def test_add_own_url_is_refused(self):
        """POST /peers with the node's own advertised URL is a 400: the table does not keep it."""
        assert_error(self, self.client.post("/peers", {"url": self.node.advertise_url}), 400, "peer-not-kept")
        self.assertEqual(self.service.peers.known_urls(), [])

    def test_add_peer_with_no_host_name_is_refused(self):
        """POST /peers with a host no HTTP client can connect to (a lone surrogate, a bracketed name, an
        empty label, a label over 63 characters, an underscore, a hyphen at a label's end) is a 400
        (bad-peer-url) and adds nothing: the peer layer would fail on it at every probe."""
        for url in ("http://\ud800:5000", "http://[zz]:5000", "http://a..b:5000", f"http://{'a' * 64}:5000",
                    "http://x_y:5000", "http://x-:5000"):
            assert_error(self, self.client.post("/peers", {"url": url}), 400, "bad-peer-url")
        self.assertEqual(self.service.peers.known_urls(), [])
        for url in ("http://a-b.example:5003", "http://127.0.0.1:5003", "http://b\u00fccher.example:5003"):
            self.assertEqual(self.client.post("/peers", {"url": url}).json["status"], "added", url)

    def test_add_peer_from_elsewhere_forbidden(self):
        """POST /peers from a non-loopback client is a JSON 403 and adds nothing."""
        remote = APIClient(self, self.service, client_address="203.0.113.7")
        assert_error(self, remote.post("/peers", {"url": "http://localhost:5003"}), 403, "forbidden")
        self.assertEqual(self.service.peers.known_urls(), [])

    def test_add_peer_bad_url(self):
        """POST /peers with a URL the peer table would not keep is a JSON 400 and adds nothing."""
        for url in ("ftp://x", "http://", "http://localhost:5003/path", "http://user@localhost:5003",
                    "http://localhost:0", "http://localhost:65536", "http://localhost:port", 5003, None):
            assert_error(self, self.client.post("/peers", {"url": url}), 400, "bad-peer-url")
        self.assertEqual(self.service.peers.known_urls(), [])

    def test_is_loopback(self):
        """is_loopback holds for 127.0.0.0/8 and ::1 only."""
        class Request:
            def __init__(self, host):
                self.host = host

            def getClientAddress(self):
                return type("Address", (), {"host": self.host})()

        self.assertEqual([is_loopback(Request(h)) for h in ("127.0.0.1", "127.5.0.9", "::1", "10.0.0.1",
                                                            "203.0.113.7", "not-an-ip", None)],
                         [True, True, True, False, False, False, False])


class TransactionTests(APITestCase):
    def test_add_transaction_accepted_then_duplicate(self):
        """A valid transaction is accepted into the mempool; sending it again is a 200 duplicate."""
        tx = pay_bob()
        body = {"transaction": jsonview.tx_to_json(tx)}
        first = self.client.post("/add_transaction", body)
        self.assertEqual((first.status, first.json), (200, {"status": "accepted", "tx_id": tx.tx_id.hex()}))
        again = self.client.post("/add_transaction", body)
        self.assertEqual((again.status, again.json), (200, {"status": "duplicate", "tx_id": tx.tx_id.hex()}))
        assert_json(self, again)
        self.assertEqual(len(self.node.mempool), 1)

    def test_transactions_is_the_mempool(self):
        """/transactions lists the mempool's transactions as JSON."""
        self.assertEqual(self.client.get_json("/transactions"), {"transactions": [], "more": False})
        tx = pay_bob()
        settled(self.node.submit_tx(tx))
        self.assertEqual(self.client.get_json("/transactions"), {"transactions": [jsonview.tx_to_json(tx)], "more": False})

    def test_add_transaction_reasons(self):
        """Refused transactions are JSON 400s whose code names the rule."""
        good = pay_bob(height=2)
        settled(self.node.submit_tx(good))
        cases = [
            (signed_tx([(mature_outpoint(2), ALICE)], [(CAROL, 1_000)]), "double-spend"),
            (signed_tx([(OutPoint(b"\x01" * 32, 0), ALICE)], [(CAROL, 1_000)]), "missing-input"),
            (signed_tx([(mature_outpoint(FUNDED_HEIGHT), ALICE)], [(CAROL, 1_000)]), "immature-coinbase"),
            (signed_tx([(mature_outpoint(3), ALICE)], [(CAROL, REGTEST.block_reward(3))]), "fee-too-low"),
            (signed_tx([(mature_outpoint(3), BOB)], [(CAROL, 1_000)]), "wrong-key"),
        ]
        for tx, code in cases:
            assert_error(self, self.client.post("/add_transaction", {"transaction": jsonview.tx_to_json(tx)}),
                         400, code)
        self.assertEqual(len(self.node.mempool), 1)

    def test_tx_in_chain(self):
        """/tx/<id> of a confirmed transaction gives its block, height and confirmations."""
        coinbase = funded_chain()[5].transactions[0]
        body = self.client.get_json(f"/tx/{coinbase.tx_id.hex()}")
        self.assertEqual(body["tx_id"], coinbase.tx_id.hex())
        self.assertEqual((body["height"], body["confirmations"]), (5, FUNDED_HEIGHT - 5 + 1))
        self.assertEqual(body["block_hash"], funded_chain()[5].hash.hex())

    def test_tx_in_mempool(self):
        """/tx/<id> of a mempool transaction has 0 confirmations and no block."""
        tx = pay_bob()
        settled(self.node.submit_tx(tx))
        body = self.client.get_json(f"/tx/{tx.tx_id.hex()}")
        self.assertEqual((body["confirmations"], body["block_hash"], body["height"]), (0, None, None))
        self.assertEqual(body["outputs"], jsonview.tx_to_json(tx)["outputs"])

    def test_tx_unknown(self):
        """/tx/<id> of an unknown transaction is a JSON 404."""
        assert_error(self, self.client.get("/tx/" + "12" * 32), 404, "not-found")


class AddressTests(APITestCase):
    def test_balance_confirmed_and_unconfirmed(self):
        """/balance counts confirmed coins and the mempool's effect, in base units."""
        self.assertEqual(self.client.get_json(f"/balance/{BOB.address}"),
                         {"address": BOB.address, "balance": 0, "confirmed": 0, "unconfirmed": 0,
                          "spendable": 0, "immature": 0})
        settled(self.node.submit_tx(pay_bob(amount=7_000)))
        self.assertEqual(self.client.get_json(f"/balance/{BOB.address}"),
                         {"address": BOB.address, "balance": 7_000, "confirmed": 0, "unconfirmed": 7_000,
                          "spendable": 0, "immature": 0})
        alice = self.client.get_json(f"/balance/{ALICE.address}")
        self.assertEqual(alice["confirmed"], sum(REGTEST.block_reward(h) for h in range(1, FUNDED_HEIGHT + 1)))
        self.assertEqual(alice["unconfirmed"], -7_000 - 1_000)
        self.assertEqual(alice["balance"], alice["confirmed"] + alice["unconfirmed"])

    def test_utxos(self):
        """/utxos lists each unspent output of the address with tx_id, output_index, amount and height."""
        body = self.client.get_json(f"/utxos/{ALICE.address}")
        self.assertEqual(len(body["utxos"]), FUNDED_HEIGHT)
        first = min(body["utxos"], key=lambda u: u["height"])
        self.assertEqual((first["tx_id"], first["output_index"], first["amount"], first["height"]),
                         (mature_outpoint(1).tx_id.hex(), 0, REGTEST.block_reward(1), 1))

    def test_bad_checksum_refused(self):
        """/balance, /utxos and /history refuse an address whose checksum fails with a JSON 400."""
        address = ALICE.address
        typo = address[:-1] + ("2" if address[-1] != "2" else "3")
        for path in ("/balance/", "/utxos/", "/history/"):
            assert_error(self, self.client.get(path + typo), 400, "bad-address")

    def test_history(self):
        """/history lists the address's mempool and chain transactions with the amount each moved."""
        tx = pay_bob(amount=5_000)
        settled(self.node.submit_tx(tx))
        body = self.client.get_json(f"/history/{BOB.address}")
        self.assertEqual(body["history"], [{"tx_id": tx.tx_id.hex(), "height": None, "confirmations": 0,
                                            "amount_delta": 5_000, "coinbase": False}])
        alice = self.client.get_json(f"/history/{ALICE.address}?limit=500")["history"]
        self.assertEqual(alice[0]["amount_delta"], -6_000)
        self.assertEqual(len(alice), FUNDED_HEIGHT + 1)


class SubmitBlockTests(APITestCase):
    def submit(self, block, **kw):
        return self.client.post("/submit_block", {"block": jsonview.block_to_json(block)}, **kw)

    def test_accepted_then_duplicate(self):
        """A valid child of the tip is accepted on the main chain; sending it again is a 200 duplicate."""
        block = make_block(self.tip, pay_to=BOB)
        answer = self.submit(block)
        assert_json(self, answer)
        self.assertEqual((answer.status, answer.json),
                         (200, {"status": "accepted", "block_hash": block.hash.hex(), "height": FUNDED_HEIGHT + 1,
                                "main_chain": True}))
        again = self.submit(block)
        self.assertEqual((again.status, again.json), (200, {"status": "duplicate", "block_hash": block.hash.hex()}))
        self.assertEqual(self.node.chain.tip.hash, block.hash)

    def test_side_branch_not_main_chain(self):
        """A valid block on a side branch of equal work is accepted with main_chain false."""
        block = make_block(funded_chain()[-2], pay_to=BOB)
        answer = self.submit(block)
        self.assertEqual((answer.status, answer.json["main_chain"]), (200, False))
        self.assertEqual(self.node.chain.tip.hash, self.tip.hash)

    def test_orphan(self):
        """A block whose parent is unknown is a 202 orphan naming the missing parent."""
        parent = make_block(self.tip, pay_to=BOB)
        child = make_block(parent, pay_to=BOB)
        answer = self.submit(child)
        assert_json(self, answer)
        self.assertEqual((answer.status, answer.json),
                         (202, {"status": "orphan", "block_hash": child.hash.hex(), "missing": parent.hash.hex()}))
        self.assertEqual(self.node.chain.height, FUNDED_HEIGHT)

    def test_invalid(self):
        """A block that breaks a rule is a JSON 400 naming it, and the tip stays."""
        block = make_block(self.tip, pay_to=BOB, reward=REGTEST.block_reward(FUNDED_HEIGHT + 1) + 1)
        assert_error(self, self.submit(block), 400, "bad-coinbase-value")
        self.assertEqual(self.node.chain.tip.hash, self.tip.hash)

    def test_block_clears_mempool(self):
        """A block confirming a mempool transaction takes it out of the mempool."""
        tx = pay_bob()
        settled(self.node.submit_tx(tx))
        block = make_block(self.tip, [tx], pay_to=BOB, fees=1_000)
        self.assertEqual(self.submit(block).status, 200)
        self.assertEqual(self.client.get_json("/transactions"), {"transactions": [], "more": False})
        self.assertEqual(self.client.get_json(f"/tx/{tx.tx_id.hex()}")["confirmations"], 1)


class MiningTemplateTests(APITestCase):
    def test_template_fields(self):
        """The template has header_hex, nonce_offset 112, nonce_size 8 and target, matching its block."""
        body = self.client.get_json(f"/mining/template?address={BOB.address}")
        self.assertEqual((body["nonce_offset"], body["nonce_size"]), (112, 8))
        self.assertEqual(int(body["target"], 16), REGTEST.pow_limit)
        self.assertEqual(len(bytes.fromhex(body["header_hex"])), 120)
        block = body["block"]
        self.assertEqual(block["index"], FUNDED_HEIGHT + 1)
        self.assertEqual(block["previous_hash"], self.tip.hash.hex())
        self.assertEqual(block["transactions"][0]["outputs"][0]["recipient_address"], BOB.address)
        self.assertNotIn("hash", block)

    def test_solved_template_accepted(self):
        """Searching nonces over header_hex alone and setting nonce in the block gives an accepted block."""
        tx = pay_bob()
        settled(self.node.submit_tx(tx))
        body = self.client.get_json(f"/mining/template?address={BOB.address}")
        header = bytearray(bytes.fromhex(body["header_hex"]))
        offset, size, target = body["nonce_offset"], body["nonce_size"], int(body["target"], 16)
        for nonce in range(1000):
            header[offset:offset + size] = nonce.to_bytes(size, "little")
            digest = hashlib.sha256(hashlib.sha256(bytes(header)).digest()).digest()
            if int.from_bytes(digest, "big") <= target:
                break
        block = dict(body["block"], nonce=nonce)
        answer = self.client.post("/submit_block", {"block": block})
        self.assertEqual((answer.status, answer.json["status"], answer.json["block_hash"]),
                         (200, "accepted", digest.hex()))
        self.assertEqual(self.node.chain.height, FUNDED_HEIGHT + 1)
        self.assertEqual(len(self.node.mempool), 0)

    def test_template_needs_good_address(self):
        """A template for a missing or mistyped address is a JSON 400."""
        assert_error(self, self.client.get("/mining/template"), 400, "malformed")
        assert_error(self, self.client.get(f"/mining/template?address={BOB.address[:-1]}x"), 400, "bad-address")

    def test_template_while_syncing(self):
        """A node still catching up answers the template request with a JSON 503."""
        self.node.syncing = True
        assert_error(self, self.client.get(f"/mining/template?address={BOB.address}"), 503, "unavailable")


class DocumentTests(APITestCase):
    def test_metrics(self):
        """/metrics is Prometheus text with the height and the accepted transaction count."""
        settled(self.node.submit_tx(pay_bob()))
        answer = self.client.get("/metrics")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.content_type.startswith("text/plain"), answer.content_type)
        text = answer.body.decode()
        self.assertIn(f"chaincore_height {float(FUNDED_HEIGHT)}", text)
        self.assertRegex(text, r'chaincore_transactions_total\{outcome="accepted",reason=""\} 1\.0')
        self.assertIn("chaincore_mempool_transactions 1.0", text)

    def test_index_page(self):
        """/ is an HTML page naming the tip."""
        answer = self.client.get("/")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.content_type.startswith("text/html"))
        self.assertIn(self.tip.hash.hex().encode(), answer.body)

    def test_openapi_is_valid(self):
        """/openapi.json is a valid OpenAPI 3 document naming the advertised server."""
        from openapi_spec_validator import validate

        doc = self.client.get_json("/openapi.json")
        validate(doc)
        self.assertTrue(doc["openapi"].startswith("3."))
        self.assertEqual(doc["servers"], [{"url": "http://localhost:5000"}])

    def test_every_route_documented(self):
        """Every Klein route appears in the OpenAPI paths with the same method, and nothing else does."""
        routes = set()
        for rule in NodeAPI.app.url_map.iter_rules():
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((re.sub(r"<[^>]+>", "{}", rule.rule), method.lower()))
        documented = {(re.sub(r"\{[^}]+\}", "{}", path), method)
                      for path, ops in openapi()["paths"].items() for method in ops}
        self.assertEqual(routes, documented)

    def test_unknown_route(self):
        """An unknown path is a JSON 404."""
        assert_error(self, self.client.get("/no/such/thing"), 404, "not-found")

    def test_trailing_slash(self):
        """A known path with a trailing slash is a JSON 404, not werkzeug's redirect turned into a 500."""
        assert_error(self, self.client.get("/status/"), 404, "not-found")
        assert_error(self, self.client.get(f"/balance/{BOB.address}/"), 404, "not-found")

    def test_wrong_method(self):
        """A known path with the wrong method is a JSON 405, and nothing changes."""
        before = state_of(self.node)
        assert_error(self, self.client.request("DELETE", "/status"), 405)
        assert_error(self, self.client.get("/submit_block"), 405)
        assert_error(self, self.client.post("/status", {}), 405)
        self.assertEqual(state_of(self.node), before)

    def test_document_names_every_refusal_an_endpoint_gives(self):
        """The OpenAPI document lists what the endpoints answer to bad requests: 413 on every operation with a
        body (the site refuses bodies over its limit), 503 on /events (too many streams), and its
        description gives the body limits and the 414 and 431 for request and header lines over 16 kB."""
        from chaincore.api.site import DEFAULT_MAX_BODY_BYTES, PATH_MAX_BODY_BYTES

        doc = openapi()
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                if "requestBody" in op:
                    self.assertIn("413", op["responses"], f"{method} {path}")
        self.assertIn("503", doc["paths"]["/events"]["get"]["responses"])
        description = doc["info"]["description"]
        for limit in (DEFAULT_MAX_BODY_BYTES, *PATH_MAX_BODY_BYTES.values()):
            self.assertIn(f"{limit:,}", description)
        self.assertIn("414", description)
        self.assertIn("431", description)

    def test_document_gives_the_pages_answers_as_html(self):
        """The explorer's refusals are pages and the document says so: /search's 404 and the pages' 400 and
        404 are text/html, /search's 303 names its Location; their 429 and 500 stay JSON, as served."""
        cases = {("/search", f"/search?q=nothing"): 404, ("/explorer/address/{address}", "/explorer/address/xyz"): 400,
                 ("/explorer/blocks", "/explorer/blocks?before=x"): 400,
                 ("/explorer/block/{hash}", "/explorer/block/zz"): 404, ("/explorer/tx/{tx_id}", "/explorer/tx/zz"): 404}
        doc = openapi()
        for (template, path), status in cases.items():
            answer = self.client.get(path)
            self.assertEqual(answer.status, status, path)
            documented = doc["paths"][template]["get"]["responses"][str(status)]
            self.assertEqual(list(documented["content"]), [answer.content_type.split(";")[0]], path)
            for json_status in ("429", "500"):
                self.assertEqual(list(doc["paths"][template]["get"]["responses"][json_status]["content"]),
                                 ["application/json"], (path, json_status))
        self.assertIn("Location", doc["paths"]["/search"]["get"]["responses"]["303"]["headers"])
