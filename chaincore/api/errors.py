"""The one map from ChainCore's errors to HTTP statuses, and JSON error bodies.

Read top to bottom: the first class that matches wins.  Anything not a
ChainCoreError is our own fault: a 500 whose body says only "internal error"
(the traceback goes to the log).
"""

import json

from ..core.errors import ChainCoreError, Forbidden, Invalid, NotFound, TooLarge, Unavailable

STATUS_FOR = [
    (NotFound, 404),
    (Forbidden, 403),
    (TooLarge, 413),
    (Unavailable, 503),
    (Invalid, 400),
    (ChainCoreError, 400),
]


def status_for(error: BaseException) -> int:
    for cls, status in STATUS_FOR:
        if isinstance(error, cls):
            return status
    return 500


def json_body(request, status: int, obj) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(obj, separators=(",", ":")).encode()


def json_error(request, status: int, message: str, code: str | None = None) -> bytes:
    body = {"error": message}
    if code:
        body["code"] = code
    return json_body(request, status, body)
