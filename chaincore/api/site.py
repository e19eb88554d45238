"""The HTTP request and channel classes of the node's site: every refusal, however early, is JSON.

twisted.web buffers a whole body before any resource runs, so the body limit
has to be enforced while the body arrives (gotLength / handleContentChunk):
a body over it gets 413 before it is parsed.  HTTP that twisted.web's own
parser refuses (a broken request line, bad framing, a line over its limit)
is answered by the channel with a JSON error too, where twisted.web would
send a bare 400 or close without a word.
"""

import json
import time
from io import BytesIO

from twisted.web import http, server

DEFAULT_MAX_BODY_BYTES = 4_000_000
# A transaction the mempool could take is at most 101 kB (its ancestor-size limit), some 240 kB as JSON:
# a bigger body is refused from its Content-Length, before a byte of it is read.
PATH_MAX_BODY_BYTES = {b"/add_transaction": 400_000}


class LimitedRequest(server.Request):
    maxBody = DEFAULT_MAX_BODY_BYTES
    path_limits = PATH_MAX_BODY_BYTES  # path -> a smaller limit for that endpoint's bodies
    _rejected = False
    _bodyBytes = 0
    on_finish = None  # callable(request, seconds) set by the site, for latency metrics

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.started_at = time.monotonic()

    def _limit(self) -> int:
        """The body limit of this request's path (the request line is parsed before the body's length)."""
        path = getattr(self.channel, "_path", None) or b""
        return min(self.maxBody, self.path_limits.get(path.split(b"?", 1)[0], self.maxBody))

    def gotLength(self, length):
        self.maxBody = self._limit()
        if length is not None and length > self.maxBody:
            self._reject()
        # bodies are capped, so they stay in memory (twisted.web spools those over 100 kB to a temporary file)
        self.content = BytesIO()

    def handleContentChunk(self, data):
        if self._rejected:
            return
        self._bodyBytes += len(data)
        if self._bodyBytes > self.maxBody:
            self._reject()
            return
        super().handleContentChunk(data)

    def process(self):
        if not self._rejected:
            super().process()

    def finish(self):
        result = super().finish()
        if self.on_finish is not None:
            self.on_finish(self, time.monotonic() - self.started_at)
        return result

    def _reject(self):
        self._rejected = True
        self.requestHeaders.removeHeader(b"expect")  # gotLength runs before the 100-continue check
        self.channel.transport.write(error_answer(413, "Payload Too Large",
                                                  f"request body over {self.maxBody} bytes", "too-large"))
        self.channel.loseConnection()


def error_answer(status: int, reason: str, message: str, code: str, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with a JSON error body (message and code, as the routes' errors), for a
    connection that is closed after it."""
    body = json.dumps({"error": message, "code": code}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", "Connection: close",
            f"Content-Length: {len(body)}"]
    if retry_after_s is not None:
        head.append(f"Retry-After: {retry_after_s}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class NodeChannel(http.HTTPChannel):
    """twisted.web's channel, whose refusals of malformed HTTP are JSON answers.

    Both hooks are twisted.web's own (tests/api/test_http_edges.py holds them
    to it): `_respondToBadRequestAndDisconnect` for everything its parser
    refuses, `lineLengthExceeded` for a line over MAX_LENGTH (16 kB), which
    LineReceiver otherwise answers by closing the connection.
    """

    def _respondToBadRequestAndDisconnect(self):
        self.transport.write(error_answer(400, "Bad Request", "malformed HTTP request", "malformed"))
        self.loseConnection()

    def lineLengthExceeded(self, line):
        if getattr(self, "_HTTPChannel__first_line", 0):  # still waiting for a request line
            answer = error_answer(414, "URI Too Long", f"request line over {self.MAX_LENGTH} bytes", "too-large")
        else:
            answer = error_answer(431, "Request Header Fields Too Large",
                                  f"header line over {self.MAX_LENGTH} bytes", "too-large")
        self.transport.write(answer)
        self.loseConnection()


def _node_channel(factory):
    # HTTPFactory calls its `protocol` as a method; Site's default wraps a plain HTTPChannel the same way
    return http._GenericHTTPChannelProtocol(NodeChannel())


def make_site(resource, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, timeout_s: float = 30, on_finish=None):
    """A Site whose requests refuse bodies over max_body_bytes and report their latency to on_finish."""

    class NodeRequest(LimitedRequest):
        maxBody = max_body_bytes

    NodeRequest.on_finish = staticmethod(on_finish) if on_finish else None
    # The API takes JSON only: no form or multipart parsing of POST bodies, which would read
    # every Content-Type through the email package (a tenth of a transaction's cost) and could
    # parse a multipart body of megabytes before any route sees it.
    site = QuietSite(resource, timeout=timeout_s, parsePOSTFormSubmission=False)
    site.requestFactory = NodeRequest
    site.displayTracebacks = False
    return site


class QuietSite(server.Site):
    """A Site without per-request access lines (metrics count requests) or start/stop chatter,
    which remembers its open connections so that a stopping node can close them."""

    noisy = False
    protocol = _node_channel

    def logPrefix(self):
        return "ChainCore HTTP API"  # what twistd's "... starting on PORT" line names

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open_channels = set()

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.open_channels.add(channel)
            lost = channel.connectionLost

            def connection_lost(reason, _channel=channel, _lost=lost):
                self.open_channels.discard(_channel)
                return _lost(reason)

            channel.connectionLost = connection_lost
        return channel

    def close_connections(self) -> None:
        """Abort every open connection (keep-alive ones included)."""
        for channel in list(self.open_channels):
            # Site.buildProtocol gives a proxy (_GenericHTTPChannelProtocol) whose transport is its
            # inner channel's; older Twisted gave the channel itself
            transport = getattr(channel, "transport", None) or getattr(getattr(channel, "_channel", None),
                                                                      "transport", None)
            if transport is not None:
                transport.abortConnection()

    def log(self, request):
        pass
