"""The connection guard in front of the node's Site: caps on connections, deadlines on requests.

`guard(site, clock)` wraps the Site factory (twisted.protocols.policies
style) and is what the endpoint listens with.  It refuses a connection past
the cap of its address or the total with one JSON answer (429 for the
address, 503 for the total, both with Retry-After) and closes it; it gives a
request's headers a deadline from their first byte, and its body a minimum
rate after a grace period, answering 408 JSON and closing when either is
missed.  These are separate from the Site's idle timeout, which still closes
kept-alive connections that send nothing.  The headers' end and the body's
progress come from the Site's own request objects (its requestFactory is
wrapped), so HTTP framing is parsed once, by twisted.web.
"""

from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from .budgets import ConnectionTable, classify_host
from .site import error_answer

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_GRACE_S = 10.0
DEFAULT_BODY_MIN_BYTES_PER_S = 10_000
BODY_CHECK_S = 1.0
LINGER_S = 1.0         # how long a refused or expired connection may take to read its answer
RETRY_AFTER_S = 5

_IDLE, _HEADERS, _BODY, _BUSY = "idle", "headers", "body", "busy"


def host_of(addr) -> str:
    """The client's host as text: the IP of a TCP address, "unix" for a UNIX socket."""
    host = getattr(addr, "host", None)
    return host if isinstance(host, str) else "unix"


class _Refused(Protocol):
    """Answers once, half-closes, and aborts if the client has not closed within LINGER_S."""

    def __init__(self, answer: bytes, clock):
        self._answer, self._clock, self._linger = answer, clock, None

    def connectionMade(self):
        self.transport.write(self._answer)
        half_close = getattr(self.transport, "loseWriteConnection", None)
        (half_close or self.transport.loseConnection)()
        self._linger = self._clock.callLater(LINGER_S, self.transport.abortConnection)

    def dataReceived(self, data):
        pass  # the request is not read: it was answered already

    def connectionLost(self, reason):
        if self._linger is not None and self._linger.active():
            self._linger.cancel()


class GuardedConnection(ProtocolWrapper):
    """One admitted connection: its place in the table, and the deadlines of the request in progress."""

    def __init__(self, factory, wrapped, host: str, client_class: str):
        super().__init__(factory, wrapped)
        self.host, self.client_class = host, client_class
        self.state = _IDLE
        self._timer = None
        self._body_started = 0.0
        self._body_bytes = 0
        self._early = False   # bytes of a next request arrived while this one was being answered
        self._closed = False

    # -- bytes from the client ---------------------------------------------------------

    def dataReceived(self, data):
        if self._closed:
            return
        if self.state == _IDLE and data:
            self._start_headers()
        elif self.state == _BUSY and data:
            self._early = True
        super().dataReceived(data)

    def connectionLost(self, reason):
        self._cancel()
        self._closed = True
        super().connectionLost(reason)

    # -- what the request objects report (see guarded_request) ------------------------------

    def headers_received(self, length):
        if self.state != _HEADERS:
            return
        self._cancel()
        if length == 0:
            self.state = _BUSY
            return
        self.state = _BODY
        self._body_started, self._body_bytes = self.factory.clock.seconds(), 0
        self._timer = self.factory.clock.callLater(self.factory.body_grace_s, self._check_body)

    def body_received(self, nbytes: int):
        self._body_bytes += nbytes

    def request_received(self):
        self._cancel()
        self.state = _BUSY

    def request_finished(self):
        if self.state != _BUSY:
            return
        self.state = _IDLE
        if self._early:  # a pipelined request's bytes already came: its headers are on the clock
            self._early = False
            self._start_headers()

    # -- deadlines -----------------------------------------------------------------------

    def _start_headers(self):
        self.state = _HEADERS
        self._cancel()
        self._timer = self.factory.clock.callLater(self.factory.header_timeout_s, self._expire,
                                                   "header-timeout",
                                                   f"request headers not complete within "
                                                   f"{self.factory.header_timeout_s:g} s")

    def _check_body(self):
        f = self.factory
        elapsed = f.clock.seconds() - self._body_started
        needed = f.body_min_bytes_per_s * (elapsed - f.body_grace_s)
        if self._body_bytes < needed:
            self._expire("body-too-slow", f"request body slower than {f.body_min_bytes_per_s:g} bytes per "
                                          f"second (after {f.body_grace_s:g} s)")
            return
        self._timer = f.clock.callLater(BODY_CHECK_S, self._check_body)

    def _expire(self, reason: str, message: str):
        self._timer = None
        self._closed = True
        self.factory.refused(reason)
        self.transport.write(error_answer(408, "Request Timeout", message, reason))
        self.transport.loseConnection()
        self._timer = self.factory.clock.callLater(LINGER_S, self.transport.abortConnection)

    def _cancel(self):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def guarded_request(base):
    """A subclass of the Site's request class that tells its connection's guard how the request advances."""

    class GuardedRequest(base):
        _guard_connection = False  # not looked up yet; finish() drops the channel, so it is kept

        def _guard(self):
            if self._guard_connection is False:
                transport = getattr(getattr(self, "channel", None), "transport", None)
                self._guard_connection = transport if isinstance(transport, GuardedConnection) else None
            return self._guard_connection

        def gotLength(self, length):
            g = self._guard()
            if g is not None:
                g.headers_received(length)
            super().gotLength(length)

        def handleContentChunk(self, data):
            g = self._guard()
            if g is not None:
                g.body_received(len(data))
            super().handleContentChunk(data)

        def requestReceived(self, command, path, version):
            g = self._guard()
            if g is not None:
                g.request_received()
            super().requestReceived(command, path, version)

        def finish(self):
            g = self._guard()
            result = super().finish()
            if g is not None:
                g.request_finished()
            return result

    GuardedRequest.__name__ = GuardedRequest.__qualname__ = f"Guarded{base.__name__}"
    return GuardedRequest


