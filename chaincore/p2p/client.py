"""PeerClient: the one way this node speaks HTTP to its peers (CONTRACT 2).

Every call has one deadline that covers the headers *and* the body, a byte cap
on the body, the `X-ChainCore-Peer` header and a place in two semaphores (per
peer and in total).  treq's own `timeout=` stops at the headers and cancelling
a body read leaves the socket open (ENGINEERING 5), so the body is read with
`deliverBody` and a protocol that aborts the transport at the cap or deadline.
Blocks, headers and transactions travel as canonical bytes where the peer
takes them (docs/protocol.md 11): `get_binary` asks for them and still reads
a JSON answer, `blocks_from_answer` and `headers_from_answer` turn either
into objects, and `post_binary` sends them.
"""

import json
from dataclasses import dataclass

from twisted.internet import defer, error as net_error
from twisted.internet.protocol import Protocol
from treq.client import HTTPClient
from twisted.web.client import Agent, GzipDecoder, HTTPConnectionPool, ResponseDone, _HTTP11ClientFactory
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgent, IBodyProducer, UNKNOWN_LENGTH
from zope.interface import implementer
from twisted.web._newclient import (RequestGenerationFailed, RequestNotSent, RequestTransmissionFailed,
                                     ResponseFailed)

from ..core import jsonview, wire
from ..core.errors import Malformed, PeerBusy, PeerUnreachable
from ..core.jsonview import parse_block, parse_header
from ..core.peer_url import is_loopback_url
from .peers import normalise_url

HEALTH_TIMEOUT_S = 2.0
DATA_TIMEOUT_S = 5.0
DEFAULT_MAX_BODY_BYTES = 8_000_000
STATUS_MAX_BYTES = 64_000
BUSY_RETRY_DEFAULT_S = 2.0  # a busy peer (429/503) that names no Retry-After is asked again after this
BUSY_RETRY_MAX_S = 30.0     # and one that names a longer wait, after this at the latest
PEER_HEADER = b"X-ChainCore-Peer"

# Failures of the connection or the exchange, never of the data itself.
_NETWORK_ERRORS = (net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectionLost,
                   net_error.ConnectionDone, net_error.ConnectingCancelledError, net_error.TimeoutError,
                   ResponseFailed, RequestNotSent, RequestTransmissionFailed, RequestGenerationFailed,
                   defer.CancelledError, defer.TimeoutError)


