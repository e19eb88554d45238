"""The one map from ChainCore's errors to HTTP answers, and JSON error bodies.

Read STATUS_FOR top to bottom: the first class that matches wins.  Refusals
(the caller's fault) answer 4xx with their message; faults of the node answer
5xx with their class's `public` text, never the message (it may name a local
path) and never a traceback, plus `Retry-After` where waiting helps.  Anything
that is not a ChainCoreError is a bug: 500 `{"error": "internal error"}`.
"""

import json
import math

from ..core.errors import (ChainCoreError, Fault, Forbidden, Invalid, NotFound, PeerUnreachable, RateLimited,
                           Refused, StoreError, TooLarge, Unavailable)

STATUS_FOR = [
    (NotFound, 404),
    (Forbidden, 403),
    (TooLarge, 413),
    (RateLimited, 429),
    (Invalid, 400),
    (Refused, 400),
    (StoreError, 503),
    (Unavailable, 503),
    (PeerUnreachable, 502),
    (Fault, 500),
]

INTERNAL = "internal error"


def status_for(error: BaseException) -> int:
    """The HTTP status answering error: the first match in STATUS_FOR, else 500."""
    for cls, status in STATUS_FOR:
        if isinstance(error, cls):
            return status
    return 500


def public_message(error: BaseException) -> str:
    """What a client may read about error: a refusal's message, a fault's public text, else "internal error"."""
    if isinstance(error, Refused):
        return str(error)
    if isinstance(error, Fault):
        return str(error) if error.shows_message else error.public
    return INTERNAL


def error_code(error: BaseException) -> str:
    return error.code if isinstance(error, ChainCoreError) else "internal"


def render_error(request, error: BaseException) -> bytes:
    """The JSON answer to error (status, body, Retry-After) from the maps above."""
    retry_after_s = getattr(error, "retry_after_s", None) if isinstance(error, (Fault, RateLimited)) else None
    if retry_after_s is not None:
        request.setHeader(b"Retry-After", str(max(1, math.ceil(retry_after_s))).encode())
    return json_error(request, status_for(error), public_message(error), error_code(error))


# reason phrases twisted.web does not know (it would send "Unknown Status")
REASONS = {429: b"Too Many Requests"}


def json_body(request, status: int, obj) -> bytes:
    request.setResponseCode(status, REASONS.get(status))
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(obj, separators=(",", ":")).encode()


def json_error(request, status: int, message: str, code: str | None = None) -> bytes:
    body = {"error": message}
    if code:
        body["code"] = code
    return json_body(request, status, body)
