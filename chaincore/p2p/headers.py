"""The header tree: headers peers announced, checked and weighed, without their blocks.

Pure (STYLE 1): no Twisted, no I/O, never reads the clock (`now` comes in).
It rests on the chain state (`chain.entry`, `main_hash`, `tip`): a header's
parent is either a node of the tree or a block the chain state holds.  Each
batch must answer the locator we sent that peer and link header to header;
each header must meet its proof of work and the target its ancestors imply
(main's retarget and time-warp rules included).  What a peer did wrong comes
back as a value (an Invalid with a stable code for peers.PENALTIES), never
as an exception, so the driver decides whom to drop.  The tree is bounded in
bytes per peer and in total; headers whose blocks are stored are pruned.
"""

from dataclasses import dataclass, field

from ..core import rules
from ..core.block import Header
from ..core.chainstate import entry_for, expected_target
from ..core.errors import (
    DuplicateHeaders, Invalid, InvalidAncestor, RepeatedHeaders, UnbackedChainwork, UnconnectedHeaders,
)
from ..core.params import NetworkParams
from ..core.rules import ParentInfo
from ..core.store import HEADER_VALID, INVALID, BlockEntry

# What one tree node costs in memory: the entry, its 120 header bytes, the dict slots.
NODE_BYTES = 600
MAX_BYTES_PER_PEER = 16_000_000   # about 26,000 headers ahead of our blocks per peer
MAX_BYTES = 64_000_000
MAX_HEADERS_PER_BATCH = 2000


@dataclass
class HeadersReport:
    """What one batch did: how many headers were new, the peer's best header, and its misbehaviour if any."""

    added: int = 0
    best: BlockEntry | None = None
    misbehaviour: Invalid | None = None
    full: bool = False  # the peer's or the tree's byte bound stopped the batch: ask again later, no penalty
    more: bool = False  # the batch was full-length: the peer likely has more after it


@dataclass
class _Peer:
    asked: frozenset = frozenset()   # the locator of the outstanding request, or empty
    best: bytes | None = None        # the most-work header it sent us
    sent: set = field(default_factory=set)  # hashes it introduced (counted against its bound)


