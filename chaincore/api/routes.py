"""The node's HTTP API (CONTRACT 2), served by Klein.

Routes stay thin: parse the request, call the Node, render JSON.  They are
synchronous, so tests through StubTreq get answers at once.  Every error is
JSON: ChainCore's own errors through api/errors.py, werkzeug's 404/405 and
anything unexpected (500, traceback only in the log).
"""

import hashlib
import ipaddress
import json
from collections import OrderedDict
from typing import Protocol
from urllib.parse import urlsplit

from klein import Klein
from klein.resource import KleinResource
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet import task
from twisted.python.failure import Failure
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound as RouteNotFound
from werkzeug.routing import RequestRedirect

from ..core import compact as compact_blocks, jsonview, wire
from ..core.block import HEADER_SIZE, NONCE_OFFSET, NONCE_SIZE, Header
from ..core.chainstate import Accepted, Duplicate, NotStored, Orphan
from ..core.errors import Fault, Forbidden, Invalid, Malformed, RateLimited, Refused, TooLarge
from ..core.peer_url import is_loopback_url, normalise_url
from ..core.rules import block_fault
from .errors import json_body, json_error, render_error
from ..logs import logger
from .schema import BLOCKS_MAX_BYTES, ENDPOINTS, HEADERS_MAX_BYTES, openapi_json, params

log = logger("chaincore.api")

PEER_HEADER = b"X-ChainCore-Peer"
STREAM_CHAIN_OVER = 500     # a whole /chain longer than this is written in slices
STREAM_SLICE_BLOCKS = 10      # about 1 ms of work (blocks not yet encoded): the reactor answers others between
BLOCK_TEXTS_BYTES = 8_000_000  # the JSON of blocks kept by _block_text
STREAM_BLOCKS_OVER = 50       # a /blocks or /chain answer of more blocks than this is written in slices too
STREAM_LIST_OVER = 1_000    # /transactions and /utxos longer than this are written in slices
STREAM_SLICE_ROWS = 100       # about 1 ms of /utxos rows
UTXO_TEXTS_KEPT = 4             # long /utxos lists kept written (see NodeAPI._utxo_texts)
STREAM_SLICE_BYTES = 1_000_000  # a slice stops at about this many bytes, whatever its count
MAX_ANNOUNCED_TXS = 5000    # tx ids in one POST /announce_txs, /txs or /block_txs


def is_loopback(request) -> bool:
    host = getattr(request.getClientAddress(), "host", None)
    try:
        return ipaddress.ip_address(host).is_loopback
    except (TypeError, ValueError):
        return False


def names_sender(request, url: str) -> bool:
    """Whether url (one peer_url gave, so it parses) points at the client that sent request: a loopback client
    may name any loopback host, another client only its own address, so nobody can make the node probe a third
    party."""
    host = urlsplit(url).hostname or ""
    if is_loopback(request):
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return host == getattr(request.getClientAddress(), "host", None)


def conditional_json(request, obj) -> bytes:
    """A 200 JSON answer with an ETag of its body, or 304 with no body when If-None-Match names that tag,
    so a peer polling an unchanged answer gets a few header bytes back."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    etag = b'"' + hashlib.blake2b(body, digest_size=10).hexdigest().encode() + b'"'
    request.setHeader(b"ETag", etag)
    asked = request.getHeader(b"If-None-Match") or b""
    if isinstance(asked, str):
        asked = asked.encode("latin-1")
    if etag in [t.strip() for t in asked.split(b",")]:
        request.setResponseCode(304)
        return b""
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"application/json")
    return body


def read_json(request) -> dict:
    """The request body as a JSON object; Malformed for a wrong content type or bad JSON."""
    ctype = (request.getHeader(b"content-type") or "")
    if isinstance(ctype, bytes):
        ctype = ctype.decode("latin-1")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise Malformed("Content-Type must be application/json")
    raw = request.content.read()
    try:
        obj = jsonview.loads(raw, max_bytes=max(len(raw), 1))  # the site capped the body already
    except Malformed as e:
        reason = str(e).removeprefix("not valid JSON: ")  # what loads says, without saying it twice
        raise Malformed(f"body is not valid JSON: {reason}") from None
    if not isinstance(obj, dict):
        raise Malformed("body must be a JSON object")
    return obj


def media_type(request) -> str:
    """The request's Content-Type without parameters, lower case ("" when there is none)."""
    ctype = request.getHeader(b"content-type") or ""
    if isinstance(ctype, bytes):
        ctype = ctype.decode("latin-1")
    return ctype.split(";")[0].strip().lower()


