"""Relay: announce new blocks and transactions to the relay peers; fetch what peers announce and we lack.

A new tip is announced with its header (POST /announce: its 120 bytes).  A
block that starts here (mined, or first submitted by a client) goes to every
peer as its compact form, with the transactions a peer was never told of
prefilled, and names the peers it went to (X-ChainCore-Sent-To), so they do
not announce it to each other; a relayed block's compact form goes to the
peers that asked for it, the header to the rest (docs/protocol.md 12).  Each
node asks the `push_from` peers that last delivered a block to it first to
push it compact forms (POST /send_compact: BIP 152's high-bandwidth mode,
chosen by the receiver: one trip when its mempool holds the transactions).  A peer that lacks
the block fetches the compact form (GET /compact/<hash>), rebuilds it from
its mempool, asks only for the transactions it lacks (POST /block_txs), and
falls back to the whole block (GET /block/<hash>) on a short-id collision or
a root that does not fit; the block then goes through Node.submit_block like
any other.  A fetch that gets no good answer, or none within FETCH_DEADLINE_S, is
tried with another peer that announced the block meanwhile.  Transactions are announced by
id in small batches (POST /announce_txs) and fetched by id (POST /txs), the ids as 32-byte
strings concatenated; an id the answer lacks is asked of the next peer that announced it.
Peers are strangers: fetches, ids asked, answers read and every per-peer record are bounded,
so a peer that floods announcements, under any number of claimed URLs, costs a bounded amount.
A peer that answers 404 to an announcement predates it and gets whole items as JSON (/submit_block,
/add_transaction), which every version takes; one that refuses a binary
announcement (415, or a 400 about its Content-Type) is announced to in JSON
from then on.  Compact forms,
missing transactions and whole blocks are asked for as canonical bytes, and a
JSON answer (a JSON-only peer) is read as well.  Each peer's known items are
remembered in a bounded set, so nothing is announced back to a peer that has it.
"""

from collections import OrderedDict

from twisted.internet import defer
from ..logs import logger

from ..core import jsonview, wire
from ..core.compact import (SENT_TO_HEADER, compact_to_bytes, compact_to_json, fill, max_block_txs,
                            max_compact_bytes, parse_compact, parse_compact_bytes, peer_tag, reconstruct,
                            sent_to_value)
from ..core.errors import Invalid, Malformed, PeerUnreachable, Refused
from ..core.rules import COIN_RULES, block_fault, check_header_context
from .client import BinaryAnswer

log = logger("chaincore.p2p.relay")

KNOWN_PER_PEER = 5000
MAX_KNOWN_PEERS = 64          # peers whose known items are kept (the relay peers are at most 8 + 32)
COMPACT_PUSH = 8              # at most this many of the peers that asked get a relayed block's compact form
PUSH_FROM = 2                 # peers asked to push compact forms here: those that last delivered a block first
MAX_PUSH_TO = 128             # peers whose wish for pushed compact forms is kept
MAX_EXCUSED = 1024            # peers remembered as having relayed a block that broke a coin rule
TX_BATCH_S = 0.05             # transactions accepted within this long go out in one announcement
TX_ASKED_S = 10.0             # a transaction asked of one peer is not asked of another this soon (unless the
                              # answer lacked it: then the next peer that announced it is asked at once)
MAX_TX_IN_FLIGHT_PER_PEER = 5000  # ids asked of one peer or waiting to be (one announcement's worth)
MAX_TX_REQUESTS_PER_PEER = 2  # requests for transactions open to one peer at once (the rest wait and batch)
MAX_TX_PEERS = 32             # peers with ids asked or waiting at once (past it, only outbound peers get room)
MAX_ASKED = 50_000            # ids remembered as asked, in all (past it the oldest are forgotten)
MAX_TX_SOURCES = 4            # peers remembered as also announcing a transaction being asked for
MAX_TX_BATCH = 1000
ANSWER_ENVELOPE_BYTES = 4_096  # an answer's keys and counters around its items
REPLY_MAX_BYTES = 64_000      # the most read of the answer to an announcement or a whole item posted (a status)
MAX_OTHER_SOURCES = 8         # peers remembered as also announcing a block being fetched
MAX_FETCHES = 8               # blocks fetched at once from announcers that are not outbound peers (a few of
                              # the client's 32 requests at once: strangers cannot take all of them)
MAX_FETCHES_PER_PEER = 2      # fetches of blocks one peer announced that may run at once
FETCH_DEADLINE_S = 6.0        # a fetch not at its block's check by then: another announcer is asked as well
HEARD_SENT_TO_BLOCKS = 16     # blocks whose Sent-To hint is kept to name on when relaying them
_TRY_ANOTHER = object()       # a fetch failed for want of a good answer: another announcer may serve it


class KnownItems:
    """A bounded record of which peer is known to have which item hash: at most `bound` items a peer, for at
    most `max_peers` peers.  Past that, the peer added to least lately is forgotten, those `keep()` names
    (the relay peers, whom announcements go to) last, so announcements under many claimed URLs neither grow
    the record nor push our peers' out."""

    def __init__(self, bound: int = KNOWN_PER_PEER, max_peers: int = MAX_KNOWN_PEERS, keep=None):
        self._bound = bound
        self._max_peers = max_peers
        self._keep = keep
        self._by_peer = OrderedDict()

    def add(self, peer: str, item: bytes) -> None:
        known = self._by_peer.get(peer)
        if known is None:
            if len(self._by_peer) >= self._max_peers:
                self._make_room()
            known = self._by_peer[peer] = OrderedDict()
        else:
            self._by_peer.move_to_end(peer)
        known[item] = None
        known.move_to_end(item)
        while len(known) > self._bound:
            known.popitem(last=False)

    def has(self, peer: str, item: bytes) -> bool:
        return item in self._by_peer.get(peer, ())

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)

    def _make_room(self) -> None:
        kept = set(self._keep()) if self._keep is not None else ()
        victim = next((p for p in self._by_peer if p not in kept), None)
        self._by_peer.pop(victim if victim is not None else next(iter(self._by_peer)))