@dataclass
class PeerTraffic:
    """Body bytes exchanged with one peer (headers not counted), for benchmarks and metrics."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


@dataclass(frozen=True)
class BinaryAnswer:
    """A 200 answer in canonical bytes, the tip height the peer sent beside a list, and whether its byte
    cap left items out (None where the peer said neither)."""

    data: bytes
    height: int | None = None
    more: bool | None = None


class _BodyTooLarge(Exception):
    pass


class _CappedBody(Protocol):
    """Collects a response body into `finished`, aborting the connection past `max_bytes` or on cancel."""

    def __init__(self, max_bytes: int, expected_length, refuse: bool = False):
        self.max_bytes, self.expected_length, self.refuse = max_bytes, expected_length, refuse
        self.received = 0
        self._chunks = []
        self.finished = defer.Deferred(self._cancel)

    def connectionMade(self):
        if self.refuse:
            self._abort(_BodyTooLarge("refused unread"))
        elif self.expected_length is not UNKNOWN_LENGTH and self.expected_length > self.max_bytes:
            self._abort(_BodyTooLarge(f"announced {self.expected_length} bytes"))

    def dataReceived(self, data):
        if self.finished.called:
            return
        self.received += len(data)
        if self.received > self.max_bytes:
            self._abort(_BodyTooLarge(f"over {self.max_bytes} bytes"))
        else:
            self._chunks.append(data)

    def connectionLost(self, reason):
        if self.finished.called:
            return
        # PotentialDataLoss: a body delimited by the connection closing; truncation shows up as bad JSON.
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self._chunks))
        else:
            self.finished.errback(reason)

    def _abort(self, exc):
        self.finished.errback(exc)
        self._chunks = []
        self.transport.stopProducing()

    def _cancel(self, _d):
        # Deferred.cancel then errbacks `finished` with CancelledError.
        self._chunks = []
        self.transport.stopProducing()


class _Deadline:
    """Cancels whichever Deferred is current when `timeout_s` runs out."""

    def __init__(self, clock, timeout_s: float):
        self.expired = False
        self.current = None
        self._call = clock.callLater(timeout_s, self._expire)

    def _expire(self):
        self.expired = True
        if self.current is not None:
            self.current.cancel()      # also reaches a Deferred this one is waiting on; a no-op once fired

    def stop(self):
        if self._call.active():
            self._call.cancel()


def pooled_http_client(reactor, max_idle_per_host: int = 2, connect_timeout_s: float = HEALTH_TIMEOUT_S):
    """A treq HTTPClient on a fresh HTTPConnectionPool, and the pool: one per node; the node's
    stopService must return `pool.closeCachedConnections()` or trial and twistd see open sockets."""
    _HTTP11ClientFactory.noisy = False  # else every outgoing connection logs "Starting factory"
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_idle_per_host
    return HTTPClient(Uncompressed(Agent(reactor, pool=pool, connectTimeout=connect_timeout_s)),
                      data_to_body_producer=BytesBody), pool


@implementer(IBodyProducer)
class BytesBody:
    """A request body of bytes written at once: treq's default (FileBodyProducer) writes it a reactor turn
    after the headers, so a block announced and then checked left only once the check was done."""

    def __init__(self, data: bytes):
        if not isinstance(data, bytes):
            raise TypeError(f"request bodies are bytes, not {type(data).__name__}")
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return defer.succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


@implementer(IAgent)
class Uncompressed:
    """An agent that sends no Accept-Encoding: treq asks every server for gzip, ChainCore never compresses and
    refuses compressed answers, so the header only costs bytes on every request to every peer."""

    def __init__(self, agent):
        self._agent = agent

    def request(self, method, uri, headers=None, bodyProducer=None):
        if headers is not None:
            headers.removeHeader(b"accept-encoding")
        return self._agent.request(method, uri, headers, bodyProducer)


class PeerClient:
    """JSON over HTTP to peers, with deadlines, byte caps, concurrency caps and traffic counters.

    `http` is a treq `HTTPClient` (in the node, one built on the node's own
    `HTTPConnectionPool`, closed when the node stops); `clock` provides
    `callLater`; `advertise_url` goes out in `X-ChainCore-Peer` on every call.
    Every method returns a Deferred that fails only with `PeerUnreachable`
    (no usable answer) or `Malformed` (an answer that is not a JSON object).
    """

    def __init__(self, http, clock, advertise_url: str, *, max_per_peer: int = 4, max_total: int = 32,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self._http, self._clock = http, clock
        self._peer_header = advertise_url.encode("ascii")
        self._own_loopback = is_loopback_url(advertise_url)  # then never named to a peer on another host
        self._cached = {}  # (peer, path) -> (ETag, answer) of conditional GETs
        self._max_per_peer = max_per_peer
        self._max_body_bytes = max_body_bytes
        self._total = defer.DeferredSemaphore(max_total)
        self._per_peer = {}
        self._traffic = {}
        self._in_flight = set()
        self.closed = False

    def close(self) -> None:
        """Refuse new requests and cancel those under way (the node is stopping)."""
        self.closed = True
        for d in list(self._in_flight):
            d.cancel()

    def get_json(self, peer_url: str, path: str, params=None, timeout_s: float = DATA_TIMEOUT_S,
                 max_bytes: int = None):
        """GET peer_url+path; fires with (status_code, dict)."""
        return defer.Deferred.fromCoroutine(
            self._exchange("GET", peer_url, path, params, None, timeout_s, max_bytes))

    def post_json(self, peer_url: str, path: str, body: dict, timeout_s: float = DATA_TIMEOUT_S,
                  max_bytes: int = None, binary_answer: bool = False):
        """POST body as JSON to peer_url+path; fires with (status_code, dict).  With binary_answer it asks
        for canonical bytes and fires with (200, BinaryAnswer) when the peer sends them."""
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return defer.Deferred.fromCoroutine(
            self._exchange("POST", peer_url, path, None, data, timeout_s, max_bytes, answer_binary=binary_answer))

    def get_binary(self, peer_url: str, path: str, params=None, timeout_s: float = DATA_TIMEOUT_S,
                   max_bytes: int = None, meta: dict = None):
        """GET peer_url+path asking for canonical bytes; fires with (200, BinaryAnswer), or with
        (status_code, dict) when the peer answers JSON (an error, or a peer that sends only JSON).
        meta, if given, receives the answer's "etag" and "retry_after" (seconds, or None)."""
        return defer.Deferred.fromCoroutine(
            self._exchange("GET", peer_url, path, params, None, timeout_s, max_bytes, binary=True, meta=meta))

    def post_binary(self, peer_url: str, path: str, data: bytes, timeout_s: float = DATA_TIMEOUT_S,
                    max_bytes: int = None, binary_answer: bool = False, headers: dict = None):
        """POST canonical bytes (application/octet-stream) to peer_url+path; fires with (status_code, dict)
        ({} for a 204).  No Accept goes with it (the answer is JSON or nothing) unless binary_answer asks for
        canonical bytes back, as post_json's does; headers ({name: [value]}) go with it as well."""
        return defer.Deferred.fromCoroutine(
            self._exchange("POST", peer_url, path, None, data, timeout_s, max_bytes, binary=True,
                           answer_binary=binary_answer, headers=headers))

    def get_cached(self, peer_url: str, path: str, timeout_s: float = DATA_TIMEOUT_S, max_bytes: int = None):
        """A conditional GET: the last answer's ETag goes in If-None-Match and a 304 gives that answer back;
        fires with (status_code, dict, changed), where changed is False for a 304."""
        return defer.Deferred.fromCoroutine(self._get_cached(peer_url, path, timeout_s, max_bytes))

    async def _get_cached(self, peer_url, path, timeout_s, max_bytes):
        try:
            key = (normalise_url(peer_url), path)
        except Malformed as e:
            raise PeerUnreachable(str(e)) from None
        etag, cached = self._cached.get(key, (None, None))
        meta = {}
        code, obj = await self._exchange("GET", peer_url, path, None, None, timeout_s, max_bytes,
                                         headers={b"If-None-Match": [etag]} if etag else None, meta=meta)
        if code == 304 and cached is not None:
            return 200, cached, False
        if code == 200 and meta.get("etag"):
            if len(self._cached) > 4096:
                self._cached.clear()
            self._cached[key] = (meta["etag"], obj)
        else:
            self._cached.pop(key, None)
        return code, obj, True

    def forget_cached(self, peer_url: str) -> None:
        """Drop the cached answers of a peer (it went away; the next request asks afresh)."""
        for key in [k for k in self._cached if k[0] == peer_url]:
            del self._cached[key]

    def status(self, peer_url: str, timeout_s: float = HEALTH_TIMEOUT_S, as_outbound: bool = False):
        """GET /status with the health timeout; fires with the status dict, PeerUnreachable unless 200.
        as_outbound tells the peer we poll it as one of our outbound peers (it then announces to us)."""
        return defer.Deferred.fromCoroutine(self._status(peer_url, timeout_s, as_outbound))

    def traffic(self, peer_url: str) -> PeerTraffic:
        """A copy of the counters for one peer (zeros for a peer never contacted)."""
        t = self._traffic.get(normalise_url(peer_url), PeerTraffic())
        return PeerTraffic(t.requests, t.bytes_sent, t.bytes_received)

    def bytes_sent(self, peer_url: str) -> int:
        return self.traffic(peer_url).bytes_sent

    def bytes_received(self, peer_url: str) -> int:
        return self.traffic(peer_url).bytes_received

    def total_traffic(self) -> PeerTraffic:
        """Counters summed over every peer."""
        total = PeerTraffic()
        for t in self._traffic.values():
            total.requests += t.requests
            total.bytes_sent += t.bytes_sent
            total.bytes_received += t.bytes_received
        return total

    async def _status(self, peer_url, timeout_s, as_outbound=False):
        path = "/status?outbound=1" if as_outbound else "/status"
        code, obj, _ = await self._get_cached(peer_url, path, timeout_s, STATUS_MAX_BYTES)
        if code != 200:
            raise PeerUnreachable(f"peer {normalise_url(peer_url)} answered /status with HTTP {code}")
        return obj

    async def _exchange(self, method, peer_url, path, params, data, timeout_s, max_bytes, binary=False,
                        headers=None, meta=None, answer_binary=False):
        if self.closed:
            raise PeerUnreachable(f"not asking {peer_url}: this node is stopping")
        try:
            peer = normalise_url(peer_url)
        except Malformed as e:
            raise PeerUnreachable(str(e)) from None
        sem = self._per_peer.get(peer)
        if sem is None:
            sem = self._per_peer[peer] = defer.DeferredSemaphore(self._max_per_peer)
        await sem.acquire()
        try:
            await self._total.acquire()
            try:
                if self.closed:  # closed while this request waited for its turn: it must not start now
                    raise PeerUnreachable(f"not asking {peer}: this node is stopping")
                return await self._exchange_now(method, peer, path, params, data, timeout_s,
                                                self._max_body_bytes if max_bytes is None else max_bytes,
                                                binary, headers, meta, answer_binary)
            finally:
                self._total.release()
        finally:
            sem.release()
            if sem.tokens == sem.limit and not sem.waiting:
                self._per_peer.pop(peer, None)

    async def _exchange_now(self, method, peer, path, params, data, timeout_s, max_bytes, binary=False,
                            extra=None, meta=None, answer_binary=False):
        what = f"peer {peer} {method} {path}"
        traffic = self._traffic.setdefault(peer, PeerTraffic())
        traffic.requests += 1
        answer_binary = answer_binary or (binary and method == "GET")
        # a POST of bytes says no Accept (its answer is JSON or empty): every header costs on every link
        headers = {} if binary and method == "POST" and not answer_binary else \
            {b"Accept": [_BINARY_ACCEPT if answer_binary else b"application/json"]}
        if not self._own_loopback or is_loopback_url(peer):  # a loopback URL means nothing to another host
            headers[PEER_HEADER] = [self._peer_header]
        headers.update(extra or {})
        if data is not None:
            headers[b"Content-Type"] = [_OCTETS if binary else b"application/json"]
            traffic.bytes_sent += len(data)
        deadline = _Deadline(self._clock, timeout_s)
        try:
            try:
                deadline.current = self._http.request(method, peer + path, params=params, headers=headers,
                                                      data=data, unbuffered=True, allow_redirects=False)
                self._in_flight.add(deadline.current)
                try:
                    response = await deadline.current
                finally:
                    self._in_flight.discard(deadline.current)
                # treq inflates gzip answers before our cap sees them (a small bomb becomes a large
                # buffer); ChainCore never compresses, so a compressed answer is cut at its first byte
                compressed = isinstance(response.original, GzipDecoder)
                body = _CappedBody(max_bytes, response.length, refuse=compressed)
                deadline.current = body.finished
                self._in_flight.add(body.finished)
                # a compressed body is refused on the raw response, so nothing is ever inflated
                (response.original.original if compressed else response.original).deliverBody(body)
                try:
                    raw = await body.finished
                finally:
                    self._in_flight.discard(body.finished)
                    traffic.bytes_received += body.received
            except _BodyTooLarge as e:
                if compressed:
                    raise PeerUnreachable(f"{what}: compressed answers are refused") from None
                raise PeerUnreachable(f"{what}: response body {e}") from None
            except _NETWORK_ERRORS as e:
                if deadline.expired:
                    late = PeerUnreachable(f"{what}: no complete answer within {timeout_s} s")
                    late.timed_out = True   # a lost or late answer, not a refusal: the peer may well be there
                    raise late from None
                raise PeerUnreachable(f"{what}: {_describe(e)}") from None
        finally:
            deadline.stop()
        if meta is not None:
            meta["etag"] = (response.headers.getRawHeaders(b"etag") or [None])[0]
            meta["retry_after"] = _retry_after(response)
        if response.code in (204, 304) and not raw:
            return response.code, {}
        if answer_binary and response.code == 200 and _media_type(response) == wire.MEDIA_TYPE:
            return response.code, BinaryAnswer(raw, _height(response), _more_header(response))
        return response.code, _parse_object(raw, what)


