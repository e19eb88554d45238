"""Synchronisation: agreeing with peers on the most-work chain, and exchanging mempools.

A round asks each active peer for its /status (one small request); every peer
whose chainwork claim beats our tip joins one catch-up.  The claim is only a
hint: the catch-up is headers first.  Each peer's headers are fetched from its
fork point and checked by the HeaderTree (linking, proof of work, targets,
time); blocks are fetched only for a header chain with more work than our tip,
from every peer that announced them, in a window bounded in bytes (the
DownloadPlanner), and handed to the node in height order as requested blocks,
so a fork of any depth reorganises.  A peer that lies (bad headers, a claim its
headers do not back, blocks that are not the ones asked for, invalid blocks)
or stalls is penalised and dropped from the catch-up, and the others carry on
at once.  Only one catch-up runs; peers found meanwhile join it.
"""

import gc

from twisted.internet import defer
from ..logs import logger

from ..core import jsonview
from ..core.errors import Fault, Invalid, Malformed, PeerBusy, PeerUnreachable, Refused, RepeatedHeaders
from ..core.rules import block_fault
from .client import fetch_blocks, fetch_headers, fetch_transactions
from .download import STALL_TIMEOUT_S, DownloadPlanner, Wanted
from .headers import HeaderTree
from .peers import PollSchedule

log = logger("chaincore.p2p.sync")

HEADERS_PER_REQUEST = 2000
PROGRESS_EVERY_S = 5.0
STALL_CHECK_S = 1.0              # how often a catch-up looks for peers past their deadline
WINDOW_BYTES = 12_000_000        # blocks in flight and waiting for the blocks below them, as bytes received
                                 # (binary: about a fifth of what they take once decoded)
PEER_BYTES = 8_000_000           # in flight from one peer
RUN_BYTES = 2_000_000            # blocks handed to the node at once: their signature batches are built together
AHEAD_BYTES = 4_000_000          # waiting blocks after the run being connected whose signatures go out meanwhile
MAX_TXS_PER_EXCHANGE = 5000
BUSY_ANSWERS_KEPT = 10           # a peer answering busy (429/503) more often in one catch-up is dropped from it
CATCH_UP_GC_THRESHOLD = (50_000, 20, 100)  # gc.set_threshold while catching up (Python's default: 700, 10, 10)


_gc_saved = []  # the thresholds before the first of the catch-ups running in this process


def _catch_up_gc(step: int) -> None:
    """Raise the cyclic collector's thresholds while any catch-up runs (step +1 at its start, -1 at its end).

    A catch-up allocates millions of objects that live on (blocks waiting, the
    coins cache), and each burst of allocations made the collector walk them
    all again: 20-25 us of the reactor's time a transaction, a third of it.
    Its garbage is freed by reference counts; the rare cycles wait a little.
    """
    if step > 0:
        _gc_saved.append(gc.get_threshold())
        gc.set_threshold(*CATCH_UP_GC_THRESHOLD)
    elif _gc_saved:
        first = _gc_saved[0]
        _gc_saved.pop()
        if not _gc_saved:
            gc.set_threshold(*first)


def claimed_work(peer_status: dict) -> int | None:
    """The chainwork a peer's /status claims, or None if it names none we can read."""
    try:
        return int(peer_status.get("chainwork", "0"), 16)
    except (TypeError, ValueError, AttributeError):
        return None


def plan_catch_up(our_chainwork: int, peer_status: dict) -> bool:
    """Whether a peer's /status claims a chain with more work than ours (a hint: its headers must show it)."""
    work = claimed_work(peer_status)
    return work is not None and work > our_chainwork


class _CatchUp:
    """One catch-up: its peers and their claims, requests in flight, blocks waiting for those below them."""

    def __init__(self, planner: DownloadPlanner, started_at: float, start_height: int):
        self.planner = planner
        self.started_at, self.start_height = started_at, start_height
        self.peers = {}          # url -> the chainwork its /status claimed, or None
        self.header_tasks = {}   # url -> the Deferred of its headers loop
        self.full = set()        # peers whose headers stopped at the tree's byte bound: asked again later
        self.requests = {}       # download.Request -> its Deferred
        self.buffer = {}         # hash -> (Block, peer, wire bytes): received, waiting for the blocks below it
        self.buffer_bytes = 0
        self.handed = set()      # hashes of the run the node is taking in: neither asked for again nor buffered
        self.ahead = set()       # hashes of waiting blocks whose signatures were sent to the workers ahead
        self.delivering = False
        self.wake = None         # the Deferred the catch-up's loop waits on
        self.woken = False       # something happened while the loop was not waiting: it looks again at once
        self.received = {}       # peer -> blocks of it the node took
        self.fault = None        # a fault of our own (the store) that ended the catch-up
        self.waiters = []        # callers that joined a running catch-up
        self.last_report = started_at
        self.lowest = None       # the lowest height taken in (the fork point is below it)
        self.busy = {}           # peer -> (the call that asks it again, headers?): it answered 429/503
        self.busy_answers = {}   # peer -> how many times it answered busy


