"""Which blocks to ask of whom next: the download planner of a headers-first catch-up.

Pure (STYLE 1): the driver passes the blocks still wanted on the best header
chain (in height order), which peers can serve which block, and `now`; the
planner answers with requests to send and with stalls to act on.  The window
is bounded in bytes, not blocks: from the first missing block, as many blocks
as their estimated sizes fit, counting what is in flight; each peer has its
own byte bound too, so several peers serve one catch-up.  A request's deadline
grows with its bytes and moves on whenever the peer delivers a block; a peer
past its deadline is reported stalled, left out, and its blocks go to others
at the next plan().  Block sizes are learned from blocks received; until then
the worst case of the wire format is assumed (a full 1 MB block is about
2.8 MB as JSON).
"""

from collections import deque
from dataclasses import dataclass

from ..core.errors import StalledDownload, UnexpectedBlock

JSON_BYTES_PER_BYTE = 3          # a full block of 1,000,000 bytes is about 2.8 MB as JSON
WINDOW_BYTES = 64_000_000        # in flight and waiting, from the first missing block on
PEER_BYTES = 16_000_000          # in flight from one peer (the chain state's orphan bound per source)
STALL_TIMEOUT_S = 30.0           # no block from a peer for this long (plus its bytes' time): stalled
MIN_RATE_BYTES_PER_S = 200_000   # a request's deadline allows this slow a transfer
MAX_BLOCKS_PER_REQUEST = 100
SIZE_MEMORY = 32                 # estimates follow the largest of the last this many blocks


@dataclass(frozen=True)
class Wanted:
    """A block on the best header chain that we lack; size_bytes if the header or peer declared it."""

    hash: bytes
    height: int
    size_bytes: int | None = None


@dataclass(frozen=True)
class Request:
    """Ask peer for the blocks of consecutive heights from start_height: /blocks?start=..&limit=len(hashes)."""

    peer: str
    start_height: int
    hashes: tuple
    max_bytes: int     # the answer's byte cap: the sum of the blocks' estimates
    deadline: float


@dataclass(frozen=True)
class Stall:
    """A peer that made no progress before its deadline; its blocks are free for others."""

    peer: str
    hashes: tuple
    error: StalledDownload


@dataclass
class _InFlight:
    peer: str
    bytes: int