_OCTETS = wire.MEDIA_TYPE.encode()
_BINARY_ACCEPT = _OCTETS + b", application/json;q=0.5"  # a peer that sends only JSON still answers


def _retry_after(response) -> float | None:
    """The answer's Retry-After in seconds (the delta form; an HTTP date or junk counts as absent)."""
    value = (response.headers.getRawHeaders(b"retry-after") or [b""])[0]
    try:
        return float(int(value.decode("latin-1").strip()))
    except ValueError:
        return None


def _refusal(peer: str, path: str, code: int, meta: dict) -> PeerUnreachable:
    """The error for an answer other than 200: PeerBusy for 429 and 503 (the peer is there, only busy:
    ask again after its Retry-After, within BUSY_RETRY_MAX_S), PeerUnreachable otherwise."""
    if code in (429, 503):
        wait = meta.get("retry_after")
        wait = BUSY_RETRY_DEFAULT_S if wait is None else min(max(wait, 0.5), BUSY_RETRY_MAX_S)
        return PeerBusy(f"peer {peer} answered {path} with HTTP {code} (busy; again in {wait:.0f} s)", wait)
    return PeerUnreachable(f"peer {peer} answered {path} with HTTP {code}")


def _media_type(response) -> str:
    value = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
    return value.decode("latin-1").split(";")[0].strip().lower()


