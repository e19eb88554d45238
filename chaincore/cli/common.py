"""What the console scripts share: a small synchronous HTTP client for a node,
exact decimal coin amounts, and one-line errors with a non-zero exit.

The scripts are plain synchronous programs (urllib from the standard
library), so they run anywhere Python does and tests can call main(argv)
in-process.  Every failure a user can cause or meet becomes a CliError,
printed as one line by run_main; only our own bugs show a traceback.
"""

import argparse
import decimal
import http.client
import json
import os
import re
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

from chaincore import __version__
from chaincore.core.errors import BadPeerURL
from chaincore.core.params import COIN, MAX_MONEY, describe_amount
from chaincore.core.peer_url import normalise_url

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer stopped by a closed pipe
NODE_ENV = "CHAINCORE_NODE"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
MAX_ERROR_CHARS = 500        # an error line stays readable, whatever text a node or an argument brought
MAX_NODE_MESSAGE_CHARS = 300
_COINS_TEXT = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z")


class CliError(Exception):
    """A failure to report as one line on stderr, with exit_code."""

    exit_code = EXIT_FAILURE


class UsageError(CliError):
    """A bad command line."""

    exit_code = EXIT_USAGE


class NodeUnreachable(CliError):
    """No HTTP answer came from the node."""


class NodeRefused(CliError):
    """The node answered with an error status; the message is the node's own."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (a UsageError) instead of usage text and exit."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def run_main(prog: str, body, argv, stderr=None) -> int:
    """Run body(argv) and turn CliError, --help's SystemExit and Ctrl-C into an exit status."""
    stderr = stderr if stderr is not None else sys.stderr
    try:
        return body(argv)
    except CliError as e:
        stderr.write(f"{prog}: error: {one_line(str(e))}\n")
        return e.exit_code
    except SystemExit as e:  # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else EXIT_FAILURE
    except KeyboardInterrupt:
        stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and point stdout at /dev/null so the
        # interpreter's final flush does not complain about the pipe a second time.
        _silence_stdout()
        return EXIT_CLOSED_PIPE


def _silence_stdout() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def add_version(parser: argparse.ArgumentParser) -> None:
    """--version on parser, printing the program's name and ChainCore's version."""
    parser.add_argument("--version", action="version", version=f"{parser.prog.split()[0]} {__version__}",
                        help="print the version and exit")


def add_node_option(parser: argparse.ArgumentParser, env) -> None:
    """--node URL, defaulting to $CHAINCORE_NODE (required when that is not set)."""
    default = (env or {}).get(NODE_ENV) or None
    parser.add_argument("--node", required=default is None, default=default, metavar="URL",
                        help=f"a node's base URL, e.g. http://localhost:5000 (default: ${NODE_ENV}"
                             + (f", now {default})" if default else ", which is not set)"))


def one_line(text: str, max_chars: int = MAX_ERROR_CHARS) -> str:
    """text with its whitespace runs made single spaces, cut to max_chars (ending "...")."""
    text = " ".join(text.split()) or "unknown error"
    return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


# -- amounts --------------------------------------------------------------------

def parse_coins(text: str, name: str = "amount", allow_zero: bool = False) -> int:
    """Base units for a decimal number of coins such as "10.5", exactly; UsageError otherwise.

    Plain decimal digits only: signs, exponents ("1e-8"), NaN, infinities,
    underscores and commas are refused, and so is any value that is not a
    whole number of base units (more than 8 significant decimal places).
    """
    text = text.strip()
    if not _COINS_TEXT.match(text):
        raise UsageError(f"{name} {text!r} is not a plain decimal number of coins such as 10.5")
    # A context wide enough for every digit given, trapping Inexact: never a silent rounding.
    exact = decimal.Context(prec=len(text) + 16, traps=[decimal.Inexact, decimal.InvalidOperation])
    units = exact.multiply(decimal.Decimal(text), COIN)
    if units != units.to_integral_value():
        raise UsageError(f"{name} {text} has more than 8 decimal places (1 unit is 0.00000001 coin)")
    units = int(units)
    if units == 0 and not allow_zero:
        raise UsageError(f"{name} must be more than zero")
    if units > MAX_MONEY:
        raise UsageError(f"{name} {text} is over the money supply of {describe_amount(MAX_MONEY)}")
    return units


def format_coins(units: int, signed: bool = False) -> str:
    """Base units as exact decimal coins with 8 places, e.g. 1050000000 -> "10.50000000"."""
    sign = "-" if units < 0 else ("+" if signed else "")
    whole, frac = divmod(abs(units), COIN)
    return f"{sign}{whole}.{frac:08d}"


