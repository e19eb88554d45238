"""Reading a node's `/events` stream from the console scripts, and `send --wait N` built on it.

A small synchronous Server-Sent Events reader (http.client, no threads): it
yields one event at a time, remembers the last id, and reconnects with
Last-Event-ID when the connection drops.  Waiting for confirmations asks
/tx once per new tip or reorganisation instead of polling; a node without
/events is polled every few seconds instead.
"""

import http.client
import json
import socket
import threading
import time
import urllib.parse

from .common import CliError

POLL_S = 2.0
READ_TIMEOUT_S = 30.0  # the node sends a comment every 15 s, so silence this long means a dead stream
WATCHDOG_GRACE_S = 1.0  # past a read's deadline before its socket is shut down under it


class EventStream:
    """Events from one node's /events, read synchronously: `next(timeout_s)` -> (kind, data) or None."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.last_id = None
        self._conn = None
        self._sock = None
        self._response = None

    def open(self) -> bool:
        """Connect (again); False if the node has no event stream or cannot be reached."""
        self.close()
        parts = urllib.parse.urlsplit(self.base_url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._conn = cls(parts.hostname, parts.port, timeout=READ_TIMEOUT_S)
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        try:
            self._conn.request("GET", (parts.path or "") + "/events", headers=headers)
            self._sock = self._conn.sock  # http.client lets go of it when the answer has no length
            response = self._conn.getresponse()
        except (OSError, http.client.HTTPException):
            self.close()
            return False
        if response.status != 200 or not response.getheader("Content-Type", "").startswith("text/event-stream"):
            response.close()
            self.close()
            return False
        self._response = response
        return True

    def next(self, timeout_s: float):
        """The next event as (kind, data), or None when timeout_s passed or the stream broke."""
        if self._response is None and not self.open():
            return None
        # The socket timeout bounds each wait for bytes; a node trickling bytes that never end
        # a line would pass it for ever, so a timer shuts the socket down soon after the deadline.
        watchdog = threading.Timer(timeout_s + WATCHDOG_GRACE_S, _shut, (self._sock,))
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._next(time.monotonic() + timeout_s)
        finally:
            watchdog.cancel()

    def _next(self, deadline: float):
        kind, data, event_id = None, [], None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                self._sock.settimeout(min(left, READ_TIMEOUT_S))
                raw = self._response.readline()
            except (socket.timeout, TimeoutError):
                if time.monotonic() >= deadline:
                    return None
                self.close()  # no heartbeat for too long: the stream is dead
                return None
            except (OSError, http.client.HTTPException, AttributeError):
                self.close()
                return None
            if not raw:
                self.close()
                return None
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                if kind is not None:
                    if event_id is not None:
                        self.last_id = event_id
                    try:
                        return kind, json.loads("\n".join(data)) if data else {}
                    except (ValueError, RecursionError):
                        return kind, {}
                kind, data, event_id = None, [], None
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._sock, self._response = None, None, None


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def wait_for_confirmations(node, tx_id: str, wanted: int, timeout_s: float, progress=None,
                           clock=time.monotonic, sleep=time.sleep) -> int:
    """Block until tx_id has `wanted` confirmations on node; returns the count, or CliError on timeout."""
    deadline = clock() + timeout_s
    stream = EventStream(node.base_url)
    streaming = stream.open()  # before the first look, so no block slips between the two
    last = None
    try:
        while True:
            found = node.get(f"/tx/{tx_id}", missing_ok=True)
            if found is None:
                raise CliError(f"the node no longer knows transaction {tx_id} (dropped from its mempool?)")
            try:
                count = int(found.get("confirmations", 0))
            except (TypeError, ValueError, AttributeError):
                raise CliError(f"the node's /tx/{tx_id} answer is malformed") from None
            if count != last and progress is not None:
                progress(f"{tx_id[:16]}: {count} of {wanted} confirmation{'s' if wanted != 1 else ''}")
            last = count
            if count >= wanted:
                return count
            left = deadline - clock()
            if left <= 0:
                raise CliError(f"gave up waiting after {timeout_s:g} s: transaction {tx_id} has {count} of "
                               f"{wanted} confirmations")
            if streaming:
                while clock() < deadline:
                    event = stream.next(deadline - clock())
                    if event is None:
                        streaming = stream.open()
                        if not streaming:
                            break
                        continue
                    if event[0] in ("block", "reorg", "gap"):
                        break
            else:
                sleep(min(POLL_S, max(0.0, left)))
    finally:
        stream.close()