def wants_binary(request) -> bool:
    """Whether the request's Accept ranks application/octet-stream above JSON (CONTRACT 7).

    Only an explicit `application/octet-stream` with a q-value above 0 asks for
    binary, and only when JSON (`application/json`, `application/*` or `*/*`)
    is ranked strictly lower: `*/*` alone, a tie or a malformed header get JSON.
    """
    accept = request.getHeader(b"accept") or ""
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    binary = json_q = 0.0
    for part in accept[:1000].split(","):
        fields = [f.strip() for f in part.split(";")]
        media, q = fields[0].lower(), 1.0
        for param in fields[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        if media == wire.MEDIA_TYPE:
            binary = max(binary, q)
        elif media in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return binary > 0 and binary > json_q


HEIGHT_HEADER = b"X-ChainCore-Height"  # the tip height, which the JSON lists carry as "height"
MORE_HEADER = b"X-ChainCore-More"      # "true" when a byte cap left items out ("more" in JSON)


def binary_body(request, data: bytes, height: int | None = None, more: bool | None = None) -> bytes:
    """A 200 answer carrying canonical bytes (docs/protocol.md 11), and the tip height beside a list."""
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", wire.MEDIA_TYPE.encode())
    if height is not None:
        request.setHeader(HEIGHT_HEADER, b"%d" % height)
    if more is not None:
        request.setHeader(MORE_HEADER, b"true" if more else b"false")
    return data


def no_content(request) -> bytes:
    """A 204 answer with no body and no headers beyond what HTTP needs (an announcement's answer)."""
    request.setResponseCode(204)
    for name in (b"server", b"date", b"content-type"):
        request.responseHeaders.removeHeader(name)
    return b""


def read_block(request, params):
    """The block a POST carries: canonical bytes (octet-stream) or {"block": ...} (JSON).

    Bytes over the block size limit are refused unread (TooLarge, 413); bytes
    that are not exactly one block are Malformed.  A decoded block hashes the
    bytes received; a JSON one is re-encoded by parse_block.
    """
    if media_type(request) == wire.MEDIA_TYPE:
        return wire.decode_block(_read_binary(request, params.max_block_size, "block"), params.max_block_size)
    return jsonview.parse_block(field(read_json(request), "block"), "block", params.max_money)


def read_tx(request, params):
    """The transaction a POST carries: canonical bytes (octet-stream) or {"transaction": ...} (JSON)."""
    if media_type(request) == wire.MEDIA_TYPE:
        return wire.decode_tx(_read_binary(request, params.max_block_size, "transaction"), params.max_block_size)
    return jsonview.parse_tx(field(read_json(request), "transaction"), "transaction", params.max_money)


def _read_binary(request, max_bytes: int, what: str) -> bytes:
    raw = request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise TooLarge(f"a {what} is at most {max_bytes} bytes")
    return raw


def field(obj: dict, key: str):
    if key not in obj:
        raise Malformed(f"field {key} is missing")
    return obj[key]


def peer_url(request) -> str | None:
    """The X-ChainCore-Peer URL a request carries, or None when it has none that parses as an http(s) URL."""
    value = request.getHeader(PEER_HEADER)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if not (value and value.startswith(("http://", "https://")) and len(value) < 200):
        return None
    try:
        parts = urlsplit(value)
        parts.hostname, parts.port  # each raises ValueError for a URL that does not parse
    except ValueError:
        return None
    return value


class PeerDirectory(Protocol):
    """What the API needs of the peer-to-peer side (p2p.network.PeerNetwork implements it)."""

    def known_urls(self) -> list: ...
    def active_urls(self) -> list: ...

    def add(self, url: str) -> str:
        """Take a peer named by hand: "added" or "known"; BadPeerURL or PeerNotKept if the table won't keep it."""

    def hint(self, url: str) -> None:
        """A client named itself in X-ChainCore-Peer (the API has checked it names the sender)."""

    def relay_urls(self) -> list:
        """The peers this node polls and announces to (outbound) and those that chose it (inbound)."""

    def inbound(self, url: str) -> None:
        """Peer url (checked to be the sender) polls or announces to us as one of its outbound peers."""

    def announced(self, url: str, header, compact=None, sent_to=()) -> str:
        """Peer url (checked to be the sender) announced a block (its header, maybe its compact form):
        "known", or "fetching" while the peer layer gets what it lacks from url."""

    def send_compact(self, url: str, want: bool) -> None:
        """Peer url (checked to be the sender) asks for compact forms of the blocks we relay, or no more."""

    def announced_txs(self, url: str, tx_ids: list) -> int:
        """Peer url announced transactions by id; how many this node will fetch."""

    def misbehaved(self, url: str, error) -> None:
        """Peer url (checked to be the sender) posted a block or transaction that breaks a rule (an Invalid, or
        the code it is charged with): penalise it by that code, as for data it answered with."""


class NodeAPI:
    """The Klein application of one node."""

    app = Klein()
    stream_slice_bytes = STREAM_SLICE_BYTES

    def __init__(self, node, peers: PeerDirectory, metrics=None, cooperate=None, events=None, budget=None):
        self._node = node
        self._budget = budget        # a RequestBudget (api/budgets.py) that expensive requests are charged to
        self._peers = peers
        self._metrics = metrics
        self._cooperate = cooperate  # schedules long answers in slices (twisted.internet.task.cooperate)
        self._events = events        # the EventHub behind /events (api/events.py)
        self._explorer_pages = None  # the Explorer, built at the first page a person asks for
        self._block_texts = OrderedDict()  # {block hash: JSON text}: see _block_text
        self._block_texts_bytes = 0
        self._utxo_texts_kept = {}  # {(address, wallet state): [JSON text]}: see _utxo_texts

    def resource(self):
        return _APIResource(self.app)

    @property
    def _explorer(self):
        """The pages for people (api/explorer.py), imported and built when first asked for: a node that no
        person browses never loads them."""
        if self._explorer_pages is None:
            from .explorer import Explorer  # lazily: see the docstring
            self._explorer_pages = Explorer(self._node, self._peers)
        return self._explorer_pages

    # -- errors ------------------------------------------------------------------------

    @app.handle_errors(Refused)
    def _refused(self, request, failure):
        return render_error(request, failure.value)

    @app.handle_errors(Fault)
    def _node_fault(self, request, failure):
        # the message may name a datadir path: the log has it, the client gets the class's public text
        log.warn("{method} {path} failed: {code}: {error}", method=request.method.decode("latin-1"),
                 path=request.path.decode("latin-1"), code=failure.value.code, error=failure.value)
        return render_error(request, failure.value)

    @app.handle_errors(RouteNotFound)
    def _no_route(self, request, failure):
        return json_error(request, 404, f"no such endpoint: {request.path.decode('latin-1')}", "not-found")

    @app.handle_errors(RequestRedirect)
    def _slash(self, request, failure):
        # werkzeug redirects /status/ to /status; API clients get a plain JSON 404 naming the right path.
        path = request.path.decode("latin-1")
        return json_error(request, 404, f"no such endpoint: {path} (without the trailing slash?)", "not-found")

    @app.handle_errors(MethodNotAllowed)
    def _bad_method(self, request, failure):
        return json_error(request, 405, f"method {request.method.decode('latin-1')} not allowed here",
                          "method-not-allowed")

    @app.handle_errors(Exception)
    def _fault(self, request, failure):
        log.failure("internal error answering {method} {path}", failure,
                    method=request.method.decode("latin-1"), path=request.path.decode("latin-1"))
        return render_error(request, failure.value)

    # -- seed-compatible endpoints --------------------------------------------------------

    @app.route("/status", methods=["GET"])
    def status(self, request):
        source = self._heard_from(request)  # peers probe /status: that is how we hear of late starters
        if source and request.args.get(b"outbound") and names_sender(request, source):
            self._peers.inbound(source)  # a peer polling us as one of its outbound peers
        return conditional_json(request, status_of(self._node, self._peers))

    def _charge(self, request, endpoint: str, blocks: int = 0) -> None:
        """Spend the client's tokens for one request of endpoint; RateLimited (429) when they ran out."""
        if self._budget is None:
            return
        host = getattr(request.getClientAddress(), "host", None)
        endpoint_class, decision = self._budget.charge(host if isinstance(host, str) else "unix", endpoint, blocks)
        if not decision.allowed:
            if self._metrics is not None:
                self._metrics.refused("rate-limited", endpoint_class)
            raise RateLimited(f"too many {endpoint_class} requests from {host}; try again in "
                              f"{decision.retry_after_header} s", decision.retry_after_s)

    def _in_turn(self, fn, *args):
        """fn(*args) run as one turn of the cooperator that writes long answers, not as the request arrives:
        of many expensive requests that arrive together, one runs between two turns of the reactor, so a
        cheap request (/status) waits for one of them, not for all.  Fires with fn's result (or failure)."""
        results = []

        def turn():
            results.append(fn(*args))
            yield None

        done = (self._cooperate or task.cooperate)(turn()).whenDone()
        return done.addCallback(lambda _: results[0])

    def _heard_from(self, request) -> str | None:
        """The sender's X-ChainCore-Peer URL; passed to the peer layer when it names the sender itself."""
        source = peer_url(request)
        if source and names_sender(request, source):
            self._peers.hint(source)
        return source

    @app.route("/chain", methods=["GET"])
    def chain(self, request):
        p = params(request, "chain")
        chain = self._node.chain
        length = chain.height + 1
        whole = p["start"] is None and p["limit"] is None
        self._charge(request, "chain", length if whole else min(p["limit"] or 100, length))
        if whole:
            if length > STREAM_CHAIN_OVER:  # the whole chain is not byte-capped: it is asked for whole
                hashes = chain.main_hashes(0, length)
                return self._stream_items(request, "chain", self._blocks_json(hashes), None,
                                          lambda count, more: {"length": length, "more": False, "next": None},
                                          STREAM_SLICE_BLOCKS)
            start, limit = 0, length
        else:
            start, limit = p["start"] or 0, p["limit"] or 100
        cap = min(p["max_bytes"], BLOCKS_MAX_BYTES)
        tail = (lambda count, more: {"length": length, "more": more, "next": start + count if more else None})
        if limit > STREAM_BLOCKS_OVER:
            return self._stream_items(request, "chain", self._blocks_json(self._main_hashes(start, limit)), cap,
                                      tail, STREAM_SLICE_BLOCKS)
        items, more = _capped(self._blocks_json(self._main_hashes(start, limit)), cap)
        return _json_list_body(request, "chain", items, tail(len(items), more))

    def _main_hashes(self, start: int, limit: int) -> list:
        """The main chain's hashes from height start, taken now: a reorganisation during a streamed
        answer cannot mix two branches."""
        return self._node.chain.main_hashes(start, limit)

    def _blocks_json(self, hashes: list):
        for block_hash in hashes:
            yield self._block_text(block_hash)

    def _block_text(self, block_hash: bytes) -> str:
        """A stored block's JSON text; the last BLOCK_TEXTS_BYTES of them are kept (a block's JSON never
        changes), so /chain and /blocks asked again and again decode no block twice."""
        texts = self._block_texts
        text = texts.get(block_hash)
        if text is not None:
            texts.move_to_end(block_hash)
            return text
        text = json.dumps(jsonview.block_to_json(self._node.chain.block(block_hash)), separators=(",", ":"))
        texts[block_hash] = text
        self._block_texts_bytes += len(text)
        while self._block_texts_bytes > BLOCK_TEXTS_BYTES and texts:
            self._block_texts_bytes -= len(texts.popitem(last=False)[1])
        return text

    def _stream_items(self, request, key: str, texts, max_bytes, tail, per_slice: int):
        """A JSON answer {key: [texts...], **tail(count, more)} written in slices of at most per_slice
        items or about stream_slice_bytes, paused while the client does not read (the connection's
        producer), so neither memory nor the reactor is held.  Texts are JSON encoded items, made
        lazily as they are written; max_bytes (None: no cap) stops the list, at least one item sent,
        and tail says whether any were left out.
        """
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/json")
        gone = []
        request.notifyFinish().addErrback(gone.append)

        def slices():
            request.write(b'{"%s":[' % key.encode())
            pending, pending_bytes, total, count, more = [], 0, 0, 0, False
            for text in texts:
                if gone:
                    return
                if max_bytes is not None and count and total + len(text) + 1 > max_bytes:
                    more = True
                    break
                pending.append(("," if count else "") + text)
                count += 1
                total += len(text) + 1
                pending_bytes += len(text) + 1
                if len(pending) >= per_slice or pending_bytes >= self.stream_slice_bytes:
                    request.write("".join(pending).encode())
                    pending, pending_bytes = [], 0
                    yield None
            rest = json.dumps(tail(count, more), separators=(",", ":"))
            request.write(("".join(pending) + "]" + ("," + rest[1:] if rest != "{}" else "}")).encode())

        # Klein finishes the request when this Deferred fires
        work = (self._cooperate or task.cooperate)(slices())
        if self._cooperate is None:  # a real connection: stop writing while the client's buffer is full
            request.registerProducer(_TaskProducer(work), True)
            work.whenDone().addBoth(lambda r: (request.unregisterProducer(), r)[1])
        return work.whenDone().addCallbacks(lambda _: None, lambda f: f.trap(task.TaskStopped) and None)

    @app.route("/peers", methods=["GET"])
    def peers(self, request):
        known, active = self._peers.known_urls(), self._peers.active_urls()
        if not is_loopback(request):  # another host cannot reach our loopback peers: never pass them on
            known = [u for u in known if not is_loopback_url(u)]
            listed = [u for u in active if not is_loopback_url(u)]
        else:
            listed = active
        relay = [u for u in self._peers.relay_urls() if is_loopback(request) or not is_loopback_url(u)]
        return conditional_json(request, {"peers": sorted(known), "active_peers": sorted(listed),
                                          "relay_peers": sorted(relay), "peer_count": len(active)})

    @app.route("/peers", methods=["POST"])
    def add_peer(self, request):
        if not is_loopback(request):
            raise Forbidden("only loopback clients may add peers")
        url = normalise_url(field(read_json(request), "url"))  # 400 for a URL the peer table would not keep
        status = self._peers.add(url)  # "added" or "known"; PeerNotKept (400) when the table refuses it
        return json_body(request, 200, {"status": status, "url": url})

    @app.route("/transactions", methods=["GET"])
    def transactions(self, request):
        p = params(request, "transactions")
        self._charge(request, "transactions")
        txs = self._node.mempool.transactions()
        texts = (json.dumps(jsonview.tx_to_json(tx), separators=(",", ":")) for tx in txs)
        # the whole mempool unless the client sets a cap (peers do): the pool is bounded in bytes itself,
        # and a long answer is streamed in slices
        cap = p["max_bytes"]  # None when not given; larger values are taken as TRANSACTIONS_MAX_BYTES
        if len(txs) > STREAM_LIST_OVER:
            return self._stream_items(request, "transactions", texts, cap, lambda count, more: {"more": more},
                                      STREAM_SLICE_ROWS)
        items, more = _capped(texts, cap) if cap is not None else (list(texts), False)
        return _json_list_body(request, "transactions", items, {"more": more})

    @app.route("/submit_block", methods=["POST"])
    def submit_block(self, request):
        local = (request.getHeader(b"X-Local-Mining") or b"").strip().lower() == b"true"
        if local and not is_loopback(request):
            raise Forbidden("X-Local-Mining is honoured only from loopback clients")
        self._charge(request, "submit_block")
        block = read_block(request, self._node.params)
        source = self._heard_from(request)
        d = self._node.submit_block(block, source=source, local=local)
        d.addErrback(self._penalise_sender, request, source, block_fault)
        return d.addCallback(self._block_answer, request)

    def _penalise_sender(self, failure, request, source, charge=lambda err: err):
        """A block or transaction a peer posted broke a rule: the peer that sent it loses points (by the
        rule's code, as charge(error) gives it: none for a transaction's conflict or missing parent), then
        the client gets the refusal."""
        if source and failure.check(Invalid) and names_sender(request, source):
            self._peers.misbehaved(source, charge(failure.value))
        return failure

    def _block_answer(self, result, request):
        if isinstance(result, Accepted):
            return json_body(request, 200, {"status": "accepted", "block_hash": result.block_hash.hex(),
                                            "height": result.height, "main_chain": result.main_chain})
        if isinstance(result, Duplicate):
            return json_body(request, 200, {"status": "duplicate", "block_hash": result.block_hash.hex()})
        if isinstance(result, NotStored):  # never "accepted" (CONTRACT 7): checked, not written, no penalty
            return json_body(request, 200, {"status": "not-stored", "block_hash": result.block_hash.hex(),
                                            "reason": result.reason})
        assert isinstance(result, Orphan)
        return json_body(request, 202, {"status": "orphan", "block_hash": result.block_hash.hex(),
                                        "missing": result.missing.hex()})

    @app.route("/add_transaction", methods=["POST"])
    def add_transaction(self, request):
        self._charge(request, "add_transaction")
        # a body refused at this tip is refused again before it is parsed, whatever its size
        digest = hashlib.sha256(request.content.read()).digest()
        request.content.seek(0)
        refusal = self._node.refused_recently(digest)
        if refusal is not None:
            raise refusal
        source = self._heard_from(request)
        try:
            tx = read_tx(request, self._node.params)
        except Invalid as err:  # malformed bytes or JSON from a peer cost it points too
            self._penalise_sender(Failure(err), request, source)
            raise
        d = self._node.submit_tx(tx, source=source, body_digest=digest)
        d.addErrback(self._penalise_sender, request, source)
        return d.addCallback(lambda result: json_body(request, 200, {"status": result.status,
                                                                     "tx_id": result.tx_id.hex()}))

    # -- announce, then fetch (compact blocks, transactions by id) --------------------------

    def _announcer(self, request) -> str:
        source = peer_url(request)
        if not source or not names_sender(request, source):
            raise Malformed("an announcement needs an X-ChainCore-Peer header naming the sender")
        return source

    @app.route("/announce", methods=["POST"])
    def announce(self, request):
        self._charge(request, "announce")
        max_txs = compact_blocks.max_block_txs(self._node.params.max_block_size)
        if media_type(request) == wire.MEDIA_TYPE:
            # bytes: the 120-byte header alone, or the compact form (which starts with it); the body is
            # capped at the largest compact form and its counts at what a block holds, before any work
            raw = _read_binary(request, compact_blocks.max_compact_bytes(self._node.params.max_block_size),
                               "announcement")
            source = self._announcer(request)
            compact = None if len(raw) == HEADER_SIZE else \
                compact_blocks.parse_compact_bytes(raw, self._node.params.max_block_size)
            header = Header.decode(raw) if compact is None else compact.header
        else:
            body = read_json(request)
            source = self._announcer(request)
            header = jsonview.parse_header(field(body, "block"), "block")
            compact = None
            if body.get("compact") is not None:
                if isinstance(body["compact"], dict) and "header" not in body["compact"]:
                    body["compact"]["header"] = body["block"]  # sent once, beside the compact form's ids
                compact = compact_blocks.parse_compact(body["compact"], self._node.params.max_money, max_txs)
                if compact.hash != header.hash:
                    raise Malformed("compact.header is not the announced block's header")
        self._peers.inbound(source)
        self._peers.hint(source)
        sent_to = compact_blocks.parse_sent_to(request.getHeader(compact_blocks.SENT_TO_HEADER))
        status = self._peers.announced(source, header, compact, sent_to)
        if media_type(request) == wire.MEDIA_TYPE:
            return no_content(request)  # a binary announcement gets the smallest answer there is
        return json_body(request, 200, {"status": status, "block_hash": header.hash.hex()})

    @app.route("/send_compact", methods=["POST"])
    def send_compact(self, request):
        self._charge(request, "announce")
        if media_type(request) == wire.MEDIA_TYPE:
            raw = request.content.read(2)
            if raw not in (b"\x00", b"\x01"):
                raise Malformed("a compact-push choice is one byte, 0 or 1")
            want = raw == b"\x01"
        else:
            want = field(read_json(request), "push")
            if not isinstance(want, bool):
                raise Malformed("push must be true or false")
        source = self._announcer(request)
        self._peers.inbound(source)
        self._peers.send_compact(source, want)
        if media_type(request) == wire.MEDIA_TYPE:
            return no_content(request)
        return json_body(request, 200, {"push": want})

    @app.route("/announce_txs", methods=["POST"])
    def announce_txs(self, request):
        self._charge(request, "announce_txs")
        ids = _read_ids(request, "tx_ids")
        source = self._announcer(request)
        self._peers.inbound(source)
        self._peers.hint(source)
        wanted = self._peers.announced_txs(source, ids)
        if media_type(request) == wire.MEDIA_TYPE:
            return no_content(request)  # like a binary block announcement: the smallest answer there is
        return json_body(request, 200, {"wanted": wanted})

    @app.route("/compact/<string:block_hash>", methods=["GET"])
    def compact(self, request, block_hash):
        p = params(request, "compact", {"hash": block_hash})
        self._charge(request, "block")
        request.setHeader(b"Vary", b"Accept")
        block = self._node.block_for_relay(bytes.fromhex(p["hash"]))
        if wants_binary(request):
            return binary_body(request, compact_blocks.compact_to_bytes(block))
        return json_body(request, 200, compact_blocks.compact_to_json(block))

    @app.route("/block_txs", methods=["POST"])
    def block_txs(self, request):
        self._charge(request, "block")
        body = read_json(request)
        block = self._node.block_for_relay(jsonview.require_hex(field(body, "block_hash"), "block_hash", 32))
        # each index at most once, so at most the block's own count (a 1 MB block of small transactions
        # holds more than an announcement's 5,000) and the answer is never bigger than the block
        indexes = jsonview.require_list(field(body, "indexes"), "indexes", len(block.transactions))
        txs, seen = [], set()
        for n, index in enumerate(indexes):
            index = jsonview.require_int(index, f"indexes[{n}]", hi=len(block.transactions) - 1)
            if index in seen:  # each at most once: the answer is never bigger than the block
                raise Malformed(f"indexes[{n}] asks for index {index} again")
            seen.add(index)
            txs.append(block.transactions[index])
        request.setHeader(b"Vary", b"Accept")
        if wants_binary(request):  # a framed list of canonical transactions, in the order asked
            return binary_body(request, wire.frame_list(tx.raw for tx in txs))
        return json_body(request, 200, {"block_hash": block.hash.hex(),
                                        "transactions": [jsonview.tx_to_json(tx) for tx in txs]})

    @app.route("/txs", methods=["POST"])
    def txs(self, request):
        self._charge(request, "txs")
        ids = list(dict.fromkeys(_read_ids(request, "tx_ids")))  # an id asked twice is answered once
        found = [tx for tx in (self._node.mempool.get(tx_id) for tx_id in ids) if tx is not None]
        request.setHeader(b"Vary", b"Accept")
        if wants_binary(request):  # a framed list of the canonical transactions found
            return binary_body(request, wire.frame_list(tx.raw for tx in found))
        return json_body(request, 200, {"transactions": [jsonview.tx_to_json(tx) for tx in found]})

    # -- further endpoints ----------------------------------------------------------------

    @app.route("/block/<string:block_hash>", methods=["GET"])
    def block(self, request, block_hash):
        p = params(request, "block", {"hash": block_hash})
        self._charge(request, "block")
        request.setHeader(b"Vary", b"Accept")
        if wants_binary(request):  # the stored bytes go out as they are, never decoded
            return binary_body(request, self._node.block_bytes(bytes.fromhex(p["hash"])))
        block = self._node.block(bytes.fromhex(p["hash"]))
        out = jsonview.block_to_json(block)
        out["main_chain"] = self._node.chain.is_main(block.hash)
        out["confirmations"] = (self._node.chain.height - block.height + 1) if out["main_chain"] else 0
        return json_body(request, 200, out)

    @app.route("/blocks", methods=["GET"])
    def blocks(self, request):
        p = params(request, "blocks")
        chain = self._node.chain
        self._charge(request, "blocks", max(0, min(p["limit"], chain.height + 1 - p["start"])))
        cap, height, start = min(p["max_bytes"], BLOCKS_MAX_BYTES), chain.height, p["start"]
        request.setHeader(b"Vary", b"Accept")
        if wants_binary(request):  # the stored bytes, framed, never decoded; read one by one up to the cap
            raws, more = _capped(self._node.iter_main_block_bytes(start, p["limit"]), cap)
            return binary_body(request, wire.frame_list(raws), height=height, more=more)
        tail = (lambda count, more: {"height": height, "more": more, "next": start + count if more else None})
        if p["limit"] > STREAM_BLOCKS_OVER:
            return self._stream_items(request, "blocks", self._blocks_json(self._main_hashes(start, p["limit"])),
                                      cap, tail, STREAM_SLICE_BLOCKS)
        items, more = _capped(self._blocks_json(self._main_hashes(start, p["limit"])), cap)
        return _json_list_body(request, "blocks", items, tail(len(items), more))

    @app.route("/headers", methods=["GET"])
    def headers(self, request):
        p = params(request, "headers")
        self._charge(request, "headers")
        locator = [bytes.fromhex(h) for h in p["locator"].split(",") if h]
        chain = self._node.chain
        headers = chain.headers_after(locator, p["limit"])
        request.setHeader(b"Vary", b"Accept")
        if wants_binary(request):  # a header is 120 bytes: 2,000 of them stay below any cap
            last = headers[-1].height if headers else chain.fork_point(locator)
            return binary_body(request, wire.encode_headers(headers), height=chain.height, more=last < chain.height)
        texts = (json.dumps(jsonview.header_to_json(h), separators=(",", ":")) for h in headers)
        items, cut = _capped(texts, min(p["max_bytes"], HEADERS_MAX_BYTES))
        # more: the tip lies beyond the last header sent (the byte cap or the limit stopped the answer)
        last = headers[len(items) - 1].height if items else chain.fork_point(locator)
        return _json_list_body(request, "headers", items, {"height": chain.height,
                                                           "more": cut or last < chain.height})

    @app.route("/tx/<string:tx_id>", methods=["GET"])
    def tx(self, request, tx_id):
        p = params(request, "tx", {"tx_id": tx_id})
        found = self._node.transaction(bytes.fromhex(p["tx_id"]))
        out = jsonview.tx_to_json(found["tx"])
        out.update(confirmations=found["confirmations"], height=found["height"],
                   block_hash=found["block_hash"].hex() if found["block_hash"] else None)
        return json_body(request, 200, out)

    @app.route("/balance/<string:address>", methods=["GET"])
    def balance(self, request, address):
        params(request, "balance", {"address": address})
        self._charge(request, "balance")
        return self._in_turn(lambda: json_body(request, 200, self._node.balance(address)))

    @app.route("/utxos/<string:address>", methods=["GET"])
    def utxos(self, request, address):
        params(request, "utxos", {"address": address})
        self._charge(request, "utxos")
        return self._in_turn(self._utxos_answer, request, address)

    def _utxos_answer(self, request, address):
        coins = self._node.utxo_coins(address)
        if len(coins) > STREAM_LIST_OVER:  # rows are built slice by slice, as they are written
            return self._stream_items(request, "utxos", self._utxo_texts(address, coins), None,
                                      lambda count, more: {"address": address}, STREAM_SLICE_ROWS)
        return json_body(request, 200, {"address": address, "utxos": [self._node.utxo_row(*c) for c in coins]})

    def _utxo_texts(self, address, coins):
        """The JSON texts of a long /utxos list, made as they are written; a list written whole is kept
        until the tip or the mempool changes (UTXO_TEXTS_KEPT addresses), and asked again costs no row."""
        key = (address, self._node.wallet_state())
        kept = self._utxo_texts_kept.get(key)
        if kept is not None:
            yield from kept
            return
        texts = []
        for c in coins:
            text = json.dumps(self._node.utxo_row(*c), separators=(",", ":"))
            texts.append(text)
            yield text
        if key[1] == self._node.wallet_state():  # nothing changed while it was written
            if any(k[1] != key[1] for k in self._utxo_texts_kept):
                self._utxo_texts_kept.clear()
            while len(self._utxo_texts_kept) >= UTXO_TEXTS_KEPT:
                del self._utxo_texts_kept[next(iter(self._utxo_texts_kept))]
            self._utxo_texts_kept[key] = texts

    @app.route("/history/<string:address>", methods=["GET"])
    def history(self, request, address):
        p = params(request, "history", {"address": address})
        self._charge(request, "history")
        return self._in_turn(self._history_answer, request, address, p)

    def _history_answer(self, request, address, p):
        rows, nxt = self._node.history_page(address, p["limit"], p["cursor"])
        return json_body(request, 200, {"address": address, "history": rows, "next": nxt})

    @app.route("/fees", methods=["GET"])
    def fees(self, request):
        return json_body(request, 200, self._node.fee_estimate())

    @app.route("/events", methods=["GET"])
    def events(self, request):
        if self._events is None:
            raise RouteNotFound()
        p = params(request, "events")
        last_id = request.getHeader(b"Last-Event-ID") or p["last_event_id"]
        if isinstance(last_id, bytes):
            last_id = last_id.decode("latin-1")
        return self._events.open(request, last_id)

    # -- pages for people (api/explorer.py) --------------------------------------------

    def _html(self, request, answer):
        status, page = answer
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return page.encode()

    @app.route("/search", methods=["GET"])
    def search(self, request):
        self._charge(request, "explorer")
        q = request.args.get(b"q", [b""])[0].decode("utf-8", "replace")[:200]
        status, answer = self._explorer.search(q)
        if status == 303:
            request.setResponseCode(303)
            request.setHeader(b"Location", answer.encode())
            request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
            return b""
        return self._html(request, (status, answer))

    @app.route("/explorer/blocks", methods=["GET"])
    def blocks_page(self, request):
        self._charge(request, "explorer")
        try:
            before = params(request, "blocks_page")["before"]
        except Malformed as e:
            return self._html(request, self._explorer.not_found("Bad page", str(e), status=400))
        return self._in_turn(lambda: self._html(request, self._explorer.blocks(before)))

    @app.route("/explorer/block/<string:ref>", methods=["GET"])
    def block_page(self, request, ref):
        self._charge(request, "explorer")
        return self._html(request, self._explorer.block(ref))

    @app.route("/explorer/tx/<string:tx_id>", methods=["GET"])
    def tx_page(self, request, tx_id):
        self._charge(request, "explorer")
        return self._html(request, self._explorer.transaction(tx_id))

    @app.route("/explorer/address/<string:address>", methods=["GET"])
    def address_page(self, request, address):
        self._charge(request, "explorer")
        cursor = request.args.get(b"cursor", [b""])[0].decode("utf-8", "replace") or None
        return self._in_turn(lambda: self._html(request, self._explorer.address(address, cursor)))

    @app.route("/explorer/mempool", methods=["GET"])
    def mempool_page(self, request):
        self._charge(request, "explorer")
        return self._html(request, self._explorer.mempool())

    @app.route("/mining/template", methods=["GET"])
    def template(self, request):
        p = params(request, "template")
        block = self._node.block_template(p["address"])
        body = jsonview.block_to_json(block)
        del body["hash"]  # the hash changes with the nonce the miner finds
        out = dict(body)
        out.update(block=body, header_hex=block.header.raw.hex(), nonce_offset=NONCE_OFFSET,
                   nonce_size=NONCE_SIZE, target=f"{block.header.target:064x}", height=block.height,
                   coinbase_value=block.transactions[0].output_total, tx_count=len(block.transactions))
        return json_body(request, 200, out)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        if self._metrics is None:
            raise RouteNotFound()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.render()

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        request.setHeader(b"Content-Type", b"application/json")
        return openapi_json(self._node.advertise_url)

    @app.route("/", methods=["GET"])
    def index(self, request):
        self._charge(request, "explorer")
        return self._in_turn(lambda: self._html(request, self._explorer.home()))


class _APIResource(KleinResource):
    """Klein's resource, whose refusals before any route runs are JSON too: a path or Host header that is
    not UTF-8 (Klein answers plain text) and a Host werkzeug cannot bind its routes to, such as a label of
    64 characters or more (a 500 page from twisted.web)."""

    def render(self, request):
        try:
            b"/".join(request.postpath).decode("utf-8")
            (request.getRequestHostname() or b"").decode("utf-8")
        except UnicodeDecodeError:
            return json_error(request, 400, "the request's path or Host header is not UTF-8", "malformed")
        try:
            return super().render(request)
        except HTTPException:  # werkzeug's BadHost, raised while binding the routes to the request's host
            return json_error(request, 400, "the Host header does not name a host", "malformed")


def _capped(texts, max_bytes: int) -> tuple:
    """(the texts that fit in max_bytes, at least one; whether any were left out), reading no text past the cap."""
    items, total = [], 0
    for text in texts:
        if items and total + len(text) + 1 > max_bytes:
            return items, True
        items.append(text)
        total += len(text) + 1
    return items, False


def _json_list_body(request, key: str, items: list, extra: dict) -> bytes:
    """A JSON object holding the already encoded items under key, then extra: built once, never re-encoded."""
    request.setResponseCode(200)
    request.setHeader(b"Content-Type", b"application/json")
    tail = json.dumps(extra, separators=(",", ":"))
    return ('{"%s":[' % key + ",".join(items) + "]," + tail[1:]).encode()


class _TaskProducer:
    """A streaming producer over a CooperativeTask: the connection pauses the task while its buffer is full."""

    def __init__(self, work):
        self._work = work

    def pauseProducing(self):
        try:
            self._work.pause()
        except task.TaskDone:
            pass

    def resumeProducing(self):
        try:
            self._work.resume()
        except (task.TaskDone, task.NotPaused):
            pass

    def stopProducing(self):
        try:
            self._work.stop()
        except task.TaskDone:
            pass


def _read_ids(request, name: str) -> list:
    """The transaction ids a POST carries: 32-byte ids concatenated (octet-stream) or {name: [hex, ...]}
    (JSON); at most MAX_ANNOUNCED_TXS, Malformed otherwise (a body over the cap is refused unread)."""
    if media_type(request) == wire.MEDIA_TYPE:
        raw = _read_binary(request, 32 * MAX_ANNOUNCED_TXS, f"list of {name}")
        if not raw or len(raw) % 32:
            raise Malformed(f"{name} in bytes must be one or more 32-byte ids, not {len(raw)} bytes")
        return [raw[i:i + 32] for i in range(0, len(raw), 32)]
    return _hex_ids(field(read_json(request), name), name)


def _hex_ids(value, name: str) -> list:
    """A list of 32-byte hex ids (at most MAX_ANNOUNCED_TXS); Malformed naming the field otherwise."""
    items = jsonview.require_list(value, name, MAX_ANNOUNCED_TXS)
    return [jsonview.require_hex(v, f"{name}[{n}]", 32) for n, v in enumerate(items)]


def status_of(node, peers: PeerDirectory) -> dict:
    """The /status answer: the node's side and the peer count."""
    return dict(node.status(), peer_count=len(peers.active_urls()))


__all__ = ["NodeAPI", "ENDPOINTS"]
