"""The API's definitions: every endpoint, its parameters and bodies, and the OpenAPI document built from them.

Routes parse their query and path parameters through `params(request, key, ...)`,
which reads the same `Param` definitions the OpenAPI document is generated
from, so the document cannot drift from what the code accepts.  Request
bodies are parsed by chaincore.core.jsonview; the JSON Schemas here describe
exactly what it accepts, and the API fuzz test holds the two together.
"""

import json
import re
from dataclasses import dataclass, field

from .. import __version__
from .budgets import ENDPOINT_COSTS, STRANGERS_ONLY
from .site import DEFAULT_MAX_BODY_BYTES, PATH_MAX_BODY_BYTES
from ..core.compact import max_block_txs
from ..core.errors import Malformed
from ..core.params import NetworkParams

HEX32 = {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}
ADDRESS = {"type": "string", "minLength": 20, "maxLength": 40,
           "description": "Base58Check address (version 0x1C, HASH160 of a public key)"}
U32 = {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF}
U64 = {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFFFFFFFFFF}
AMOUNT = {"type": "integer", "minimum": 0, "maximum": 21_000_000 * 100_000_000,
          "description": "base units (1 coin = 100,000,000)"}
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string"}, "code": {"type": "string"}}}

TX_INPUT = {
    "type": "object", "required": ["tx_id", "output_index"],
    "properties": {
        "tx_id": HEX32, "output_index": U32,
        "public_key": {"type": "string", "pattern": "^([0-9a-fA-F]{2}){0,65}$",
                       "description": "65-byte uncompressed SEC1 public key (empty in a coinbase)"},
        "signature": {"type": "string", "pattern": "^([0-9a-fA-F]{2}){0,100}$",
                      "description": "64-byte r||s low-S signature (coinbase data in a coinbase)"},
    },
}
TX_OUTPUT = {"type": "object", "required": ["amount", "recipient_address"],
             "properties": {"amount": AMOUNT, "recipient_address": ADDRESS}}
TRANSACTION = {
    "type": "object", "required": ["inputs", "outputs"],
    "properties": {
        "tx_id": HEX32, "version": U32, "lock_time": U32,
        "inputs": {"type": "array", "items": TX_INPUT, "maxItems": 10_000},
        "outputs": {"type": "array", "items": TX_OUTPUT, "maxItems": 10_000},
    },
}
HEADER_PROPS = {
    "hash": HEX32, "index": U32, "previous_hash": HEX32, "merkle_root": HEX32,
    "timestamp": U64, "target": HEX32, "nonce": U64, "version": U32,
}
HEADER = {"type": "object", "properties": HEADER_PROPS,
          "required": ["index", "previous_hash", "merkle_root", "timestamp", "target", "nonce", "version"]}
BLOCK = {"type": "object", "properties": {**HEADER_PROPS, "transactions": {"type": "array", "items": TRANSACTION}},
         "required": HEADER["required"] + ["transactions"]}

OCTETS = {"type": "string", "format": "binary"}
BINARY_MEDIA = "application/octet-stream"
ONE_BLOCK = "the block's canonical bytes (docs/protocol.md 11)"
ONE_TX = "the transaction's canonical bytes (docs/protocol.md 11)"
COMPACT = {"type": "object", "required": ["header", "short_ids", "prefilled"], "properties": {
    "header": HEADER,
    "short_ids": {"type": "string", "pattern": "^([0-9a-fA-F]{12})*$",
                  "description": "6-byte short ids, concatenated: BLAKE2b-48 of each tx_id keyed with the block "
                                 "hash's first 16 bytes, for every transaction not prefilled, in order"},
    "prefilled": {"type": "array", "items": {"type": "object", "required": ["index", "transaction"],
                                             "properties": {"index": U32, "transaction": TRANSACTION}}}}}

PAGE = "text/html"  # the content type of the explorer's pages