class DownloadPlanner:
    """The blocks in flight, from whom, until when; which to ask next; who stalled."""

    def __init__(self, max_block_size: int = 1_000_000, wire_bytes_per_byte: int = JSON_BYTES_PER_BYTE,
                 window_bytes: int = WINDOW_BYTES, peer_bytes: int = PEER_BYTES,
                 stall_timeout_s: float = STALL_TIMEOUT_S, min_rate_bytes_per_s: int = MIN_RATE_BYTES_PER_S,
                 max_blocks_per_request: int = MAX_BLOCKS_PER_REQUEST):
        self.worst_bytes = max_block_size * wire_bytes_per_byte
        self.wire_bytes_per_byte = wire_bytes_per_byte
        self.window_bytes, self.peer_bytes = window_bytes, peer_bytes
        self.stall_timeout_s, self.min_rate = stall_timeout_s, min_rate_bytes_per_s
        self.max_blocks_per_request = max_blocks_per_request
        self._in_flight = {}       # hash -> _InFlight
        self._deadline = {}        # peer -> when it must have delivered its next block
        self._left_out = set()     # peers that stalled or failed: no new requests
        self._sizes = deque(maxlen=SIZE_MEMORY)

    # -- reading -------------------------------------------------------------------------

    def in_flight(self, peer: str | None = None) -> set:
        """Hashes asked for and not yet received (of one peer, or all)."""
        return {h for h, f in self._in_flight.items() if peer is None or f.peer == peer}

    def peer_load(self, peer: str) -> int:
        """Estimated bytes in flight from peer."""
        return sum(f.bytes for f in self._in_flight.values() if f.peer == peer)

    def estimate(self, wanted: Wanted) -> int:
        """Bytes the block will take on the wire: declared, else twice the largest lately seen, at most the worst."""
        if wanted.size_bytes is not None:
            return min(wanted.size_bytes * self.wire_bytes_per_byte, self.worst_bytes)
        if not self._sizes:
            return self.worst_bytes
        return min(2 * max(self._sizes), self.worst_bytes)

    # -- planning -------------------------------------------------------------------------

    def plan(self, wanted: list, peers, serves, now: float) -> list:
        """Requests to send now for the blocks of the byte window that nobody is fetching.

        wanted: [Wanted] in height order, the blocks we lack on the best header chain.
        peers: the peers we may ask; serves(peer, hash): whether the peer announced that block.
        """
        peers = [p for p in peers if p not in self._left_out]
        load = {p: self.peer_load(p) for p in peers}
        window, assigned = 0, {}   # peer -> [(Wanted, bytes)] in height order
        for n, block in enumerate(wanted):
            flight = self._in_flight.get(block.hash)
            size = flight.bytes if flight is not None else self.estimate(block)
            if n and window + size > self.window_bytes:
                break
            window += size
            if flight is not None:
                continue
            # an idle peer takes one block whatever its size, so no bound can wedge the catch-up
            able = [p for p in peers if (not load[p] or load[p] + size <= self.peer_bytes) and serves(p, block.hash)]
            if not able:
                continue
            # keep a run going on the peer that has the block below, so one request covers it
            previous = wanted[n - 1].hash if n else None
            running = [p for p in able if assigned.get(p) and assigned[p][-1][0].hash == previous]
            peer = running[0] if running else min(able, key=lambda p: (load[p], peers.index(p)))
            load[peer] += size
            assigned.setdefault(peer, []).append((block, size))
        requests = []
        for peer, blocks in assigned.items():
            for run in _runs(blocks, self.max_blocks_per_request):
                total = sum(size for _, size in run)
                for block, size in run:
                    self._in_flight[block.hash] = _InFlight(peer, size)
                if peer not in self._deadline:
                    self._deadline[peer] = now + self._allowance(total)
                requests.append(Request(peer, run[0][0].height, tuple(b.hash for b, _ in run), total,
                                        self._deadline[peer]))
        return requests

    def _allowance(self, nbytes: int) -> float:
        return self.stall_timeout_s + nbytes / self.min_rate

    # -- what came back ---------------------------------------------------------------------

    def received(self, peer: str, block_hash: bytes, size_bytes: int, now: float):
        """Note a block peer delivered (size_bytes as received); UnexpectedBlock if we did not ask it for that."""
        flight = self._in_flight.get(block_hash)
        if flight is None or flight.peer != peer:
            return UnexpectedBlock(f"block {block_hash.hex()} is not one we asked {peer} for")
        del self._in_flight[block_hash]
        self._sizes.append(size_bytes)
        remaining = self.peer_load(peer)
        if remaining:
            self._deadline[peer] = now + self._allowance(remaining)  # progress moves the deadline on
        else:
            self._deadline.pop(peer, None)
        return None

    def answered(self, request: Request) -> tuple:
        """The peer finished answering request: blocks of it still in flight (a short answer) are freed."""
        freed = tuple(h for h in request.hashes
                      if h in self._in_flight and self._in_flight[h].peer == request.peer)
        for block_hash in freed:
            del self._in_flight[block_hash]
        if not self.peer_load(request.peer):
            self._deadline.pop(request.peer, None)
        return freed

    def too_large(self, request: Request) -> None:
        """The answer passed its byte cap: forget the learned sizes (assume the worst again) and free its blocks."""
        self._sizes.clear()
        self.answered(request)

    def failed(self, peer: str) -> tuple:
        """The peer did not answer (unreachable, not its fault): leave it out and free its blocks."""
        return self._release(peer)

    def stalls(self, now: float) -> list:
        """Peers past their deadline: each is left out and its blocks freed for the next plan()."""
        out = []
        for peer, deadline in sorted(self._deadline.items()):
            if now >= deadline:
                hashes = self._release(peer)
                out.append(Stall(peer, hashes, StalledDownload(
                    f"{peer} delivered none of {len(hashes)} blocks in {self.stall_timeout_s:.0f} s and more")))
        return out

    def allow(self, peer: str) -> None:
        """Let a peer that was left out be asked again (it answered well since)."""
        self._left_out.discard(peer)

    def _release(self, peer: str) -> tuple:
        hashes = tuple(sorted(self.in_flight(peer)))
        for block_hash in hashes:
            del self._in_flight[block_hash]
        self._deadline.pop(peer, None)
        self._left_out.add(peer)
        return hashes


def _runs(blocks: list, limit: int):
    """Split [(Wanted, bytes)] into runs of consecutive heights, each at most limit long."""
    run = []
    for item in blocks:
        if run and (item[0].height != run[-1][0].height + 1 or len(run) >= limit):
            yield run
            run = []
        run.append(item)
    if run:
        yield run