class HeaderTree:
    """Headers from peers beyond what the chain state holds, with cumulative work; bounded in bytes."""

    def __init__(self, params: NetworkParams, chain, max_bytes_per_peer: int = MAX_BYTES_PER_PEER,
                 max_bytes: int = MAX_BYTES):
        self.params = params
        self._chain = chain
        self._nodes = {}      # hash -> BlockEntry (status HEADER_VALID), in arrival order
        self._owner = {}      # hash -> the peer that introduced it
        self._peers = {}      # url -> _Peer
        self._best = None     # the BlockEntry with most chainwork in the tree (first seen on ties)
        self._served = {}     # peer -> ((its best, generation), hashes of the tree on its branch)
        self._generation = 0  # counts removals, which make _served stale
        self._max_bytes_per_peer, self._max_bytes = max_bytes_per_peer, max_bytes

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def bytes(self) -> int:
        return len(self._nodes) * NODE_BYTES

    def peer_bytes(self, peer: str) -> int:
        state = self._peers.get(peer)
        return 0 if state is None else len(state.sent) * NODE_BYTES

    def entry(self, block_hash: bytes) -> BlockEntry | None:
        """The tree's node for block_hash, or the chain state's entry, or None."""
        node = self._nodes.get(block_hash)
        return node if node is not None else self._chain.entry(block_hash)

    def best(self) -> BlockEntry:
        """The most-work header known: the tree's best if it beats the tip, else the tip."""
        tip = self._chain.tip
        return self._best if self._best is not None and self._best.chainwork > tip.chainwork else tip

    def peer_best(self, peer: str) -> BlockEntry | None:
        state = self._peers.get(peer)
        return None if state is None or state.best is None else self.entry(state.best)

    def path(self, top: BlockEntry) -> list:
        """The entries from the first one whose block we lack up to top, in height order."""
        out, e = [], top
        while e is not None and e.hash in self._nodes:
            out.append(e)
            e = self.entry(e.parent)
        out.reverse()
        return out

    def serves(self, peer: str, block_hash: bytes) -> bool:
        """Whether the peer announced a chain through block_hash (its best header descends from it)."""
        best, target = self.peer_best(peer), self.entry(block_hash)
        if best is None or target is None:
            return False
        if block_hash in self._nodes and best.hash in self._nodes:
            # the planner asks this for every block of its window: walk the peer's branch once per change
            cached = self._served.get(peer)
            if cached is None or cached[0] != (best.hash, self._generation):
                cached = ((best.hash, self._generation), frozenset(e.hash for e in self.path(best)))
                self._served[peer] = cached
            return block_hash in cached[1]
        e = best
        while e is not None and e.height > target.height:
            e = self.entry(e.parent)
        return e is not None and e.hash == block_hash

    # -- asking ----------------------------------------------------------------------------

    def locator(self, peer: str | None = None) -> list:
        """Hashes from the peer's best header (or the best known header's parent), dense near it, ending at genesis.

        Starting from what the peer already told us makes it answer with what
        follows, however deep its fork: the locator is not only the active chain.
        """
        start = self.peer_best(peer) if peer is not None else None
        if start is None:
            start = self.best()
            if peer is not None and start.height > 0:
                # a peer we know nothing of: start one back, so a peer on our best chain answers
                # with its last header at least, and we learn that it can serve that chain
                start = self.entry(start.parent)
        hashes, e, step = [], start, 1
        while e is not None:
            hashes.append(e.hash)
            if e.height == 0:
                break
            if len(hashes) >= 10:
                step *= 2
            e = self._ancestor(e, max(e.height - step, 0))
        return hashes

    def ask(self, peer: str) -> list:
        """The locator to send peer with /headers; its answer must follow one of these hashes."""
        locator = self.locator(peer)
        self._peers.setdefault(peer, _Peer()).asked = frozenset(locator)
        return locator

    # -- receiving ------------------------------------------------------------------------

    def receive(self, peer: str, headers: list, now: int, claimed_chainwork: int | None = None,
                batch_limit: int = MAX_HEADERS_PER_BATCH) -> HeadersReport:
        """Check and keep a peer's answer to ask(); the report names any misbehaviour.

        Headers before a bad one are kept (they were checked).  claimed_chainwork
        is what the peer's /status claimed: once it has nothing more to send,
        its headers must back that claim.
        """
        state = self._peers.setdefault(peer, _Peer())
        asked, state.asked = state.asked, frozenset()
        report = HeadersReport(more=len(headers) >= batch_limit)
        if len(headers) > batch_limit:
            report.misbehaviour = UnconnectedHeaders(f"{len(headers)} headers, more than the {batch_limit} asked")
            return self._finish(peer, report)
        if not asked:
            if headers:
                report.misbehaviour = UnconnectedHeaders("headers nobody asked for")
            return self._finish(peer, report)
        if headers and headers[0].previous_hash not in asked:
            report.misbehaviour = UnconnectedHeaders(
                f"first header {headers[0].hash.hex()} does not follow any hash of the locator we sent")
            return self._finish(peer, report)
        seen, fresh = set(), 0
        for n, header in enumerate(headers):
            block_hash = header.hash
            if block_hash in seen:
                report.misbehaviour = DuplicateHeaders(f"header {block_hash.hex()} twice in one answer")
                return self._finish(peer, report)
            seen.add(block_hash)
            if n and header.previous_hash != headers[n - 1].hash:
                report.misbehaviour = UnconnectedHeaders(f"header {n} does not link to header {n - 1}")
                return self._finish(peer, report)
            known = self.entry(block_hash)
            if known is not None:
                if known.status == INVALID:
                    report.misbehaviour = InvalidAncestor(f"header {block_hash.hex()} is of an invalid block")
                    return self._finish(peer, report)
                if block_hash not in state.sent:
                    fresh += 1  # news from this peer, though another told us first
                self._note_best(state, known)
                continue
            if (self.bytes + NODE_BYTES > self._max_bytes
                    or self.peer_bytes(peer) + NODE_BYTES > self._max_bytes_per_peer):
                report.full = True
                return self._finish(peer, report)
            try:
                node = self._check(header, now)
            except Invalid as err:
                report.misbehaviour = err
                return self._finish(peer, report)
            self._nodes[block_hash] = node
            self._owner[block_hash] = peer
            state.sent.add(block_hash)
            if self._best is None or node.chainwork > self._best.chainwork:
                self._best = node
            self._note_best(state, node)
            report.added += 1
            fresh += 1
        if headers and not fresh:
            report.misbehaviour = RepeatedHeaders(f"{len(headers)} headers the peer had all sent before")
        elif not report.more and claimed_chainwork is not None:
            backed = self.peer_best(peer)
            backed_work = backed.chainwork if backed is not None else 0
            if not headers:  # it has nothing after some hash of our locator: at best, the heaviest
                backed_work = max(backed_work, self._fork_work(asked))
            if backed_work < claimed_chainwork:
                report.misbehaviour = UnbackedChainwork(
                    f"claimed chainwork {claimed_chainwork:x}, its headers show {backed_work:x}")
        return self._finish(peer, report)

    def _finish(self, peer: str, report: HeadersReport) -> HeadersReport:
        report.best = self.peer_best(peer)
        return report

    def _note_best(self, state: _Peer, e: BlockEntry) -> None:
        current = self.entry(state.best) if state.best is not None else None
        if current is None or e.chainwork > current.chainwork:
            state.best = e.hash

    def _fork_work(self, asked) -> int:
        """The work of the best hash of the locator we sent: all an empty answer shows the peer has."""
        works = [e.chainwork for e in map(self.entry, asked) if e is not None]
        return max(works, default=0)

    def _check(self, header: Header, now: int) -> BlockEntry:
        """The tree node for header once it passes sanity and its parent's context rules; else raise."""
        rules.check_header_sanity(header, self.params)
        parent = self.entry(header.previous_hash)
        if parent is None:
            raise UnconnectedHeaders(f"header {header.hash.hex()} follows an unknown block")
        if parent.status == INVALID:
            raise InvalidAncestor(f"header {header.hash.hex()} descends from an invalid block")
        info = ParentInfo(parent.hash, parent.height, parent.median_time_past, self.next_target(parent),
                          parent.timestamp)
        rules.check_header_context(header, info, self.params, now)
        return entry_for(header, parent, self.entry, self.params, HEADER_VALID)

    def next_target(self, parent: BlockEntry) -> int:
        """The target a child of parent must carry, from the tree's or the chain state's ancestors."""
        return expected_target(parent, self._ancestor, self.params)

    def _ancestor(self, e: BlockEntry, height: int) -> BlockEntry:
        while e.height > height:
            if e.hash not in self._nodes and self._chain.is_main(e.hash):
                return self._chain.entry(self._chain.main_hash(height))
            e = self.entry(e.parent)
        return e

    # -- forgetting -----------------------------------------------------------------------

    def prune(self) -> int:
        """Drop nodes whose blocks the chain state now holds; the number dropped."""
        stored = [h for h in self._nodes if self._chain.entry(h) is not None]
        for block_hash in stored:
            self._drop(block_hash)
        if stored:
            self._recompute_best()
        return len(stored)

    def forget_peer(self, peer: str) -> int:
        """Drop a peer (banned or gone) and the headers only it led to; the number dropped."""
        state = self._peers.pop(peer, None)
        self._served.pop(peer, None)
        if state is None:
            return 0
        keep = set()
        for other in self._peers.values():
            e = self._nodes.get(other.best) if other.best is not None else None
            while e is not None and e.hash not in keep:
                keep.add(e.hash)
                e = self._nodes.get(e.parent)
        dropped = [h for h in state.sent if h not in keep]
        for block_hash in dropped:
            self._drop(block_hash)
        for block_hash in state.sent - set(dropped):
            self._owner[block_hash] = None  # kept for another peer; counted against nobody now
        self._recompute_best()
        return len(dropped)

    def _drop(self, block_hash: bytes) -> None:
        self._generation += 1
        del self._nodes[block_hash]
        owner = self._peers.get(self._owner.pop(block_hash, None))
        if owner is not None:
            owner.sent.discard(block_hash)

    def _recompute_best(self) -> None:
        self._best = None
        for node in self._nodes.values():
            if self._best is None or node.chainwork > self._best.chainwork:
                self._best = node