SCHEMAS = {"Transaction": TRANSACTION, "Block": BLOCK, "Header": HEADER, "Error": ERROR, "Compact": COMPACT}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Param:
    name: str
    where: str          # "query" or "path"
    schema: dict
    description: str
    default: object = None
    required: bool = False
    cap: int | None = None  # a larger value is taken as the cap, not refused


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str           # OpenAPI form, /block/{hash}
    summary: str
    params: tuple = ()
    body: dict | None = None
    responses: dict = field(default_factory=dict)  # status -> (description, schema or None)
    content_type: str = "application/json"
    binary: str | None = None  # what the application/octet-stream form is (CONTRACT 7), when there is one
    binary_answer: str | None = None  # a POST's 200 answer as application/octet-stream, when Accept asks for it


HASH_PARAM = Param("hash", "path", HEX32, "block hash, hex", required=True)
START = Param("start", "query", {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF}, "first height", 0)
ADDRESS_PARAM = Param("address", "path", ADDRESS, "an address", required=True)

HISTORY_ROW = {"type": "object", "required": ["tx_id", "height", "confirmations", "amount_delta"],
               "properties": {"tx_id": HEX32, "height": {"type": "integer", "nullable": True},
                              "confirmations": {"type": "integer"},
                              "amount_delta": {"type": "integer", "description": "base units in (+) or out (-)"},
                              "coinbase": {"type": "boolean"}}}

# The byte caps of answers that can grow (api/routes.py): items stop at the cap, at least one is sent,
# and `more` says whether any were left out (`next`: where to ask from next).
BLOCKS_MAX_BYTES, HEADERS_MAX_BYTES, TRANSACTIONS_MAX_BYTES = 16_000_000, 1_000_000, 4_000_000


def max_bytes_param(cap: int) -> Param:
    return Param("max_bytes", "query", {"type": "integer", "minimum": 1},
                 f"stop adding items once the answer would pass this many bytes (at most {cap:,}, the default; "
                 "one item is always sent)", cap, cap=cap)


MORE = {"type": "boolean", "description": "true when the byte cap or the limit left items out"}
NEXT = {"type": "integer", "nullable": True, "description": "the start to ask for next, or null when nothing was left out"}

STATUS = {"type": "object", "required": ["node_id", "network", "genesis_hash", "height", "blockchain_length",
                                         "tip_hash", "chainwork", "target", "peer_count", "mempool_size",
                                         "coinbase_maturity", "block_reward", "url", "syncing", "version"]}