# -- talking to a node ------------------------------------------------------------

def node_url(text: str) -> str:
    """The base URL of a node given as URL or host:port; UsageError for anything else."""
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        return normalise_url(text)  # the same check as the node's peer URLs
    except BadPeerURL as e:
        raise UsageError(f"node URL: {e}") from None


class _Deadline:
    """Shuts the sockets of one request down when its time is up.

    A socket timeout bounds each wait for bytes, not the whole answer: a node
    sending a byte every few seconds would hold the program forever.  Shutting
    the socket from a timer thread wakes any read blocked on it.
    """

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def watch(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedConnections:
    """A urllib handler mixin whose connections hand their socket to a _Deadline once connected."""

    def __init__(self, deadline: _Deadline, **kw):
        super().__init__(**kw)
        self.deadline = deadline

    def do_open(self, http_class, request, **kw):
        deadline = self.deadline

        class Watched(http_class):
            def connect(self):
                super().connect()
                deadline.watch(self.sock)
        return super().do_open(Watched, request, **kw)


class _HTTPHandler(_WatchedConnections, urllib.request.HTTPHandler):
    pass


class _HTTPSHandler(_WatchedConnections, urllib.request.HTTPSHandler):
    pass


class NodeClient:
    """GET and POST JSON to one node; failures raise NodeUnreachable, NodeRefused or CliError.

    timeout_s bounds each wait for the node (connecting, each read);
    total_timeout_s bounds a whole request, answer included.
    """

    def __init__(self, base_url: str, timeout_s: float = 10.0, total_timeout_s: float = 30.0):
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.total_timeout_s = total_timeout_s

    def get(self, path: str, query: dict | None = None, missing_ok: bool = False):
        """The JSON answer to GET path; None for a 404 when missing_ok."""
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        try:
            return self._request(urllib.request.Request(self.base_url + path, method="GET"))[1]
        except NodeRefused as e:
            if missing_ok and e.status == 404:
                return None
            raise

    def post(self, path: str, body: dict, headers: dict | None = None) -> tuple:
        """(status, JSON answer) of POST path with a JSON body; 4xx and 5xx raise NodeRefused."""
        data = json.dumps(body, separators=(",", ":")).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        return self._request(request)

    def _request(self, request) -> tuple:
        request.add_header("Accept", "application/json")
        where = f"{request.get_method()} {request.full_url}"
        with _Deadline(self.total_timeout_s) as deadline:
            opener = urllib.request.build_opener(_HTTPHandler(deadline), _HTTPSHandler(deadline))
            try:
                try:
                    with opener.open(request, timeout=self.timeout_s) as response:
                        status, raw, refused = response.status, response.read(MAX_RESPONSE_BYTES + 1), False
                except urllib.error.HTTPError as e:
                    with e:
                        status, raw, refused = e.code, e.read(MAX_RESPONSE_BYTES + 1), True
                if deadline.expired:  # a read cut short by the deadline may return part of the body
                    raise TimeoutError()
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                if deadline.expired:
                    raise NodeUnreachable(f"the node at {self.base_url} gave no complete answer to "
                                          f"{request.get_method()} {request.selector} within "
                                          f"{self.total_timeout_s:g} s") from None
                if isinstance(e, http.client.BadStatusLine) and not isinstance(e, http.client.RemoteDisconnected):
                    raise NodeUnreachable(f"the node at {self.base_url} does not answer in HTTP "
                                          "(is that the port of a ChainCore node?)") from None
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                raise NodeUnreachable(f"cannot reach the node at {self.base_url}: {_reason(reason)}") from None
        if refused:
            raise NodeRefused(status, self._error_text(status, raw))
        return status, self._json(raw, where)

    def _json(self, raw: bytes, where: str):
        if len(raw) > MAX_RESPONSE_BYTES:
            raise CliError(f"the answer to {where} is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # nesting deeper than the parser goes is not an answer either
            raise CliError(f"the answer to {where} is not JSON") from None

    def _error_text(self, status: int, raw: bytes) -> str:
        try:
            message = json.loads(raw)["error"]
        except (ValueError, KeyError, TypeError, RecursionError):
            message = None
        if not isinstance(message, str):
            message = raw[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
        return f"the node refused ({status}): {one_line(message, MAX_NODE_MESSAGE_CHARS)}"


def _reason(reason) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def positive_int(text: str) -> int:
    """A whole number of at least 1 from a command-line option (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value