def _height(response) -> int | None:
    value = (response.headers.getRawHeaders(b"x-chaincore-height") or [b""])[0]
    return int(value) if value.isdigit() and len(value) < 20 else None


def _more_header(response) -> bool | None:
    value = (response.headers.getRawHeaders(b"x-chaincore-more") or [b""])[0].strip().lower()
    return {b"true": True, b"false": False}.get(value)


def blocks_from_answer(answer, max_block_bytes: int) -> list:
    """The blocks of a /blocks answer, binary (hashed over the bytes received) or JSON; Malformed if bad."""
    if isinstance(answer, BinaryAnswer):
        return wire.decode_blocks(answer.data, max_block_bytes)
    raw = _answer_list(answer, "blocks")
    blocks = []
    raw.reverse()
    while raw:  # parsed one at a time, each JSON view dropped once its block is built
        blocks.append(parse_block(raw.pop(), f"blocks[{len(blocks)}]"))
    return blocks


def headers_from_answer(answer) -> list:
    """The headers of a /headers answer, binary or JSON; Malformed if bad."""
    if isinstance(answer, BinaryAnswer):
        return wire.decode_headers(answer.data)
    return [parse_header(h, f"headers[{n}]") for n, h in enumerate(_answer_list(answer, "headers"))]


def answer_height(answer) -> int | None:
    """The tip height a /blocks or /headers answer names, binary or JSON; None when it names none."""
    height = answer.height if isinstance(answer, BinaryAnswer) else answer.get("height")
    return height if isinstance(height, int) and not isinstance(height, bool) else None