ENDPOINTS = {
    "index": Endpoint("get", "/", "The explorer's home page: tip, difficulty, supply, peers, mempool, mining, "
                                  "latest blocks; updated live.",
                      responses={200: ("HTML page", None)}, content_type="text/html"),
    "status": Endpoint("get", "/status", "Node health and chain summary.", responses={200: ("status", STATUS)}),
    "chain": Endpoint("get", "/chain", "The main chain (the whole chain without parameters).",
                      params=(Param("start", "query", START.schema, "first height", None),
                              Param("limit", "query", {"type": "integer", "minimum": 1},
                                    "number of blocks (more than 500 is taken as 500)", None, cap=500),
                              max_bytes_param(BLOCKS_MAX_BYTES)),
                      responses={200: ("blocks and chain length; with start or limit the answer stops at max_bytes "
                                       "(more, next); the whole chain is streamed in slices",
                                       {"type": "object", "properties": {"chain": {"type": "array", "items": ref("Block")},
                                                                         "length": {"type": "integer"},
                                                                         "more": MORE, "next": NEXT}})}),
    "peers": Endpoint("get", "/peers", "Known and active peers.",
                      responses={200: ("peer lists", {"type": "object", "properties": {
                          "peers": {"type": "array", "items": {"type": "string"}},
                          "active_peers": {"type": "array", "items": {"type": "string"}},
                          "peer_count": {"type": "integer"}}})}),
    "add_peer": Endpoint("post", "/peers", "Add a peer by hand (loopback clients only).",
                         body={"type": "object", "required": ["url"],
                               "properties": {"url": {"type": "string", "pattern": "^https?://"}}},
                         responses={200: ("added, or already known", {"type": "object", "properties": {
                             "status": {"type": "string", "enum": ["added", "known"]}, "url": {"type": "string"}}}),
                                    400: ("not a base URL the peer table keeps (path, user info, bad port),"
                                          " or this node's own, banned, or no room", ref("Error")),
                                    403: ("not from loopback", ref("Error"))}),
    "transactions": Endpoint("get", "/transactions", "The mempool in arrival order (parents first): all of it, or "
                                                     "up to max_bytes when the client sets it (peers do).",
                             params=(Param("max_bytes", "query", {"type": "integer", "minimum": 1},
                                           f"stop adding transactions once the answer would pass this many bytes "
                                           f"(at most {TRANSACTIONS_MAX_BYTES:,}; one is always sent); without it, "
                                           "the whole mempool", None, cap=TRANSACTIONS_MAX_BYTES),),
                             responses={200: ("mempool transactions", {"type": "object", "properties": {
                                 "transactions": {"type": "array", "items": ref("Transaction")},
                                 "more": MORE}})}),
    "submit_block": Endpoint("post", "/submit_block", "Submit a solved block (JSON, or its canonical bytes as "
                                                      "application/octet-stream).", binary=ONE_BLOCK,
                             body={"type": "object", "required": ["block"], "properties": {"block": ref("Block")}},
                             responses={200: ("accepted, duplicate, or not-stored: nobody asked for the block and "
                                              "its branch has less work than the tip, so it was checked but not "
                                              "written (with a reason; never accepted)",
                                              {"type": "object", "required": ["status", "block_hash"], "properties": {
                                                  "status": {"type": "string",
                                                             "enum": ["accepted", "duplicate", "not-stored"]},
                                                  "block_hash": HEX32, "height": {"type": "integer"},
                                                  "main_chain": {"type": "boolean"}, "reason": {"type": "string"}}}),
                                        202: ("orphan: parent unknown", {"type": "object"}),
                                        400: ("invalid block", ref("Error")),
                                        413: ("over the block size limit", ref("Error")),
                                        403: ("X-Local-Mining from a non-loopback client", ref("Error")),
                                        503: ("the node cannot store blocks now (Retry-After)", ref("Error"))}),
    "add_transaction": Endpoint("post", "/add_transaction", "Submit a signed transaction to the mempool (JSON, or "
                                "its canonical bytes as application/octet-stream).", binary=ONE_TX,
                                body={"type": "object", "required": ["transaction"],
                                      "properties": {"transaction": ref("Transaction")}},
                                responses={200: ("accepted or duplicate", {"type": "object"}),
                                           400: ("invalid transaction", ref("Error")),
                                           413: ("over the size limit", ref("Error"))}),
    "announce": Endpoint("post", "/announce",
                         "A peer announces a block: its header, and maybe its compact form (header, 6-byte short "
                         "ids keyed by the block, the coinbase prefilled); the node fetches what it lacks from the "
                         "sender named in X-ChainCore-Peer.  As application/octet-stream: the 120-byte header, or "
                         "the compact form's bytes, answered 204 with no body.  X-ChainCore-Sent-To (optional, a hint): "
                         "the 8-hex-digit tags of the other peers the sender announced the block to "
                         "(docs/protocol.md 12).",
                         binary="the 120-byte header alone, or the compact form (docs/protocol.md 12), which starts "
                                "with it; counts beyond what a block holds are refused (400), a body over the largest "
                                "compact form with 413",
                         body={"type": "object", "required": ["block"],
                               "properties": {"block": ref("Header"), "compact": ref("Compact")}},
                         responses={200: ("known, or fetching", {"type": "object", "properties": {
                             "status": {"type": "string", "enum": ["known", "fetching"]},
                             "block_hash": HEX32}}),
                                    204: ("a binary announcement taken (no body)", None)}),
    "send_compact": Endpoint("post", "/send_compact", "A peer asks the node to push it the compact form of every "
                                                      "block the node relays with the announcement (true), or to "
                                                      "announce blocks with their header alone again (false): "
                                                      "BIP 152's high-bandwidth mode, chosen by the receiver.  "
                                                      "The sender is named in X-ChainCore-Peer.  As "
                                                      "application/octet-stream: one byte, 1 or 0, answered 204.",
                             binary="one byte: 1 (push) or 0 (announce by header); anything else is refused (400)",
                             body={"type": "object", "required": ["push"], "properties": {
                                 "push": {"type": "boolean"}}},
                             responses={200: ("the choice taken", {"type": "object", "properties": {
                                 "push": {"type": "boolean"}}}),
                                        204: ("a binary choice taken (no body)", None)}),
    "announce_txs": Endpoint("post", "/announce_txs", "A peer announces transactions by id; the node fetches "
                                                      "those it lacks from the sender (X-ChainCore-Peer).  As "
                                                      "application/octet-stream: the 32-byte ids concatenated, "
                                                      "answered 204 with no body.",
                             binary="1 to 5000 transaction ids of 32 bytes each, concatenated (docs/protocol.md 12); "
                                    "another length is refused (400), a body over 160,000 bytes with 413",
                             body={"type": "object", "required": ["tx_ids"], "properties": {
                                 "tx_ids": {"type": "array", "items": HEX32, "maxItems": 5000}}},
                             responses={200: ("how many it will fetch", {"type": "object", "properties": {
                                 "wanted": {"type": "integer"}}}),
                                        204: ("a binary announcement taken (no body)", None)}),
    "compact": Endpoint("get", "/compact/{hash}", "A block in compact form (as BIP 152; its bytes with "
                                                  "Accept: application/octet-stream).", params=(HASH_PARAM,),
                        binary="header (120) || compact(n) || n 6-byte short ids || compact(k) || k x "
                               "(compact(index) || var_bytes(transaction)) (docs/protocol.md 12)",
                        responses={200: ("the compact block", ref("Compact")), 404: ("unknown block", ref("Error"))}),
    "block_txs": Endpoint("post", "/block_txs", "Transactions of a block by index (what a compact block lacked; "
                                                "a framed list of canonical transactions with Accept: "
                                                "application/octet-stream).",
                          binary_answer="compact(count), then each transaction as compact(length) || its bytes, "
                                        "in the order asked (docs/protocol.md 11)",
                          body={"type": "object", "required": ["block_hash", "indexes"], "properties": {
                              "block_hash": HEX32,
                              "indexes": {"type": "array", "items": U32, "maxItems": max_block_txs(NetworkParams.max_block_size),
                                          "uniqueItems": True}}},
                          responses={200: ("the transactions, in the order asked",
                                           {"type": "object", "properties": {
                                               "block_hash": HEX32,
                                               "transactions": {"type": "array", "items": ref("Transaction")}}}),
                                     404: ("unknown block", ref("Error"))}),
    "txs": Endpoint("post", "/txs", "Mempool transactions by id (those the node holds; a framed list of canonical "
                                    "transactions with Accept: application/octet-stream).  The ids may be sent as "
                                    "application/octet-stream, 32 bytes each, concatenated.",
                    binary="1 to 5000 transaction ids of 32 bytes each, concatenated (docs/protocol.md 12)",
                    binary_answer="compact(count), then each transaction found as compact(length) || its bytes "
                                  "(docs/protocol.md 11)",
                    body={"type": "object", "required": ["tx_ids"], "properties": {
                        "tx_ids": {"type": "array", "items": HEX32, "maxItems": 5000}}},
                    responses={200: ("the transactions found", {"type": "object", "properties": {
                        "transactions": {"type": "array", "items": ref("Transaction")}}})}),
    "block": Endpoint("get", "/block/{hash}", "One block by hash (its canonical bytes with "
                                              "Accept: application/octet-stream).", params=(HASH_PARAM,),
                      binary=ONE_BLOCK,
                      responses={200: ("the block", ref("Block")), 404: ("unknown block", ref("Error"))}),
    "blocks": Endpoint("get", "/blocks", "Main-chain blocks by height (a framed list of canonical blocks with "
                                         "Accept: application/octet-stream, the tip height in X-ChainCore-Height).",
                       binary="compact(count), then each block as compact(length) || its bytes "
                              "(docs/protocol.md 11)",
                       params=(START, Param("limit", "query", {"type": "integer", "minimum": 1},
                                            "number of blocks (more than 500 is taken as 500)", 100, cap=500),
                               max_bytes_param(BLOCKS_MAX_BYTES)),
                       responses={200: ("blocks, stopping at max_bytes (more, next; in binary the header "
                                        "X-ChainCore-More)", {"type": "object", "properties": {
                           "blocks": {"type": "array", "items": ref("Block")}, "height": {"type": "integer"},
                           "more": MORE, "next": NEXT}})}),
    "headers": Endpoint("get", "/headers", "Main-chain headers after the first locator hash known (a framed list of "
                                           "120-byte headers with Accept: application/octet-stream, the tip height "
                                           "in X-ChainCore-Height, more in X-ChainCore-More).",
                        binary="compact(count), then each header as compact(120) || its 120 bytes "
                               "(docs/protocol.md 11)",
                        params=(Param("locator", "query", {"type": "string", "pattern": "^([0-9a-fA-F]{64},?){0,64}$"},
                                      "comma-separated block hashes, newest first", ""),
                                Param("limit", "query", {"type": "integer", "minimum": 1},
                                      "number of headers (more than 2000 is taken as 2000)", 2000, cap=2000),
                                max_bytes_param(HEADERS_MAX_BYTES)),
                        responses={200: ("headers, stopping at max_bytes; more: the tip lies beyond the last one",
                                         {"type": "object", "properties": {
                            "headers": {"type": "array", "items": ref("Header")}, "height": {"type": "integer"},
                            "more": MORE}})}),
    "tx": Endpoint("get", "/tx/{tx_id}", "A transaction from the chain or the mempool, with confirmations.",
                   params=(Param("tx_id", "path", HEX32, "transaction id", required=True),),
                   responses={200: ("the transaction", ref("Transaction")), 404: ("unknown", ref("Error"))}),
    "balance": Endpoint("get", "/balance/{address}", "Balance of an address in base units.", params=(ADDRESS_PARAM,),
                        responses={200: ("balance: spendable is confirmed, mature and not spent in the mempool; "
                                         "immature is coinbase outputs still maturing",
                                         {"type": "object",
                                          "required": ["address", "balance", "confirmed", "unconfirmed",
                                                       "spendable", "immature"],
                                          "properties": {
                            "address": {"type": "string"}, "balance": {"type": "integer"},
                            "confirmed": {"type": "integer"}, "unconfirmed": {"type": "integer"},
                            "spendable": {"type": "integer", "minimum": 0},
                            "immature": {"type": "integer", "minimum": 0}}}),
                                   400: ("bad address", ref("Error"))}),
    "utxos": Endpoint("get", "/utxos/{address}", "Unspent outputs of an address.", params=(ADDRESS_PARAM,),
                      responses={200: ("utxos", {"type": "object"}), 400: ("bad address", ref("Error"))}),
    "history": Endpoint("get", "/history/{address}",
                        "Transactions paying or spending from an address, newest first (mempool first), in pages.",
                        params=(ADDRESS_PARAM,
                                Param("limit", "query", {"type": "integer", "minimum": 1},
                                      "rows per page (more than 500 is taken as 500)", 50, cap=500),
                                Param("cursor", "query", {"type": "string", "pattern": "^(m[0-9]{1,19}|c[0-9]{1,10}\\.[0-9a-f]{64})$"},
                                      "the `next` of the previous page", None)),
                        responses={200: ("one page of history; next is null on the last page",
                                         {"type": "object", "required": ["address", "history", "next"],
                                          "properties": {
                                              "address": {"type": "string"},
                                              "history": {"type": "array", "items": HISTORY_ROW},
                                              "next": {"type": "string", "nullable": True}}}),
                                   400: ("bad address or cursor", ref("Error"))}),
    "fees": Endpoint("get", "/fees", "A fee rate that gets a transaction mined soon, in base units per byte.",
                     responses={200: ("fee estimate", {"type": "object", "required": ["fee_rate", "min_fee_rate"],
                                                       "properties": {
                                                           "fee_rate": {"type": "integer", "minimum": 0},
                                                           "min_fee_rate": {"type": "integer", "minimum": 0},
                                                           "mempool_rate": {"type": "integer"},
                                                           "recent_blocks_rate": {"type": "integer"},
                                                           "mempool_size": {"type": "integer"},
                                                           "mempool_bytes": {"type": "integer"},
                                                           "block_capacity_bytes": {"type": "integer"},
                                                           "typical_tx_bytes": {"type": "integer"},
                                                           "typical_fee": {"type": "integer"}}})}),
    "events": Endpoint("get", "/events",
                       "Server-Sent Events: `block` (new tip), `reorg`, `tx` (entering the mempool), each with an id; "
                       "send Last-Event-ID to resume.",
                       params=(Param("last_event_id", "query", {"type": "string", "maxLength": 64},
                                     "resume after this event id (as the Last-Event-ID header)", None),),
                       responses={200: ("an event stream that stays open", None),
                                  503: ("as many streams are open as the node keeps (Retry-After)", ref("Error"))},
                       content_type="text/event-stream"),
    "search": Endpoint("get", "/search", "Find a height, block hash, tx id or address: redirects to its page.",
                       params=(Param("q", "query", {"type": "string", "maxLength": 200}, "what to look for", ""),),
                       responses={303: ("the matching page", None), 404: ("nothing matched (HTML)", None)},
                       content_type="text/html"),
    "block_page": Endpoint("get", "/explorer/block/{hash}", "The page of one block.",
                           params=(Param("hash", "path", {"type": "string", "maxLength": 64}, "block hash or height",
                                         required=True),),
                           responses={200: ("HTML page", None), 404: ("unknown (HTML)", None)},
                           content_type="text/html"),
    "tx_page": Endpoint("get", "/explorer/tx/{tx_id}", "The page of one transaction.",
                        params=(Param("tx_id", "path", HEX32, "transaction id", required=True),),
                        responses={200: ("HTML page", None), 404: ("unknown (HTML)", None)},
                        content_type="text/html"),
    "address_page": Endpoint("get", "/explorer/address/{address}", "The page of one address: balance and history.",
                             params=(ADDRESS_PARAM,
                                     Param("cursor", "query", {"type": "string", "maxLength": 80},
                                           "a history cursor", None)),
                             responses={200: ("HTML page", None),
                                        400: ("not an address, or a cursor this node did not give (HTML)", None)},
                             content_type="text/html"),
    "mempool_page": Endpoint("get", "/explorer/mempool", "The page of the mempool.",
                             responses={200: ("HTML page", None)}, content_type="text/html"),
    "blocks_page": Endpoint("get", "/explorer/blocks", "Pages of main-chain blocks, newest first.",
                            params=(Param("before", "query", {"type": "integer", "minimum": 0}, "show blocks below this height",
                                          None),),
                            responses={200: ("HTML page", None), 400: ("before is not a height (HTML)", None)},
                            content_type="text/html"),
    "template": Endpoint("get", "/mining/template", "A block to mine, paying the coinbase to address.",
                         params=(Param("address", "query", ADDRESS, "the coinbase's recipient", required=True),),
                         responses={200: ("an unsolved block with header_hex, nonce_offset, nonce_size, target",
                                          {"type": "object"}),
                                    400: ("bad address", ref("Error")), 503: ("still syncing", ref("Error"))}),
    "metrics": Endpoint("get", "/metrics", "Prometheus metrics.", responses={200: ("text format", None)},
                        content_type="text/plain"),
    "openapi": Endpoint("get", "/openapi.json", "This document.", responses={200: ("OpenAPI 3", {"type": "object"})}),
}

