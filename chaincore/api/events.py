"""Live events for pages and wallets: `GET /events`, a Server-Sent Events stream (CONTRACT 7).

The EventHub numbers each event (`<run>-<n>`: the run changes when the node
restarts, so an id from before a restart is never taken for a recent one),
keeps the last few hundred in a ring for `Last-Event-ID` resume, and writes
each new event to every open stream.  A client whose id has left the ring, or
comes from another run, gets a `gap` event first: it missed something and
should reload what it shows.  Streams end cleanly when the client goes away;
a comment line on a timer keeps proxies from closing idle ones.
"""

import json
import os
import re
from collections import deque

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall

from ..core.errors import Unavailable
from ..logs import logger

log = logger("chaincore.events")

RING_SIZE = 500
HEARTBEAT_S = 15.0
MAX_STREAMS = 200
MAX_BACKLOG_BYTES = 256 * 1024  # queued for a client that stopped reading; past it the stream is cut
_SEQ = re.compile(r"[0-9]{1,20}")  # an event number as ids carry it


class EventHub:
    """Numbered events, a bounded ring of the recent ones, and the open streams they go to."""

    def __init__(self, ring_size: int = RING_SIZE, run: str | None = None, max_streams: int = MAX_STREAMS):
        self.run = run or os.urandom(4).hex()
        self.ring = deque(maxlen=ring_size)  # (seq, kind, data)
        self.seq = 0
        self.max_streams = max_streams
        self.streams = set()

    def event_id(self, seq: int) -> str:
        return f"{self.run}-{seq}"

    def publish(self, kind: str, data: dict) -> str:
        """Record an event and send it to every open stream; returns its id."""
        self.seq += 1
        self.ring.append((self.seq, kind, data))
        if self.streams:  # the frame is built for the streams open now; missed() builds the ring's later
            frame = self.frame(self.seq, kind, data)
            for stream in list(self.streams):
                stream.write(frame)
        return f"{self.run}-{self.seq}"

    def frame(self, seq: int, kind: str, data: dict) -> bytes:
        return (f"id: {self.event_id(seq)}\nevent: {kind}\n"
                f"data: {json.dumps(data, separators=(',', ':'))}\n\n").encode()

    def missed(self, last_id: str | None) -> list:
        """The frames a client that saw last_id has missed: [] when it is up to date, a `gap` frame
        first when the ring no longer holds everything after it."""
        if not last_id:
            return []
        run, _, seq_text = last_id.strip().rpartition("-")
        # ASCII digits only: str.isdigit() also takes digits int() refuses (a superscript two)
        seq = int(seq_text) if _SEQ.fullmatch(seq_text) else -1
        if run != self.run or seq < 0 or seq > self.seq:
            return [self._gap("the node restarted or does not know that event id")] + \
                [self.frame(*e) for e in self.ring]
        oldest = self.ring[0][0] if self.ring else self.seq + 1
        frames = [self.frame(*e) for e in self.ring if e[0] > seq]
        if seq + 1 < oldest:
            frames.insert(0, self._gap(f"{oldest - seq - 1} events are no longer held"))
        return frames

    def _gap(self, reason: str) -> bytes:
        # no id: the client's Last-Event-ID stays at the last real event it saw
        return f"event: gap\ndata: {json.dumps({'reason': reason})}\n\n".encode()

    def heartbeat(self) -> None:
        """A comment line on every open stream, so idle connections are not cut by proxies."""
        for stream in list(self.streams):
            stream.write(b": keep-alive\n\n")

    def open(self, request, last_id: str | None):
        """Start an SSE answer on request: headers, what it missed, then every new event until it goes.

        Returns a Deferred that never fires on its own (Klein keeps the request
        open); the client's disconnect, or close_all, ends it.
        """
        if len(self.streams) >= self.max_streams:
            raise Unavailable(f"too many event streams open ({self.max_streams}); try again later")
        missed = self.missed(last_id)  # before the headers: whatever fails here is still a plain error answer
        stream = _Stream(request)
        request.registerProducer(stream, True)  # told when the client stops reading
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(b"retry: 3000\n\n")
        for frame in missed:
            request.write(frame)
        self.streams.add(stream)

        def gone(_):
            self.streams.discard(stream)
            stream.stop()

        done = defer.Deferred(lambda d: gone(None))
        request.notifyFinish().addBoth(gone)
        stream.done = done
        return done

    def close_all(self) -> None:
        """End every open stream (the node is stopping)."""
        for stream in list(self.streams):
            self.streams.discard(stream)
            if not stream.closed and not stream.done.called:
                stream.stop()
                stream.done.callback(None)

    # -- what the node tells the hub ---------------------------------------------------

    def attach(self, node) -> None:
        """Listen to node: a new tip is a `block`, a branch switch a `reorg`, a mempool entry a `tx`."""
        def on_block(block, source):
            if node.chain.tip.hash == block.hash:
                self.publish("block", {"hash": block.hash.hex(), "height": block.height,
                                       "previous_hash": block.header.previous_hash.hex(),
                                       "timestamp": block.header.timestamp,
                                       "tx_count": len(block.transactions), "size": block.size})

        def on_reorg(disconnected, connected):
            self.publish("reorg", {"old_tip": disconnected[0].hash.hex() if disconnected else None,
                                   "new_tip": node.chain.tip.hash.hex(), "height": node.chain.height,
                                   "off": [b.hash.hex() for b in disconnected],
                                   "on": [b.hash.hex() for b in connected]})

        def on_tx(tx, source):
            entry = node.mempool.entry(tx.tx_id)
            if entry is None:
                return
            self.publish("tx", {"tx_id": tx.tx_id.hex(), "size": entry.size, "fee": entry.fee,
                                "value": tx.output_total})

        node.block_listeners.append(on_block)
        node.reorg_listeners.append(on_reorg)
        node.tx_listeners.append(on_tx)


class _Stream:
    """One open event stream: writes stop once the client is gone.

    It is the request's push producer, so Twisted says when the client stops
    reading (pauseProducing); what is written meanwhile queues in memory, and a
    client that lets more than MAX_BACKLOG_BYTES queue is cut off (it can
    reconnect with Last-Event-ID and get what it missed from the ring).
    """

    def __init__(self, request, max_backlog_bytes: int = MAX_BACKLOG_BYTES):
        self.request = request
        self.closed = False
        self.done = None
        self.paused = False
        self.backlog = 0
        self.max_backlog_bytes = max_backlog_bytes

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if self.paused:
            self.backlog += len(data)
            if self.backlog > self.max_backlog_bytes:
                log.info("event stream cut: its client read nothing while {n} bytes queued", n=self.backlog)
                self.stop()
                transport = getattr(self.request, "transport", None)
                if transport is not None:
                    transport.abortConnection()  # notifyFinish then drops it from the hub
                return
        try:
            self.request.write(data)
        except Exception:  # the transport went away between notifyFinish and now
            self.closed = True

    def stop(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.request.unregisterProducer()
            except Exception:  # already gone with its connection
                pass

    # IPushProducer
    def pauseProducing(self):
        self.paused = True

    def resumeProducing(self):
        self.paused, self.backlog = False, 0

    def stopProducing(self):
        self.stop()


class HeartbeatService(Service):
    """A twistd child service: heartbeats on the open streams while running, and ends them on stop."""

    def __init__(self, hub: EventHub, clock, interval_s: float = HEARTBEAT_S):
        self.hub, self.clock, self.interval_s = hub, clock, interval_s
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self.hub.heartbeat)
        self._loop.clock = self.clock
        self._loop.start(self.interval_s, now=False)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.hub.close_all()