def answer_more(answer) -> bool:
    """Whether a list answer, binary or JSON, says its byte cap left items out."""
    return (answer.more if isinstance(answer, BinaryAnswer) else answer.get("more")) is True


def _answer_list(answer: dict, key: str) -> list:
    value = answer.get(key)
    if not isinstance(value, list):
        raise Malformed(f"peer answer lacks a list {key}")
    return value


def _describe(exc) -> str:
    if isinstance(exc, ResponseFailed) and exc.reasons:
        return "; ".join(_describe(r.value) for r in exc.reasons)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _parse_object(raw: bytes, what: str) -> dict:
    """A peer's answer as a JSON object, strictly (jsonview.loads: depth, UTF-8, constants); Malformed if not."""
    try:
        obj = jsonview.loads(raw, max_bytes=len(raw) + 1)  # the body was capped while it arrived
    except Malformed as e:
        raise Malformed(f"{what}: the answer is not JSON ({e}; {raw[:40]!r})") from None
    if not isinstance(obj, dict):
        raise Malformed(f"{what}: the answer is JSON but not an object")
    return obj


# -- the catch-up's requests: what each answer may hold, asked for in bytes -------------------

HEADERS_ANSWER_BYTES = 1_000_000     # 2,000 headers of about 420 bytes each as JSON (120 in binary)
TRANSACTIONS_ANSWER_BYTES = 4_000_000
LARGEST_ITEM_BYTES = 3_000_000       # a full block as JSON (1 MB in binary): an answer holds at least one item
ENVELOPE_BYTES = 4_096               # the answer's keys and counters around its items