for _ep in ENDPOINTS.values():  # every endpoint can answer a bad request and a fault
    if (_ep.params or _ep.body) and _ep.content_type != PAGE:  # pages list the refusals they make
        _ep.responses.setdefault(400, ("bad request", ref("Error")))
    if _ep.body:
        _ep.responses.setdefault(413, ("a body over the limit (the description's Limits), refused unread",
                                       ref("Error")))
    _ep.responses.setdefault(500, ("internal error", ref("Error")))


def params(request, key: str, path_values: dict | None = None) -> dict:
    """The endpoint's parameters from the request, checked against their definitions; Malformed naming the field."""
    out = {}
    for p in ENDPOINTS[key].params:
        if p.where == "path":
            raw = (path_values or {}).get(p.name)
        else:
            values = request.args.get(p.name.encode())
            raw = values[0].decode("utf-8", "replace") if values else None
        if raw is None or raw == "" and p.where == "query" and p.schema.get("type") == "integer":
            if p.required:
                raise Malformed(f"parameter {p.name} is required")
            out[p.name] = p.default
            continue
        out[p.name] = _coerce(p, raw)
    return out


U64_LIMIT = 0xFFFFFFFFFFFFFFFF  # the largest integer parameter without a maximum of its own


def _coerce(p: Param, raw: str):
    s = p.schema
    if s.get("type") == "integer":
        if not re.fullmatch(r"[0-9]+", raw):
            raise Malformed(f"parameter {p.name} must be a non-negative integer")
        lo, hi = s.get("minimum", 0), s.get("maximum")
        digits = raw.lstrip("0") or "0"
        if p.cap is not None and len(digits) > len(str(p.cap)):  # any size is the cap: not even read
            return p.cap
        value = int(digits) if len(digits) <= 20 else U64_LIMIT + 1  # int() of thousands of digits is slow
        if hi is not None and not lo <= value <= hi:
            raise Malformed(f"parameter {p.name} must be between {lo} and {hi}")
        if value < lo:
            raise Malformed(f"parameter {p.name} must be at least {lo}")
        if value > U64_LIMIT:
            raise Malformed(f"parameter {p.name} must be at most {U64_LIMIT}")
        return min(value, p.cap) if p.cap is not None else value
    if "pattern" in s and not re.fullmatch(s["pattern"].strip("^$"), raw):
        raise Malformed(f"parameter {p.name} is not of the form {s['pattern']}")
    if len(raw) > s.get("maxLength", 10_000) or len(raw) < s.get("minLength", 0):
        raise Malformed(f"parameter {p.name} has the wrong length")
    return raw