class RelayCounts:
    """What relay did, for tests, logs and benchmarks."""

    def __init__(self):
        self.announced = 0        # announcements sent (blocks and transaction batches)
        self.compact_rebuilt = 0  # blocks rebuilt from a compact form (some transactions fetched or not)
        self.txs_fetched = 0      # transactions fetched for a compact block
        self.full_fallbacks = 0   # blocks fetched whole after a compact form did not fit
        self.legacy_sends = 0     # whole items posted to peers without /announce


class _Fetch:
    """A block being fetched: the fetch that owns it (its ticket and peer), whether that one still waits for
    the compact form, the peers that announced the block too (asked next, in order) and those whose fetch of
    it failed or ran past its deadline (never asked for it again: a peer that fails a block cannot keep
    taking its fetch back), the fetches a pushed compact form took over (they stop at their next step), and
    the owner's deadline."""

    def __init__(self, header):
        self.header = header
        self.ticket = None
        self.peer = None
        self.header_only = True
        self.others = []
        self.failed = set()
        self.stopped = set()
        self.deadline = None      # the owner's FETCH_DEADLINE_S call; None once past it or checking
        self.overdue = False      # the owner ran past its deadline with nobody else to ask: the next may

    def add_source(self, peer, first: bool = False) -> None:
        """Remember peer as one to ask if the owner fails (at most MAX_OTHER_SOURCES; first: before the rest)."""
        if peer in self.others or peer in self.failed:
            return
        if first:
            self.others.insert(0, peer)
            del self.others[MAX_OTHER_SOURCES:]
        elif len(self.others) < MAX_OTHER_SOURCES:
            self.others.append(peer)

    def others_to_ask(self):
        """The remembered sources in order, each taken off the list as it is yielded."""
        while self.others:
            peer = self.others.pop(0)
            if peer not in self.failed:
                yield peer


class _Asked:
    """A transaction asked of a peer: when, of whom, whether its answer came (and held it), and the peers that
    announced it meanwhile (asked next if the answer lacks it)."""

    __slots__ = ("when", "peer", "others", "answered", "served")

    def __init__(self, when: float, peer: str):
        self.when, self.peer, self.others = when, peer, None
        self.answered = self.served = False

    def add_source(self, peer: str) -> None:
        if peer == self.peer:
            return
        if self.others is None:
            self.others = []
        if peer not in self.others and len(self.others) < MAX_TX_SOURCES:
            self.others.append(peer)


class _TxRequests:
    """The requests for transactions by id open to one peer, the ids they hold, and the ids waiting for one of
    them to answer (sent together then)."""

    __slots__ = ("open", "asked", "waiting")

    def __init__(self):
        self.open, self.asked, self.waiting = 0, 0, OrderedDict()

    def load(self) -> int:
        return self.asked + len(self.waiting)