class Synchronizer:
    """Keeps the node's chain and mempool in step with its active peers."""

    def __init__(self, node, client, discovery, clock, metrics=None, *, window_bytes: int = WINDOW_BYTES,
                 peer_bytes: int = PEER_BYTES, stall_timeout_s: float = STALL_TIMEOUT_S):
        self.node = node
        self.client = client
        self.discovery = discovery
        self.clock = clock
        self.metrics = metrics
        self.tree = HeaderTree(node.params, node.chain)
        # read when a catch-up starts (tests narrow them)
        self.window_bytes, self.peer_bytes, self.stall_timeout_s = window_bytes, peer_bytes, stall_timeout_s
        self._session = None
        self.caught_up_listeners = []  # f(peer, received) after a catch-up that brought blocks
        self.poll = PollSchedule()     # when each outbound peer's tip is polled next
        self._tips = {}                # peer -> the tip_hash it last showed
        self.in_flight = lambda block_hash: False  # whether relay is fetching that block (the wiring sets it)

    # -- rounds ------------------------------------------------------------------------

    @property
    def catching_up(self) -> frozenset:
        """The peers serving the running catch-up (empty when none runs); relay holds back their blocks."""
        return frozenset(self._session.peers) if self._session is not None else frozenset()

    @defer.inlineCallbacks
    def sync_round(self):
        """Ask the outbound peers whose poll is due for /status and catch up with all that claim more work
        than our tip (inbound peers poll us, and announcements bring news between polls).

        Fires with the peer that claimed most, or None when every peer was in step
        (or none answered).
        """
        peers = self.poll.due(self.discovery.outbound_peers(), self.clock.seconds())
        if not peers:
            return None
        answers = yield defer.DeferredList([self.client.status(url, as_outbound=True) for url in peers],
                                           consumeErrors=True)
        ahead = {}
        for url, (ok, status) in zip(peers, answers):
            if ok:
                changed = self._tips.get(url) != status.get("tip_hash")
                self._tips[url] = status.get("tip_hash")
                self.poll.polled(url, self.clock.seconds(), changed)
                self.discovery.polled(url, status)
            if not ok:
                self.discovery.report_failure(url, _reason(status))
            elif plan_catch_up(self.node.chain.tip.chainwork, status):
                if self._relay_fetches(status):
                    self.poll.retry(url)  # relay is fetching its tip already: ask again next round
                else:
                    ahead[url] = claimed_work(status)
        self._count("round")
        if not ahead:
            return None
        first = min(ahead, key=lambda url: (-ahead[url], url))
        yield self.catch_up_with(ahead)
        for url, work in ahead.items():
            if work is not None and work > self.node.chain.tip.chainwork:
                self.poll.retry(url)  # still behind it: ask again next round, whatever the backoff says
        return first

    def _relay_fetches(self, status: dict) -> bool:
        """Whether the tip a peer's /status shows is a block relay is fetching (a catch-up would download it
        a second time, whole)."""
        try:
            return self.in_flight(bytes.fromhex(status.get("tip_hash")))
        except (TypeError, ValueError):
            return False

    def catch_up(self, peer: str, claimed_chainwork: int | None = None):
        """Catch up with one peer (it joins the running catch-up, if any); fires with the blocks taken."""
        return self.catch_up_with({peer: claimed_chainwork})

    def catch_up_with(self, peers: dict):
        """Catch up with peers ({url: claimed chainwork or None}); fires with the number of blocks the node took.

        Never fails: what goes wrong with a peer is reported to discovery (a failure
        or a penalty) and the others carry on.
        """
        session = self._session
        if session is not None:
            for url, work in peers.items():
                self._join(session, url, work)
            waiter = defer.Deferred()
            session.waiters.append(waiter)
            return waiter
        planner = DownloadPlanner(max_block_size=self.node.params.max_block_size, window_bytes=self.window_bytes,
                                  peer_bytes=self.peer_bytes, stall_timeout_s=self.stall_timeout_s)
        session = self._session = _CatchUp(planner, self.clock.seconds(), self.node.chain.height)
        for url, work in peers.items():
            self._join(session, url, work)
        d = defer.Deferred.fromCoroutine(self._run(session))
        d.addErrback(lambda f: (log.failure("catch-up failed", f), 0)[1])
        return d

    def forget_peer(self, peer: str) -> None:
        """A peer left the active set: drop it from any catch-up and forget the headers only it led to."""
        if self._session is not None and peer in self._session.peers:
            self._drop(self._session, peer)
        else:
            self.tree.forget_peer(peer)

    # -- one catch-up -----------------------------------------------------------------------

    def _join(self, session: _CatchUp, peer: str, claimed: int | None) -> None:
        if peer in session.peers:
            if claimed is not None:
                session.peers[peer] = claimed
            return
        session.peers[peer] = claimed
        session.planner.allow(peer)
        self._fetch_headers(session, peer)

    def _fetch_headers(self, session: _CatchUp, peer: str) -> None:
        d = defer.Deferred.fromCoroutine(self._headers_from(session, peer))
        session.header_tasks[peer] = d
        d.addErrback(lambda f: log.failure("headers from {peer} failed", f, peer=peer))

        def over(_):
            if session.header_tasks.get(peer) is d:
                del session.header_tasks[peer]
            self._wake(session)

        d.addBoth(over)

    async def _headers_from(self, session: _CatchUp, peer: str) -> None:
        """Ask peer for headers from its fork point until it has no more, misbehaves or fills its bound."""
        while peer in session.peers:
            locator = self.tree.ask(peer)
            try:
                headers, more = await fetch_headers(self.client, peer, locator, HEADERS_PER_REQUEST)
            except PeerBusy as err:
                if peer in session.peers:
                    self._busy(session, peer, err, headers=True)
                return
            except PeerUnreachable as err:
                if peer in session.peers:
                    self._failed(session, peer, str(err))
                return
            except Malformed as err:
                if peer in session.peers:
                    self._misbehaved(session, peer, err)
                return
            if peer not in session.peers:
                return
            # an answer the byte cap cut short says so (more): the tree must not take it for all there is
            limit = min(len(headers), HEADERS_PER_REQUEST) if more and headers else HEADERS_PER_REQUEST
            before = self.tree.peer_best(peer)
            report = self.tree.receive(peer, headers, int(self.clock.seconds()), session.peers[peer],
                                       batch_limit=limit)
            after = report.best
            if report.misbehaviour is None and report.more and after is not None and before is not None \
                    and after.hash == before.hash:
                # "more" again and again with nothing beyond what it sent: it would keep us asking forever
                report.misbehaviour = RepeatedHeaders(f"{len(headers)} headers that end where its last answer did")
            if report.misbehaviour is not None:
                self._misbehaved(session, peer, report.misbehaviour)
                return
            if report.full:
                session.full.add(peer)
                return
            self._wake(session)  # blocks of these headers can be fetched while more headers come
            if not report.more:
                return

    async def _run(self, session: _CatchUp) -> int:
        _catch_up_gc(+1)
        try:
            while True:
                self._check_stalls(session)
                planned = self._plan(session) if session.fault is None else 0
                running = session.header_tasks or session.requests or session.delivering or session.busy
                if planned and not running:
                    continue  # answered at once (a fake network, a local peer): plan the next part
                if not running:
                    again = [p for p in session.full if p in session.peers] if session.fault is None else []
                    session.full.clear()
                    if not again:
                        break
                    for peer in again:  # the tree made room as blocks were stored: ask for what follows
                        self._fetch_headers(session, peer)
                    continue
                await self._wait(session)
        finally:
            self._session = None
            for call, _headers in session.busy.values():
                if call.active():
                    call.cancel()
            session.busy.clear()
            for peer in list(session.peers):
                session.planner.failed(peer)
            # the node held the catch-up's connections in memory: to disk now (a failure is the node's to log)
            flush = getattr(self.node, "flush_chain", None)
            if flush is not None:
                flush()
            _catch_up_gc(-1)
            total = self._summarise(session)
        return total

    def _wait(self, session: _CatchUp) -> defer.Deferred:
        if session.woken:
            session.woken = False
            return defer.succeed(None)
        session.wake = defer.Deferred()
        tick = self.clock.callLater(STALL_CHECK_S, self._wake, session)
        session.wake.addBoth(lambda r: (tick.cancel() if tick.active() else None, r)[1])
        return session.wake

    def _wake(self, session: _CatchUp) -> None:
        if session.wake is None:
            session.woken = True
            return
        wake, session.wake = session.wake, None
        wake.callback(None)

    def _plan(self, session: _CatchUp) -> int:
        """Send the /blocks requests the planner gives for the best header chain, if it beats our tip;
        how many were sent."""
        best = self.tree.best()
        if best.chainwork <= self.node.chain.tip.chainwork:
            return 0
        wanted = []
        for e in self.tree.path(best):
            if e.hash in session.handed:
                continue  # with the node until its run is stored (then pruned from the tree)
            if e.hash in session.buffer:
                if session.buffer_bytes >= session.planner.window_bytes:
                    break  # the waiting blocks fill the window: only what lies below them is asked for
                continue
            wanted.append(Wanted(e.hash, e.height))
        if not wanted:
            return 0
        now = self.clock.seconds()
        requests = session.planner.plan(wanted, list(session.peers), self.tree.serves, now)
        for request in requests:
            # the planner's deadline is what counts (a stall, penalised); the client's own comes later
            timeout_s = max(request.deadline - now, 0) + 3 * STALL_CHECK_S
            d = fetch_blocks(self.client, request.peer, request.start_height, len(request.hashes),
                             request.max_bytes, timeout_s, self.node.params.max_block_size)
            session.requests[request] = d
            d.addCallbacks(self._blocks_answered, self._blocks_failed, callbackArgs=(session, request),
                           errbackArgs=(session, request))
            d.addErrback(lambda f: log.failure("handling a /blocks answer failed", f))
        return len(requests)

    def _blocks_failed(self, failure, session: _CatchUp, request) -> None:
        if session.requests.pop(request, None) is None:
            return None  # cancelled: the peer was dropped already
        if failure.check(Malformed):
            self._misbehaved(session, request.peer, failure.value)
        elif failure.check(PeerBusy):
            self._busy(session, request.peer, failure.value)
        elif failure.check(PeerUnreachable):
            self._failed(session, request.peer, str(failure.value))
        else:
            return failure
        self._wake(session)
        return None

    def _blocks_answered(self, answer, session: _CatchUp, request) -> None:
        if session.requests.pop(request, None) is None:
            return  # cancelled: the peer was dropped already
        blocks, wire_bytes = answer
        peer, planner, now = request.peer, session.planner, self.clock.seconds()
        if not blocks:
            # it announced these blocks and now has none of them: its chain moved; no rule broken
            log.info("peer {peer} no longer serves the blocks it announced from height {height}",
                     peer=peer, height=request.start_height)
            self._drop(session, peer)
            self._wake(session)
            return
        raw_total = sum(b.size for b in blocks)
        held = False
        for block in blocks:
            size = max(1, wire_bytes * block.size // raw_total)
            wrong = planner.received(peer, block.hash, size, now)
            if wrong is not None:
                self._misbehaved(session, peer, wrong)
                self._wake(session)
                return
            # a block the node is taking in or has stored (the tree prunes those) is never delivered
            # again: buffered, it would stay there, in memory, until the catch-up ends
            if block.hash not in session.buffer and block.hash not in session.handed:
                if self.node.chain.entry(block.hash) is None:
                    session.buffer[block.hash] = (block, peer, size)
                    session.buffer_bytes += size
                else:
                    held = True
        if held:
            # the chain state took these meanwhile (relay brings blocks while a catch-up runs): off the
            # header tree, or its path would start with them, ask for them again and again, and deliver
            # none of the blocks above them
            self.tree.prune()
        planner.answered(request)  # a short answer (the peer's byte cap) frees the rest for the next plan
        if session.delivering:
            self._preverify_ahead(session)  # the node is busy connecting: the workers start on what follows
        self._deliver(session)
        self._wake(session)

    def _deliver(self, session: _CatchUp) -> None:
        if session.delivering or session.fault is not None:
            return
        session.delivering = True
        d = defer.Deferred.fromCoroutine(self._deliver_runs(session))
        d.addErrback(lambda f: log.failure("handing blocks to the node failed", f))

        def over(_):
            session.delivering = False
            self._wake(session)

        d.addBoth(over)

    async def _deliver_runs(self, session: _CatchUp) -> None:
        """Hand the node every waiting block that follows what it holds, in height order, a run per peer."""
        while session.fault is None:
            run, run_bytes = [], 0
            path = self.tree.path(self.tree.best())
            if path and self.node.chain.entry(path[0].hash) is not None:
                self.tree.prune()  # the path starts with blocks the chain state took by another way
                path = self.tree.path(self.tree.best())
            for e in path:
                item = session.buffer.get(e.hash)
                if item is None or (run and (item[1] != run[0][1] or run_bytes >= RUN_BYTES)):
                    break
                run.append(item)
                run_bytes += item[0].size
            if not run:
                return
            peer = run[0][1]
            for block, _, size in run:
                del session.buffer[block.hash]
                session.buffer_bytes -= size
            blocks = [b for b, _, _ in run]
            session.handed = {b.hash for b in blocks}
            session.ahead -= session.handed
            self._preverify_ahead(session)
            try:
                results, error = await self.node.submit_blocks(blocks, source=peer, requested=True)
            except Fault as err:  # our own trouble (a full disk): no peer is to blame; try again next round
                session.fault = err
                log.warn("catch-up paused: {err}", err=err)
                return
            finally:
                session.handed = set()
            if results:
                session.received[peer] = session.received.get(peer, 0) + len(results)
                low = blocks[0].height
                session.lowest = low if session.lowest is None else min(session.lowest, low)
            self.tree.prune()
            if error is not None:
                charged = block_fault(error)  # a block of the chain it serves: a coin rule is a block's
                if peer in session.peers:
                    self._misbehaved(session, peer, error, charged)
                else:
                    self.discovery.report_misbehaviour(peer, charged)
            self._progress(session)

    def _preverify_ahead(self, session: _CatchUp) -> None:
        """Have the node send the signatures of the waiting blocks that follow the run it is taking in (up
        to AHEAD_BYTES) to its workers now, so they verify while the reactor connects, not after."""
        ahead, ahead_bytes = [], 0
        for e in self.tree.path(self.tree.best()):
            if e.hash in session.handed:
                continue
            item = session.buffer.get(e.hash)
            if item is None or ahead_bytes >= AHEAD_BYTES:
                break
            ahead_bytes += item[0].size
            if e.hash not in session.ahead:
                ahead.append(item[0])
        if ahead:
            session.ahead.update(b.hash for b in ahead)
            self.node.preverify_blocks(ahead)

    def _check_stalls(self, session: _CatchUp) -> None:
        for stall in session.planner.stalls(self.clock.seconds()):
            if stall.peer in session.peers:
                self._misbehaved(session, stall.peer, stall.error)

    # -- what went wrong with a peer ----------------------------------------------------------

    def _misbehaved(self, session: _CatchUp, peer: str, error, charged=None) -> None:
        """peer broke a rule or the protocol: penalise it (by charged, a code, when given) and go on without it."""
        log.warn("peer {peer} dropped from catch-up: {code}: {err}", peer=peer, code=error.code, err=error)
        self._count("stalled" if error.code == "stalled" else "invalid")
        self._drop(session, peer)
        self.discovery.report_misbehaviour(peer, error if charged is None else charged)

    def _busy(self, session: _CatchUp, peer: str, error: PeerBusy, headers: bool = False) -> None:
        """peer answered that it is busy (its request budget for us ran out, or it holds all the connections
        it takes): not a failure. Its blocks go to other peers, and it is asked again after its Retry-After;
        an honest catch-up that outruns a peer's rate limit must not drop that peer again and again."""
        session.busy_answers[peer] = session.busy_answers.get(peer, 0) + 1
        if session.busy_answers[peer] > BUSY_ANSWERS_KEPT:  # busy for good, as far as this catch-up goes
            self._failed(session, peer, f"{error} ({BUSY_ANSWERS_KEPT} times in one catch-up)")
            return
        self._count("busy")
        log.info("peer {peer} is busy: {err}", peer=peer, err=error)
        session.planner.failed(peer)  # frees its blocks for the others and leaves it out until allowed again
        for request, d in list(session.requests.items()):
            if request.peer == peer:
                del session.requests[request]
                d.cancel()
        earlier = session.busy.get(peer)
        if earlier is not None and earlier[0].active():
            earlier[0].cancel()
            headers = headers or earlier[1]
        call = self.clock.callLater(error.wait_s, self._unbusy, session, peer)
        session.busy[peer] = (call, headers)

    def _unbusy(self, session: _CatchUp, peer: str) -> None:
        _call, headers = session.busy.pop(peer, (None, False))
        if peer not in session.peers:
            return
        session.planner.allow(peer)
        if headers and peer not in session.header_tasks:
            self._fetch_headers(session, peer)
        self._wake(session)

    def _failed(self, session: _CatchUp, peer: str, reason: str) -> None:
        """peer gave no usable answer: no penalty, but it leaves the active set and the catch-up goes on."""
        self._count("failed")
        self._drop(session, peer)
        self.discovery.report_failure(peer, reason)

    def _drop(self, session: _CatchUp, peer: str) -> None:
        session.peers.pop(peer, None)
        waiting = session.busy.pop(peer, None)
        if waiting is not None and waiting[0].active():
            waiting[0].cancel()
        session.full.discard(peer)
        session.planner.failed(peer)
        for request, d in list(session.requests.items()):
            if request.peer == peer:
                del session.requests[request]
                d.cancel()
        task = session.header_tasks.pop(peer, None)
        if task is not None:
            task.cancel()
        if self.tree.forget_peer(peer):
            # the best header chain changed: a peer that had nothing after the dropped peer's headers
            # may well have something after ours, so every idle peer is asked again from there
            for other in list(session.peers):
                if other not in session.header_tasks:
                    self._fetch_headers(session, other)

    # -- reports ------------------------------------------------------------------------------

    def _progress(self, session: _CatchUp) -> None:
        now = self.clock.seconds()
        if now - session.last_report < PROGRESS_EVERY_S:
            return
        session.last_report = now
        taken = sum(session.received.values())
        target = max(self.tree.best().height, 1)
        height = self.node.chain.height
        log.info("catching up: height {height} of {target} ({pct:.0f}%), {n} blocks from {p} peer(s), "
                 "{rate:.0f} blocks/s", height=height, target=target, pct=100.0 * height / target, n=taken,
                 p=len(session.received), rate=taken / max(now - session.started_at, 1e-9))

    def _summarise(self, session: _CatchUp) -> int:
        """Log one line that adds up, count the result, tell the listeners and waiters; the blocks taken."""
        total = sum(session.received.values())
        height = self.node.chain.height
        if total:
            elapsed = self.clock.seconds() - session.started_at
            by_peer = ", ".join(f"{n} from {peer}" for peer, n in sorted(session.received.items()))
            fork = ""
            if session.lowest is not None and session.lowest <= session.start_height:
                fork = f", reorganised from height {session.lowest - 1}"
            log.info("catch-up over: height {start} -> {height}, {n} blocks downloaded ({by_peer}) in {s:.1f} s"
                     "{fork}", start=session.start_height, height=height, n=total, by_peer=by_peer, s=elapsed,
                     fork=fork)
        self._count("caught-up" if total else ("fault" if session.fault is not None else "in-sync"))
        if total:
            top = max(session.received, key=session.received.get)
            for listener in list(self.caught_up_listeners):
                listener(top, total)
        for waiter in session.waiters:
            waiter.callback(total)
        return total

    # -- orphans ---------------------------------------------------------------------------

    def on_orphan(self, missing: bytes, source: str | None):
        """A block arrived whose ancestors we lack: catch up with whoever sent it."""
        if source and source in self.discovery.active_peers():
            self.catch_up(source)

    # -- mempool exchange ------------------------------------------------------------------

    @defer.inlineCallbacks
    def exchange_mempool(self, peer: str):
        """Fetch a peer's mempool (as much as one bounded answer holds) and take in what is valid;
        fires with the number accepted."""
        try:
            raw_txs, _more = yield fetch_transactions(self.client, peer)
        except PeerUnreachable as err:
            self.discovery.report_failure(peer, str(err))
            return 0
        except Malformed as err:
            self.discovery.report_misbehaviour(peer, err)
            return 0
        accepted = 0
        for raw in raw_txs[:MAX_TXS_PER_EXCHANGE]:
            try:
                tx = jsonview.parse_tx(raw)
                result = yield self.node.submit_tx(tx, source=peer)
                if result.status == "accepted":
                    accepted += 1
            except Invalid as err:  # malformed, a bad signature, ...: points by the penalty table
                # (conflicts, missing parents and policy are normal between two mempools: no points)
                if self.discovery.report_misbehaviour(peer, err) or isinstance(err, Malformed):
                    return accepted
            except Refused:
                continue
        return accepted

    @defer.inlineCallbacks
    def exchange_all_mempools(self):
        peers = self.discovery.active_peers()
        results = yield defer.DeferredList([self.exchange_mempool(url) for url in peers], consumeErrors=True)
        return sum(r for ok, r in results if ok)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.sync_rounds.labels(result).inc()


def _reason(failure) -> str:
    return str(getattr(failure, "value", failure))