def _charged() -> dict:
    """operationId -> what a request costs (api/budgets.py ENDPOINT_COSTS), for the 429 each may answer."""
    out = {}
    for key in ENDPOINTS:
        name = "explorer" if key in ("index", "search") or key.endswith("_page") else key
        name = "block" if key in ("compact", "block_txs") else name  # they read a block as /block does
        if name in ENDPOINT_COSTS:
            tokens = ENDPOINT_COSTS[name][1]
            who = "strangers only" if name in STRANGERS_ONLY else "every client"
            out[key] = f"{tokens} tokens, {who}"
    return out


def openapi(server_url: str | None = None) -> dict:
    """The OpenAPI 3 document of every endpoint."""
    paths = {}
    costs = _charged()
    for key, ep in ENDPOINTS.items():
        op = {"operationId": key, "summary": ep.summary, "responses": {}}
        if ep.params:
            op["parameters"] = [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                                 "description": p.description, "schema": p.schema} for p in ep.params]
        if ep.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ep.body}}}
            if ep.binary:
                op["requestBody"]["content"][BINARY_MEDIA] = {"schema": dict(OCTETS, description=ep.binary)}
        for status, (description, schema) in sorted(ep.responses.items()):
            # a page's refusals are pages too; its 429 and 500 come from the API's error handlers, in JSON
            page = ep.content_type == PAGE and status in (400, 404)
            ctype = ep.content_type if status < 300 or page else "application/json"
            content = {ctype: {"schema": schema}} if schema is not None else {ctype: {}}
            if status in (204, 303):
                content = {}  # no body
            if ep.binary and ep.method == "get" and status == 200:
                content[BINARY_MEDIA] = {"schema": dict(OCTETS, description=ep.binary)}
            if ep.binary_answer and status == 200:
                content[BINARY_MEDIA] = {"schema": dict(OCTETS, description=ep.binary_answer)}
            op["responses"][str(status)] = {"description": description, "content": content} if content else \
                {"description": description}
            if status == 303:
                op["responses"]["303"]["headers"] = {"Location": {"schema": {"type": "string"},
                                                                  "description": "the path of the page found"}}
        charged = costs.get(key)
        if charged is not None and "429" not in op["responses"]:
            op["responses"]["429"] = {
                "description": f"the client's request budget is spent ({charged}); Retry-After says when to "
                               "try again",
                "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
                "content": {"application/json": {"schema": {"type": "object", "required": ["error"]}}}}
        paths.setdefault(ep.path, {})[ep.method] = op
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "ChainCore node API", "version": __version__,
                 "description": DESCRIPTION},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


