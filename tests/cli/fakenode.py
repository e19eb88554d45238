"""A small fake node for CLI tests: a real loopback HTTP server in a thread.

The console scripts are synchronous urllib programs, so they are tested
in-process against real sockets.  A FakeNode answers from a table of canned
JSON or from handler functions, and records every request it saw.  A Raw
answer sends bytes as given (HTML, broken JSON), slowly if asked, to play a
node that misbehaves.
"""

import http.server
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Raw:
    """An answer body sent as is, one byte every pause_s seconds when pause_s is set."""

    body: bytes
    content_type: str = "application/json"
    pause_s: float = 0.0


@dataclass(frozen=True)
class Seen:
    """One request the fake node received."""

    method: str
    path: str
    query: dict
    headers: dict
    body: object


class FakeNode:
    """Answers (method, path) from `answers`: a (status, obj) pair or a callable(Seen) -> (status, obj)."""

    def __init__(self, testcase):
        self.answers = {}
        self.requests = []
        self._lock = threading.RLock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        testcase.addCleanup(self.stop)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def seen(self, method: str, path: str) -> list:
        """The requests received for method and path, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def answer(self, seen: Seen) -> tuple:
        found = self.answers.get((seen.method, seen.path))
        if found is None:
            return 404, {"error": f"no such endpoint or object: {seen.path}"}
        return found(seen) if callable(found) else found

    def _handler_class(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def _serve(self, method):
                parts = urllib.parse.urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                seen = Seen(method, parts.path, dict(urllib.parse.parse_qsl(parts.query)),
                            {k.lower(): v for k, v in self.headers.items()}, body)
                with fake._lock:
                    fake.requests.append(seen)
                    status, obj = fake.answer(seen)
                raw = obj if isinstance(obj, Raw) else Raw(json.dumps(obj).encode())
                self.send_response(status)
                self.send_header("Content-Type", raw.content_type)
                self.send_header("Content-Length", str(len(raw.body)))
                self.end_headers()
                try:
                    if not raw.pause_s:
                        self.wfile.write(raw.body)
                        return
                    for n in range(len(raw.body)):
                        self.wfile.write(raw.body[n:n + 1])
                        self.wfile.flush()
                        time.sleep(raw.pause_s)  # a node trickling its answer, on the fake's own thread
                except OSError:
                    pass  # the client gave up on us, as it should

            def log_message(self, *args):
                pass

        return Handler