@implementer(IProtocolNegotiationFactory)
class GuardedFactory(WrappingFactory):
    """Wraps a Site: connection caps per address and in total, header deadlines, a minimum body rate."""

    protocol = GuardedConnection
    noisy = False

    def __init__(self, site, clock, connections: ConnectionTable | None = None, *,
                 header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, body_grace_s: float = DEFAULT_BODY_GRACE_S,
                 body_min_bytes_per_s: float = DEFAULT_BODY_MIN_BYTES_PER_S, classify=classify_host,
                 on_refusal=None):
        super().__init__(site)
        self.clock = clock
        self.connections = connections if connections is not None else ConnectionTable()
        self.header_timeout_s = header_timeout_s
        self.body_grace_s = body_grace_s
        self.body_min_bytes_per_s = body_min_bytes_per_s
        self.classify = classify
        self.on_refusal = on_refusal   # f(reason) for metrics: per-address, total, header-timeout, body-too-slow
        self.refusals = {}
        site.requestFactory = guarded_request(site.requestFactory)

    def logPrefix(self):
        return self.wrappedFactory.logPrefix()  # twistd's "... starting on PORT" names the site

    def acceptableProtocols(self):
        """What TLS offers over ALPN: HTTP/1.1, the protocol the guard reads.  A TLS endpoint asks its factory;
        with none to offer, Twisted's ALPN callback selects nothing and OpenSSL ends the handshake of every
        client that offers ALPN (curl, Python's urllib) with an internal-error alert."""
        return [b"http/1.1"]

    def refused(self, reason: str) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        if self.on_refusal is not None:
            self.on_refusal(reason)

    def buildProtocol(self, addr):
        host = host_of(addr)
        client_class = self.classify(host)
        refusal = self.connections.open(host, client_class)
        if refusal is not None:
            self.refused(refusal.reason)
            if refusal.reason == "per-address":
                answer = error_answer(429, "Too Many Requests",
                                      f"too many connections from {host} (at most {refusal.limit})", "rate-limited",
                                      RETRY_AFTER_S)
            else:
                answer = error_answer(503, "Service Unavailable",
                                      f"the node holds as many connections as it takes ({refusal.limit})",
                                      "unavailable", RETRY_AFTER_S)
            return _Refused(answer, self.clock)
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            self.connections.close(host, client_class)
            return None
        return self.protocol(self, wrapped, host, client_class)

    def close_connections(self) -> None:
        """Abort every admitted connection (kept-alive ones included), as a stopping node must."""
        for p in list(self.protocols):
            p.transport.abortConnection()

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        self.connections.close(p.host, p.client_class)


def guard(site, clock, **options) -> GuardedFactory:
    """The factory to listen with: site behind the connection guard (options as GuardedFactory's)."""
    return GuardedFactory(site, clock, **options)