def _answer_cap(max_bytes: int) -> int:
    """The body cap of an answer asked to stop at max_bytes: one item may pass it, the envelope adds a little."""
    return max(max_bytes, LARGEST_ITEM_BYTES) + ENVELOPE_BYTES


async def _fetch_headers(client, peer, locator, limit, max_bytes, timeout_s):
    params = {"locator": ",".join(h.hex() for h in locator), "limit": str(limit), "max_bytes": str(max_bytes)}
    meta = {}
    code, answer = await client.get_binary(peer, "/headers", params, timeout_s=timeout_s,
                                           max_bytes=max_bytes + ENVELOPE_BYTES, meta=meta)
    if code != 200:
        raise _refusal(peer, "/headers", code, meta)
    try:
        return headers_from_answer(answer), answer_more(answer)
    except Malformed as err:
        raise Malformed(f"peer {peer} /headers: {err}") from None


async def _fetch_blocks(client, peer, start, limit, max_bytes, timeout_s, max_block_bytes):
    params = {"start": str(start), "limit": str(limit), "max_bytes": str(max_bytes)}
    before = client.bytes_received(peer)
    meta = {}
    code, answer = await client.get_binary(peer, "/blocks", params, timeout_s=timeout_s,
                                           max_bytes=_answer_cap(max_bytes), meta=meta)
    received = client.bytes_received(peer) - before
    if code != 200:
        raise _refusal(peer, "/blocks", code, meta)
    try:
        return blocks_from_answer(answer, max_block_bytes), received
    except Malformed as err:
        raise Malformed(f"peer {peer} /blocks: {err}") from None


async def _fetch_transactions(client, peer, max_bytes, timeout_s):
    code, answer = await client.get_json(peer, "/transactions", {"max_bytes": str(max_bytes)}, timeout_s=timeout_s,
                                         max_bytes=max_bytes + ENVELOPE_BYTES + 200_000)
    if 400 <= code < 500:  # it keeps its mempool to itself (or is busy: 429): nothing to take, nothing wrong
        return [], False
    if code != 200:
        raise PeerUnreachable(f"peer {peer} answered /transactions with HTTP {code}")
    try:
        return _answer_list(answer, "transactions"), answer_more(answer)
    except Malformed as err:
        raise Malformed(f"peer {peer} /transactions: {err}") from None


def fetch_headers(client: PeerClient, peer: str, locator: list, limit: int = 2000,
                  max_bytes: int = HEADERS_ANSWER_BYTES, timeout_s: float = DATA_TIMEOUT_S):
    """GET /headers after locator, asking the peer to stop at max_bytes: fires with ([Header], more)."""
    return defer.Deferred.fromCoroutine(_fetch_headers(client, peer, locator, limit, max_bytes, timeout_s))


def fetch_blocks(client: PeerClient, peer: str, start: int, limit: int, max_bytes: int,
                 timeout_s: float = DATA_TIMEOUT_S, max_block_bytes: int = LARGEST_ITEM_BYTES):
    """GET /blocks from height start, in canonical bytes where the peer sends them, asking it to stop at
    max_bytes: fires with ([Block], body bytes)."""
    return defer.Deferred.fromCoroutine(_fetch_blocks(client, peer, start, limit, max_bytes, timeout_s,
                                                      max_block_bytes))


def fetch_transactions(client: PeerClient, peer: str, max_bytes: int = TRANSACTIONS_ANSWER_BYTES,
                       timeout_s: float = DATA_TIMEOUT_S):
    """GET /transactions, asking the peer to stop at max_bytes: fires with ([transaction JSON], more)."""
    return defer.Deferred.fromCoroutine(_fetch_transactions(client, peer, max_bytes, timeout_s))