DESCRIPTION = (
    "JSON in, JSON out. Errors are {\"error\": ..., \"code\": ...} with a 4xx status for bad input; a body "
    "that is not strict JSON (UTF-8, no NaN, no repeated keys, nested at most 64 deep) is 400 malformed. "
    "Peers may send and ask for canonical bytes instead (application/octet-stream) where an operation lists "
    "that media type; errors stay JSON.\n\n"
    "Limits. A request body over "
    f"{DEFAULT_MAX_BODY_BYTES:,} bytes ("
    + ", ".join(f"{limit:,} for {path.decode()}" for path, limit in PATH_MAX_BODY_BYTES.items())
    + ") is refused with 413 before it is read; a request line over 16 kB with 414, a header line over 16 kB "
    "with 431, HTTP that does not parse with 400, all JSON. Budgets (node options, defaults in brackets): "
    "clients come in three classes, each with its own budgets: "
    "loopback, active peers and strangers. Connections: at most --connections-per-address per stranger's "
    "address [8] (loopback 256, peers 16) and --max-connections in all [1024]; over the cap 429, over the total "
    "503, both JSON with Retry-After, then closed. A request's headers must arrive within --header-timeout of "
    "their first byte [10 s], its body at --body-min-rate after a 10 s grace [10,000 bytes/s], else 408. "
    "Requests: expensive endpoints cost tokens from the client address's bucket (--stranger-budget [120/20: "
    "burst/per second], --peer-budget [600/100], --loopback-budget [2000/500]): /chain 20, /blocks and "
    "/transactions 10 (/chain and /blocks at least one per 10 blocks answered), /headers, /history, "
    "/utxos and POST /txs 5, /balance and explorer pages 3, /block, /compact and POST /block_txs 2, and for "
    "strangers POST /submit_block 5, POST /add_transaction, /announce and /announce_txs 2. An empty bucket "
    "answers 429 "
    "{\"error\": ..., \"code\": \"rate-limited\"} with Retry-After. A transaction refused at the current tip "
    "is refused again at once until the tip changes.")


def openapi_json(server_url: str | None = None) -> bytes:
    return json.dumps(openapi(server_url), indent=1).encode()