class Relay:
    """Announces the node's new blocks and transactions, and fetches what its peers announce."""

    def __init__(self, node, client, discovery, sync=None, clock=None, *, compact_push: int = COMPACT_PUSH,
                 on_heard=None, origin_push_all: bool = True, push_from: int = PUSH_FROM):
        self.node = node
        self.client = client
        self.discovery = discovery
        self.sync = sync
        self.clock = clock if clock is not None else node.clock
        self.compact_push = compact_push
        self.push_from = push_from
        self.push_to = set()              # peers that asked for compact forms of the blocks we relay
        self._first = []                  # peers that last delivered a block first, latest first (push_from)
        self._told = {}                   # peer -> whether we last asked it to push (absent: nothing said)
        self.origin_push_all = origin_push_all  # a block made or first submitted here: every peer gets its form
        self.on_heard = on_heard          # f(url): a peer told us news (sync polls it less)
        self.known = KnownItems(keep=discovery.relay_peers)
        self.counts = RelayCounts()
        self.legacy = set()               # peers that answered 404 to /announce: they get whole items
        self.json_only = set()            # peers that refused a binary announcement: they get JSON ones
        self.fetching = {}                # block hash -> _Fetch: who fetches it, who announced it too
        self._running = {}                # peer -> its fetches not yet over (owning a block or not)
        self._heard_sent_to = OrderedDict()  # block hash -> the tags a relay peer named with it (Sent-To)
        self._excused = {}                # peer -> the height of the last block of it refused by a coin rule
        self._tx_queue = OrderedDict()    # peer -> [tx_id, ...] waiting for the next announcement
        self._tx_call = None
        self._asked = OrderedDict()       # tx_id -> _Asked: when, of whom, who announced it too
        self._tx_peers = {}               # peer -> _TxRequests: its open requests and the ids waiting for them
        self.sent = 0  # the wiring subscribes on_block, on_tx and on_caught_up

    def stop(self) -> None:
        """Cancel the pending transaction announcement and the fetches' deadlines (the node is stopping)."""
        if self._tx_call is not None and self._tx_call.active():
            self._tx_call.cancel()
        for fetch in self.fetching.values():
            if fetch.deadline is not None and fetch.deadline.active():
                fetch.deadline.cancel()

    # -- what the node tells us ------------------------------------------------------------

    def on_block(self, block, source):
        """A block newly stored by the node: announce it if it is the tip (not during a catch-up from source)."""
        if source:
            self.known.add(source, block.hash)
        if self.sync is not None and source is not None and source in self.sync.catching_up:
            return None
        if block.hash != self.node.chain.tip.hash:
            return None  # only the tip is news worth spreading
        return self._announce_block(block, source)

    def on_early_block(self, block, source) -> bool:
        """A new child of the tip that meets every rule but the coins' (Node.early_block_listeners): announce
        it now, before the node checks its transactions (BIP 152), so each hop costs the network's delay and
        not also a full check; on_block then finds its peers told already.  Whether anything was sent."""
        if source:
            self.known.add(source, block.hash)
        if self.sync is not None and source is not None and source in self.sync.catching_up:
            return False
        return self._announce_block(block, source) is not None

    def on_caught_up(self, peer, received):
        """A catch-up from peer connected blocks without relaying them: announce the new tip once."""
        tip = self.node.chain.block(self.node.chain.tip.hash)
        self.known.add(peer, tip.hash)
        return self._announce_block(tip, peer)

    def on_tx(self, tx, source):
        """A transaction newly in the mempool: queue its id for every relay peer not known to have it."""
        if source:
            self.known.add(source, tx.tx_id)
        for peer in self._targets(tx.tx_id, source):
            self.known.add(peer, tx.tx_id)
            self._tx_queue.setdefault(peer, []).append(tx.tx_id)
        if self._tx_queue and (self._tx_call is None or not self._tx_call.active()):
            self._tx_call = self.clock.callLater(TX_BATCH_S, self.flush_txs)
        return None

    # -- sending ---------------------------------------------------------------------------

    def _targets(self, item: bytes, source) -> list:
        """Relay peers but source that are not known to have item: outbound ones first."""
        outbound = self.discovery.outbound_peers()
        peers = outbound + [p for p in self.discovery.relay_peers() if p not in outbound]
        return [p for p in peers if p != source and not self.known.has(p, item)]

    def _announce_block(self, block, source):
        peers = self._targets(block.hash, source)
        if not peers:
            return None
        # a block that starts here (mined, or submitted by a client) is news to every peer: each gets the
        # compact form at once, so the first hop takes one trip.  A relayed block's form goes to the peers
        # that asked for it (we delivered them blocks first lately); the rest, most of which other peers
        # reach first, get the header
        if source is None and self.origin_push_all:
            pushed_to = set(peers)
        else:
            pushed_to = set([p for p in peers if p in self.push_to][:self.compact_push])
        log.debug("announcing block {hash} to {n} peers, the compact form to {k}", hash=block.hash.hex()[:16],
                  n=len(peers), k=len(pushed_to))
        compact = compact_to_bytes(block) if pushed_to else None   # starts with the header
        sends = []
        # the peers the block goes to, as tags, then those the peer we had it from named (relayed): each
        # then leaves them out (they have the block or are about to), so a dense mesh carries about one
        # announcement per block and peer, not one per link
        named = sorted(self._heard_sent_to.get(block.hash, ())) if source is not None else []
        sent_to = {SENT_TO_HEADER: [sent_to_value([peer_tag(p) for p in peers] + named)]} \
            if source is not None or self.origin_push_all else None
        for peer in peers:
            body = block.header.raw
            if peer in pushed_to:
                body = compact
                if source is None and self.origin_push_all:
                    body = self._with_prefill(block, peer, compact)
            self.known.add(peer, block.hash)
            if peer in self.legacy:
                sends.append(self._post_block(peer, block))
                continue
            if peer in self.json_only:
                sends.append(self._announce_json(peer, block, peer in pushed_to))
                continue
            d = self.client.post_binary(peer, "/announce", body, headers=sent_to, max_bytes=REPLY_MAX_BYTES)
            d.addCallback(self._announced, peer, lambda peer=peer: self._post_block(peer, block),
                          lambda peer=peer: self._announce_json(peer, block, peer in pushed_to))
            d.addErrback(self._failed, peer)
            sends.append(d)
        self.sent += len(sends)
        self.counts.announced += len(sends)
        return defer.DeferredList(sends, consumeErrors=True)

    def _with_prefill(self, block, peer, compact: bytes) -> bytes:
        """The compact form for peer with the transactions it is not known to have in full (none announced to
        or by it): a block made here of transactions nobody was told of then takes one trip, not two."""
        lacking = [i for i, tx in enumerate(block.transactions) if i and not self.known.has(peer, tx.tx_id)]
        if not lacking:
            return compact
        form = compact_to_bytes(block, lacking)
        return form if len(form) <= max_compact_bytes(self.node.params.max_block_size) else compact

    def _announce_json(self, peer, block, push: bool):
        """The announcement as JSON, for a peer that does not take bytes at /announce."""
        body = {"block": jsonview.header_to_json(block.header)}
        if push:
            body["compact"] = compact_to_json(block)
            del body["compact"]["header"]  # the announcement carries it once, as "block"
        d = self.client.post_json(peer, "/announce", body, max_bytes=REPLY_MAX_BYTES)
        d.addCallback(self._announced, peer, lambda: self._post_block(peer, block))
        return d.addErrback(self._failed, peer)

    def _post_block(self, peer, block):
        self.counts.legacy_sends += 1
        d = self.client.post_json(peer, "/submit_block", {"block": jsonview.block_to_json(block)},
                                  max_bytes=REPLY_MAX_BYTES)
        return d.addCallbacks(self._answered, self._failed, callbackArgs=(peer, "/submit_block"), errbackArgs=(peer,))

    def flush_txs(self):
        """Announce the queued transaction ids, one request per peer; fires when every peer answered."""
        queue, self._tx_queue = self._tx_queue, OrderedDict()
        sends = []
        for peer, ids in queue.items():
            for start in range(0, len(ids), MAX_TX_BATCH):
                batch = ids[start:start + MAX_TX_BATCH]
                if peer in self.legacy:
                    sends.extend(self._post_txs(peer, batch))
                    continue
                sends.append(self._announce_txs(peer, batch, binary=peer not in self.json_only))
        self.sent += len(sends)
        self.counts.announced += len(sends)
        return defer.DeferredList(sends, consumeErrors=True)

    def _announce_txs(self, peer, batch, binary: bool):
        """Announce batch of ids to peer: 32-byte ids concatenated, or JSON hex to a peer that takes only JSON."""
        if binary:
            d = self.client.post_binary(peer, "/announce_txs", b"".join(batch), max_bytes=REPLY_MAX_BYTES)
        else:
            d = self.client.post_json(peer, "/announce_txs", {"tx_ids": [i.hex() for i in batch]},
                                      max_bytes=REPLY_MAX_BYTES)
        d.addCallback(self._announced, peer, lambda: self._post_txs(peer, batch),
                      (lambda: self._announce_txs(peer, batch, binary=False)) if binary else None)
        return d.addErrback(self._failed, peer)

    def _post_txs(self, peer, tx_ids) -> list:
        sends = []
        for tx_id in tx_ids:
            tx = self.node.mempool.get(tx_id)
            if tx is None:
                continue  # mined or evicted meanwhile
            self.counts.legacy_sends += 1
            d = self.client.post_json(peer, "/add_transaction", {"transaction": jsonview.tx_to_json(tx)},
                                      max_bytes=REPLY_MAX_BYTES)
            sends.append(d.addCallbacks(self._answered, self._failed, callbackArgs=(peer, "/add_transaction"),
                                        errbackArgs=(peer,)))
        return sends

    def push_wished(self, peer: str, want: bool) -> None:
        """peer asked us (POST /send_compact) to push it compact forms of the blocks we relay, or to stop.
        At most MAX_PUSH_TO are kept: past that, those no longer among our relay peers are forgotten first, and
        a wish that still finds no room is not taken (only relay peers are ever pushed to anyway)."""
        if not want:
            self.push_to.discard(peer)
            return
        if peer not in self.push_to and len(self.push_to) >= MAX_PUSH_TO:
            self.push_to &= set(self.discovery.relay_peers())
            if len(self.push_to) >= MAX_PUSH_TO:
                return
        self.push_to.add(peer)

    def delivered_first(self, peer: str) -> None:
        """peer delivered a block before anyone else: it becomes the first of the push_from peers asked to
        push compact forms here (POST /send_compact); one that leaves those is asked to stop."""
        if peer in self._first:
            self._first.remove(peer)
        self._first.insert(0, peer)
        dropped = self._first[self.push_from:]
        del self._first[self.push_from:]
        for other in [peer] + dropped:
            self._tell(other, other in self._first)

    def _tell(self, peer: str, want: bool):
        """Say to peer whether we want its compact forms pushed, unless that is what we last said."""
        if self._told.get(peer, False) == want:
            return None
        self._told[peer] = want

        def unsaid(why):
            if self._told.get(peer) == want:
                del self._told[peer]  # said again at the next block it delivers first
            log.debug("{peer} did not take our compact-push choice: {why}", peer=peer, why=why)

        d = self.client.post_binary(peer, "/send_compact", b"\x01" if want else b"\x00", max_bytes=REPLY_MAX_BYTES)
        d.addCallback(lambda result: unsaid(f"answered {result[0]}") if result[0] >= 300 else None)
        return d.addErrback(lambda failure: unsaid(failure.getErrorMessage()))

    def forget(self, peer: str) -> None:
        """peer is gone: what it asked of us and what we asked of it start again if it comes back."""
        self.known.forget(peer)
        self.legacy.discard(peer)  # it may come back upgraded: it is asked with announcements again
        self.json_only.discard(peer)
        self.push_to.discard(peer)
        self._told.pop(peer, None)
        if peer in self._first:
            self._first.remove(peer)

    def _announced(self, result, peer, legacy_send, json_send=None):
        status, answer = result
        if status in (404, 405):  # a node from before announcements: it takes whole items
            self.legacy.add(peer)
            sends = legacy_send()
            return defer.DeferredList(sends if isinstance(sends, list) else [sends], consumeErrors=True)
        if json_send is not None and _refuses_bytes(status, answer):  # it reads announcements only as JSON
            self.json_only.add(peer)
            return json_send()
        return self._answered(result, peer, "/announce")

    def _answered(self, result, peer, path):
        status, answer = result
        if status >= 500:
            log.debug("{peer} failed on {path}: {answer}", peer=peer, path=path, answer=answer)
        return status

    def _failed(self, failure, peer):
        if failure.check(PeerUnreachable) and getattr(failure.value, "timed_out", False):
            # one lost or late answer (a lossy link, a busy peer) does not make a live peer gone: it stays
            # active and its tip is polled at the next round, and that poll reports it if it really is gone
            log.info("relay to {peer} got no answer in time: {err}; its tip is polled next round", peer=peer,
                     err=failure.value)
            self._poll_soon(peer)
        elif failure.check(PeerUnreachable):  # refused, or nobody there: it is gone until discovery finds it
            self.discovery.report_failure(peer, str(failure.value))
        elif failure.check(Invalid):
            self.discovery.report_misbehaviour(peer, failure.value)
        else:
            log.failure("relay to {peer} failed", failure, peer=peer)
        return None

    # -- what peers announce ---------------------------------------------------------------

    def announced(self, peer: str, header, compact=None, sent_to=()) -> str:
        """peer announced a block: "known" if we hold it or fetch it already, else start fetching it.  sent_to
        are the tags (peer_tag) of the peers it announced the block to as well: we need not announce it there.
        A banned peer's announcement is not acted on."""
        if self._banned(peer):
            return "known"
        self.known.add(peer, header.hash)
        if sent_to:
            self._take_hint(peer, header.hash, sent_to)
        log.debug("announcement of block {hash} from {peer}: {what}", hash=header.hash.hex()[:16], peer=peer,
                  what="header" if compact is None else "compact form")
        self._heard(peer)
        if self.node.chain.has_block(header.hash):
            return "known"
        fetch = self.fetching.get(header.hash)
        if fetch is not None:
            if peer == fetch.peer or peer in fetch.failed:
                return "known"  # a peer that failed us for this block is not asked for it again
            if compact is not None and fetch.header_only and self._may_fetch_from(peer):
                # the owner was sent the header alone and we still wait for its compact form; this peer
                # pushed it: the fetch goes on from it now, and the first one stops when its answer comes
                # (its peer stays a source to ask if this one fails)
                fetch.stopped.add(fetch.ticket)
                fetch.add_source(fetch.peer, first=True)
                self._start_fetch(peer, fetch, compact)
                return "fetching"
            if fetch.overdue and self._may_fetch_from(peer):
                fetch.failed.add(fetch.peer)  # the owner went past its deadline: this one is asked too
                self._start_fetch(peer, fetch, compact)
                return "fetching"
            # a second source, asked only if the first fails (one that never serves what it announces, or
            # serves a form that does not fit, delays the block by one deadline, not until the next poll)
            fetch.add_source(peer)
            return "known"
        if not header.has_valid_pow:
            self.discovery.report_misbehaviour(peer, "bad-pow")
            return "known"
        refusal = self._header_refused(header)
        if refusal is not None:
            # a child of a block we hold must carry the target and time its parent allows: checked before
            # anything is fetched, so a fake header costs the expected work, not the easiest there is
            log.info("block {hash} announced by {peer} refused by its header: {err}",
                     hash=header.hash.hex()[:16], peer=peer, err=refusal)
            self.discovery.report_misbehaviour(peer, refusal)  # none for a clock ahead of ours (TimeTooNew)
            return "known"
        if not self._may_fetch_from(peer) or \
                (len(self.fetching) >= MAX_FETCHES and peer not in self.discovery.outbound_peers()):
            # fetches are bounded per announcer and in all (but for the peers we chose, so strangers cannot
            # crowd them out), so announcements of blocks nobody serves cannot pile them up: this one waits
            # for another announcer, or the peer's next poll
            log.debug("not fetching block {hash} announced by {peer}: {n} fetches under way", peer=peer,
                      hash=header.hash.hex()[:16], n=self._running.get(peer, 0))
            self._poll_soon(peer)
            return "known"
        fetch = self.fetching[header.hash] = _Fetch(header)
        self._start_fetch(peer, fetch, compact)
        return "fetching"

    def _header_refused(self, header):
        """The rule an announced header breaks against its parent, when we hold the parent; else None."""
        chain = self.node.chain
        parent = chain.entry(header.previous_hash)
        if parent is None:
            return None
        try:
            check_header_context(header, chain.parent_info(parent), self.node.params, self.node.now())
        except Invalid as err:
            return err
        return None

    def _take_hint(self, peer, block_hash, sent_to) -> None:
        """A hint that stops us announcing block_hash to the peers it names.  Taken only from a relay peer,
        never from a stranger, who could otherwise name all our peers and keep every block we hear of from
        them; and since any host that answers /status becomes an inbound peer by contacting us, a hint from
        one spares only inbound peers, never the outbound peers we chose, and is not named on: only a peer
        we chose can keep a block from those."""
        outbound = self.discovery.outbound_peers()
        if peer in outbound:
            spared = self.discovery.relay_peers()
            if block_hash not in self._heard_sent_to:  # named on when we relay it (the first hint only)
                self._heard_sent_to[block_hash] = sent_to
                while len(self._heard_sent_to) > HEARD_SENT_TO_BLOCKS:
                    self._heard_sent_to.popitem(last=False)
        else:
            inbound = self.discovery.inbound_peers()
            if peer not in inbound:
                return
            spared = [p for p in inbound if p not in outbound]
        for other in spared:
            if peer_tag(other) in sent_to:
                self.known.add(other, block_hash)

    def _banned(self, peer) -> bool:
        if self.discovery.table.is_banned(peer, self.clock.seconds()):
            log.debug("announcement from banned peer {peer} ignored", peer=peer)
            return True
        return False

    def _may_fetch_from(self, peer) -> bool:
        return self._running.get(peer, 0) < MAX_FETCHES_PER_PEER

    def _start_fetch(self, peer, fetch, compact):
        ticket = object()  # the fetch that owns the block (a later one takes over)
        fetch.ticket, fetch.peer, fetch.header_only, fetch.overdue = ticket, peer, compact is None, False
        self._running[peer] = self._running.get(peer, 0) + 1
        header = fetch.header
        if fetch.deadline is not None and fetch.deadline.active():
            fetch.deadline.cancel()
        fetch.deadline = self.clock.callLater(FETCH_DEADLINE_S, self._overdue, header.hash, ticket)
        d = defer.Deferred.fromCoroutine(self._fetch_block(peer, header, compact, ticket))
        d.addErrback(self._fetch_failed, peer, header.height)
        d.addBoth(self._fetched, header.hash, ticket, peer)

    def _poll_soon(self, peer) -> None:
        """Have peer's tip polled at the next round: only for a peer of the table (sync polls no other, and a
        claimed URL must not leave a poll schedule behind)."""
        if self.sync is not None and self.discovery.table.get(peer) is not None:
            self.sync.poll.retry(peer)

    def _heard(self, peer) -> None:
        """peer told us news: its polls may wait (for a peer of the table only, as _poll_soon)."""
        if self.on_heard is not None and self.discovery.table.get(peer) is not None:
            self.on_heard(peer)

    def _overdue(self, block_hash, ticket):
        """The owner of a fetch has not reached the block's check in FETCH_DEADLINE_S (an announcer answering
        each step just in time, or one whose requests wait behind others): another announcer is asked too,
        and the late one may still finish; with nobody else to ask, the next announcer is asked at once."""
        fetch = self.fetching.get(block_hash)
        if fetch is None or fetch.ticket is not ticket:
            return
        fetch.deadline = None
        late = fetch.peer
        for other in fetch.others_to_ask():
            if self._may_fetch_from(other):
                fetch.failed.add(late)
                log.info("fetching block {hash} from {peer}, which announced it too: {late} is late",
                         hash=block_hash.hex()[:16], peer=other, late=late)
                self._start_fetch(other, fetch, None)
                return
        fetch.overdue = True

    def _stops(self, block_hash, ticket) -> bool:
        """Whether a fetch is to stop at this step: the block came meanwhile, or a pushed form took it over."""
        if self.node.chain.has_block(block_hash):
            return True
        fetch = self.fetching.get(block_hash)
        return fetch is not None and ticket in fetch.stopped

    def in_time(self, block_hash) -> bool:
        """Whether a fetch of block_hash is under way and within its deadline (sync leaves such a block to it)."""
        fetch = self.fetching.get(block_hash)
        return fetch is not None and not fetch.overdue

    def _end_fetch(self, block_hash) -> None:
        fetch = self.fetching.pop(block_hash)
        if fetch.deadline is not None and fetch.deadline.active():
            fetch.deadline.cancel()

    def _fetched(self, result, block_hash, ticket, peer):
        self._running[peer] -= 1
        if not self._running[peer]:
            del self._running[peer]
        fetch = self.fetching.get(block_hash)
        if fetch is None or fetch.ticket is not ticket:
            return None  # taken over by a fetch from another peer, which owns what follows
        if result is _TRY_ANOTHER:
            fetch.failed.add(peer)
            if not self.node.chain.has_block(block_hash):
                for other in fetch.others_to_ask():
                    if self._may_fetch_from(other):
                        log.info("fetching block {hash} from {peer}, which announced it too",
                                 hash=block_hash.hex()[:16], peer=other)
                        self._start_fetch(other, fetch, None)
                        return None
        self._end_fetch(block_hash)
        return None

    async def _fetch_block(self, peer, header, compact, ticket=None):
        """Get the announced block from peer (compact, missing transactions, or whole) and submit it."""
        block_hash = header.hash.hex()
        params = self.node.params
        cap = answer_max_bytes(params.max_block_size)
        if compact is None:
            code, answer = await self.client.get_binary(peer, f"/compact/{block_hash}", max_bytes=cap)
            if code != 200:
                raise PeerUnreachable(f"{peer} answered /compact with {code}")
            if isinstance(answer, BinaryAnswer):
                compact = parse_compact_bytes(answer.data, params.max_block_size)
            else:
                compact = parse_compact(answer, params.max_money, max_block_txs(params.max_block_size))
            if compact.hash != header.hash:
                raise Malformed(f"{peer} answered /compact/{block_hash[:16]} with another block")
            log.debug("compact form of block {hash} fetched from {peer}", hash=block_hash[:16], peer=peer)
            if self._stops(header.hash, ticket):
                return None  # a peer pushed its compact form meanwhile: that fetch goes on, not this one
            fetch = self.fetching.get(header.hash)
            if fetch is not None and fetch.ticket is ticket:
                fetch.header_only = False
        block = None
        rebuilt = reconstruct(compact, self.node.mempool.transactions())
        if not rebuilt.collision:
            delivered = []
            if rebuilt.missing:
                code, answer = await self.client.post_json(
                    peer, "/block_txs", {"block_hash": block_hash, "indexes": list(rebuilt.missing)},
                    max_bytes=cap, binary_answer=True)
                if code != 200:
                    raise PeerUnreachable(f"{peer} answered /block_txs with {code}")
                if self._stops(header.hash, ticket):
                    return None
                delivered = self._txs_of(answer, len(rebuilt.missing))
                self.counts.txs_fetched += len(delivered)
            block = fill(compact, rebuilt.txs, delivered)
        if block is None:
            self.counts.full_fallbacks += 1
            log.debug("compact block {hash} did not fit: fetching it whole from {peer}", hash=block_hash[:16],
                      peer=peer)
            code, answer = await self.client.get_binary(peer, f"/block/{block_hash}", max_bytes=cap)
            if code != 200:
                raise PeerUnreachable(f"{peer} answered /block with {code}")
            if self._stops(header.hash, ticket):
                return None
            if isinstance(answer, BinaryAnswer):
                block = wire.decode_block(answer.data, params.max_block_size)
            else:
                block = jsonview.parse_block(answer, "block", params.max_money)
            if block.hash != header.hash:
                raise Malformed(f"{peer} answered /block/{block_hash[:16]} with another block")
        else:
            self.counts.compact_rebuilt += 1
        log.debug("block {hash} rebuilt ({n} transactions fetched); submitting it", hash=block_hash[:16],
                  n=len(rebuilt.missing) if not rebuilt.collision else "all")
        fetch = self.fetching.get(header.hash)
        if fetch is not None and fetch.ticket is ticket and fetch.deadline is not None:
            fetch.deadline.cancel()  # the block is here and being checked: nobody else is asked meanwhile
            fetch.deadline = None
        result = await self.node.submit_block(block, source=peer)
        if getattr(result, "status", None) == "accepted":
            self.delivered_first(peer)
        return result

    def _txs_of(self, answer, at_most: int) -> list:
        """The transactions of a /block_txs or /txs answer: a framed list of canonical transactions, or JSON
        (a JSON-only peer); Malformed if it holds more than at_most or anything bad."""
        params = self.node.params
        if isinstance(answer, BinaryAnswer):
            return [wire.decode_tx(raw, params.max_block_size)
                    for raw in wire.read_list(answer.data, at_most, params.max_block_size)]
        return [jsonview.parse_tx(t, "transaction", params.max_money)
                for t in jsonview.require_list(answer.get("transactions"), "transactions", at_most)]

    def _fetch_failed(self, failure, peer, height=None):
        another = failure.check(PeerUnreachable, Malformed) is not None  # the peer failed us, not the block
        self._log_fetch_failure(failure, peer, height)
        return _TRY_ANOTHER if another else None

    def _log_fetch_failure(self, failure, peer, height=None):
        if not failure.check(Invalid, defer.CancelledError):
            # we still lack a block it has (a lost answer, a busy peer): its tip is polled at the next
            # round, and a catch-up gets the block, instead of waiting for the poll's backoff
            self._poll_soon(peer)
        if failure.check(PeerUnreachable):
            # it just talked to us: one lost or refused answer does not make it gone (the poll that
            # follows reports it if it is); dropping it would leave us behind until discovery finds it again
            log.info("fetching a block announced by {peer} failed: {err}; its tip is polled next round",
                     peer=peer, err=failure.value)
        elif failure.check(*COIN_RULES) and height is not None and self._excused.get(peer, -1) < height:
            # peers pass blocks on before checking them against the coins (on_early_block), once a height:
            # the block's maker broke the rule, not necessarily the peer that relayed it; a second such
            # block from it at a height is its own doing, and counts as any broken rule
            self._excused[peer] = height
            while len(self._excused) > MAX_EXCUSED:
                del self._excused[next(iter(self._excused))]
            log.info("block announced by {peer} refused: {err} (a rule of the coins, which peers relay "
                     "before checking: not held against it, once a height)", peer=peer, err=failure.value)
        elif failure.check(Invalid):
            log.info("block announced by {peer} refused: {err}", peer=peer, err=failure.value)
            # past its excuse a block breaking a coin rule counts as a block breaking a rule (rules.block_fault)
            self.discovery.report_misbehaviour(peer, block_fault(failure.value) if height is not None
                                               else failure.value)
        elif failure.check(Refused):
            log.info("block announced by {peer} not taken: {err}", peer=peer, err=failure.value)
        elif failure.check(defer.CancelledError):
            pass
        else:
            log.warn("fetching a block announced by {peer} failed: {err}", peer=peer, err=failure.value)
        return None

    def announced_txs(self, peer: str, tx_ids: list) -> int:
        """peer announced transactions by id: fetch those we lack and did not just ask for; how many.  A peer
        has at most MAX_TX_REQUESTS_PER_PEER requests open (ids announced meanwhile wait and go out together)
        and MAX_TX_IN_FLIGHT_PER_PEER ids asked or waiting (the rest wait for another announcement); an id
        asked of another peer that has not answered remembers this one, to ask if that answer lacks it."""
        if self._banned(peer):
            return 0
        now = self.clock.seconds()
        while self._asked and next(iter(self._asked.values())).when < now - TX_ASKED_S:
            self._asked.popitem(last=False)
        state = self._tx_peers.get(peer)
        room = MAX_TX_IN_FLIGHT_PER_PEER - (state.load() if state is not None else 0)
        if state is None and len(self._tx_peers) >= MAX_TX_PEERS and peer not in self.discovery.outbound_peers():
            room = 0  # strangers cannot crowd out the peers we chose: their ids come from another announcer
        wanted = {}
        for tx_id in tx_ids:
            self.known.add(peer, tx_id)
            if tx_id in wanted or not self._worth_asking(tx_id, peer) or room <= 0 or \
                    (state is not None and tx_id in state.waiting):
                continue
            if tx_id in self.node.mempool or self.node.store.tx_location(tx_id) is not None:
                continue
            wanted[tx_id] = None
            room -= 1
        self._heard(peer)
        if wanted:
            state = self._tx_peers.setdefault(peer, _TxRequests())
            state.waiting.update(wanted)
            self._send_tx_requests(peer, state)
        return len(wanted)

    def _worth_asking(self, tx_id, peer) -> bool:
        """Whether tx_id may be asked of peer now: not asked of another that has not answered (peer is then
        remembered, to ask if that answer lacks it), not served lately, not lacked by peer lately."""
        asked = self._asked.get(tx_id)
        if asked is None:
            return True
        if not asked.answered:
            asked.add_source(peer)
            return False
        return not asked.served and asked.peer != peer

    def _send_tx_requests(self, peer, state) -> None:
        """Ask peer for the ids waiting for it, in batches, while it has fewer than MAX_TX_REQUESTS_PER_PEER
        requests open; an id asked of another meanwhile is left to that one."""
        now = self.clock.seconds()
        while state.open < MAX_TX_REQUESTS_PER_PEER and state.waiting:
            batch = []
            while state.waiting and len(batch) < MAX_TX_BATCH:
                tx_id, _ = state.waiting.popitem(last=False)
                if not self._worth_asking(tx_id, peer) or tx_id in self.node.mempool:
                    continue
                former = self._asked.pop(tx_id, None)
                asked = self._asked[tx_id] = _Asked(now, peer)
                if former is not None and former.others:  # lacked by another: the rest stay sources
                    asked.others = [p for p in former.others if p != peer] or None
                batch.append(tx_id)
            if batch:
                state.open += 1
                state.asked += len(batch)
                d = defer.Deferred.fromCoroutine(self._fetch_txs(peer, batch))
                d.addErrback(self._txs_failed, peer)
                d.addCallback(self._txs_answered, peer, batch)
        while len(self._asked) > MAX_ASKED:  # many peers flooding at once: a forgotten id may be asked twice
            self._asked.popitem(last=False)
        if not state.open and not state.waiting:
            self._tx_peers.pop(peer, None)

    def _txs_failed(self, failure, peer) -> set:
        if failure.check(Invalid):
            log.info("transactions asked of {peer} refused: {err}", peer=peer, err=failure.value)
            self.discovery.report_misbehaviour(peer, failure.value)
        elif failure.check(PeerUnreachable, defer.CancelledError):
            log.info("asking {peer} for transactions failed: {err}", peer=peer, err=failure.value)
        else:
            log.failure("asking {peer} for transactions failed", failure, peer=peer)
        return set()  # nothing delivered: each id is asked of its next announcer

    def _txs_answered(self, delivered, peer, tx_ids) -> None:
        """The answer of peer to tx_ids came (delivered: the ids it held) or failed (none): each id it lacked
        is asked at once of the next peer that announced it, or of the next to announce it (not of peer again
        within TX_ASKED_S); the ids waiting for peer go out."""
        state = self._tx_peers[peer]
        state.open -= 1
        state.asked -= len(tx_ids)
        retried = {}
        for tx_id in tx_ids:
            asked = self._asked.get(tx_id)
            if asked is None or asked.peer != peer or asked.answered:
                continue
            asked.answered, asked.served = True, tx_id in delivered
            if asked.served:
                continue
            for other in asked.others or ():
                other_state = retried.get(other) or self._tx_peers.get(other) or _TxRequests()
                if other_state.load() < MAX_TX_IN_FLIGHT_PER_PEER:
                    other_state.waiting[tx_id] = None
                    retried[other] = self._tx_peers[other] = other_state
                    break
        self._send_tx_requests(peer, state)
        for other, other_state in retried.items():
            log.debug("asking {peer} for transactions another announcer did not serve", peer=other)
            self._send_tx_requests(other, other_state)

    async def _fetch_txs(self, peer, tx_ids):
        """Ask peer for tx_ids and submit what it serves; the ids it served.  An answer holding a transaction
        not asked for is Malformed, and none of it is taken."""
        code, answer, cap = None, None, answer_max_bytes(self.node.params.max_block_size)
        json_only = peer in self.json_only
        if not json_only:
            code, answer = await self.client.post_binary(peer, "/txs", b"".join(tx_ids), max_bytes=cap,
                                                         binary_answer=True)
            json_only = _refuses_bytes(code, answer)
            if json_only and self.discovery.table.get(peer) is not None:  # remembered for peers of the table
                self.json_only.add(peer)
        if json_only:
            code, answer = await self.client.post_json(peer, "/txs", {"tx_ids": [i.hex() for i in tx_ids]},
                                                       max_bytes=cap, binary_answer=True)
        if code != 200:
            raise PeerUnreachable(f"{peer} answered /txs with {code}")
        txs = self._txs_of(answer, len(tx_ids))
        asked = set(tx_ids)
        unasked = [tx for tx in txs if tx.tx_id not in asked]
        if unasked:
            raise Malformed(f"{peer} answered /txs with {len(unasked)} transactions not asked for, such as "
                            f"{unasked[0].tx_id.hex()[:16]}")
        delivered = set()
        for tx in txs:
            if tx.tx_id in delivered:
                continue
            delivered.add(tx.tx_id)
            try:
                await self.node.submit_tx(tx, source=peer)
            except Invalid as err:
                self.discovery.report_misbehaviour(peer, err)  # by the rule's code: none for a conflict
            except Refused:
                continue  # conflicts and missing parents are normal between two mempools
        return delivered


def answer_max_bytes(max_block_size: int) -> int:
    """The most bytes read of a peer's answer to relay (a compact form, a block's transactions, a whole block,
    transactions by id): a block of the size limit as JSON (about 2.5 times its bytes) and the envelope, so a
    peer cannot make the node buffer more per request than a real answer takes."""
    return 3 * max_block_size + ANSWER_ENVELOPE_BYTES


def _refuses_bytes(status: int, answer) -> bool:
    """Whether an answer to a binary announcement says the peer takes announcements only as JSON: 415, or the
    400 a node from before binary announcements gives for a body that is not JSON."""
    error = answer.get("error") if isinstance(answer, dict) else None
    return status == 415 or (status == 400 and isinstance(error, str) and "Content-Type" in error)
