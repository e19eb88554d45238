"""Synchronisation: agreeing with peers on the most-work chain, and exchanging mempools.

A round asks each active peer for its /status (one small request) and
compares chainwork; only a peer with more work than our tip triggers a
catch-up.  Catch-up finds the fork point with our block locator
(GET /headers), then downloads just the missing blocks in batches
(GET /blocks), checking each against the headers it expects and handing it
to the node, which validates it fully before the chain switches.  One
catch-up runs at a time; a slow peer only delays itself (every request has a
deadline) and a peer that sends invalid data is penalised.
"""

from twisted.internet import defer
from ..logs import logger

from ..core import jsonview
from ..core.errors import Invalid, Malformed, PeerUnreachable, Refused
from .peers import PollSchedule

log = logger("chaincore.p2p.sync")

HEADERS_PER_REQUEST = 2000
BLOCKS_PER_REQUEST = 100
PROGRESS_EVERY_S = 5.0
MAX_TXS_PER_EXCHANGE = 5000


def plan_catch_up(our_chainwork: int, peer_status: dict) -> bool:
    """Whether a peer's /status shows a chain with more work than ours."""
    try:
        return int(peer_status.get("chainwork", "0"), 16) > our_chainwork
    except (TypeError, ValueError):
        return False


class Synchronizer:
    """Keeps the node's chain and mempool in step with its active peers."""

    def __init__(self, node, client, discovery, clock, metrics=None):
        self.node = node
        self.client = client
        self.discovery = discovery
        self.clock = clock
        self.metrics = metrics
        self._catching_up = None   # the peer a catch-up is running against (relay holds back its blocks)
        self.caught_up_listeners = []  # f(peer, received) after a catch-up that brought blocks
        self.poll = PollSchedule()     # when each outbound peer's tip is polled next
        self._tips = {}                # peer -> the tip_hash it last showed

    # -- rounds ------------------------------------------------------------------------

    @property
    def catching_up(self):
        """The peer a catch-up is running against, or None."""
        return self._catching_up

    @defer.inlineCallbacks
    def sync_round(self):
        """Compare tips with every active peer and catch up with the one with most work; should that
        catch-up fail, the next one that still has more work than us.  Fires with the first peer
        caught up with, or None when every peer was in step (or none answered)."""
        # only outbound peers whose poll is due: inbound ones poll us, and announcements bring news
        peers = self.poll.due(self.discovery.outbound_peers(), self.clock.seconds())
        if not peers:
            return None
        answers = yield defer.DeferredList([self.client.status(url, as_outbound=True) for url in peers],
                                           consumeErrors=True)
        ahead = []
        for url, (ok, status) in zip(peers, answers):
            if ok:
                changed = self._tips.get(url) != status.get("tip_hash")
                self._tips[url] = status.get("tip_hash")
                self.poll.polled(url, self.clock.seconds(), changed)
            if not ok:
                self.discovery.report_failure(url, _reason(status))
            elif plan_catch_up(self.node.chain.tip.chainwork, status):
                ahead.append((-int(status["chainwork"], 16), url))
        self._count("round")
        first = None
        for negative_work, url in sorted(ahead):
            if -negative_work <= self.node.chain.tip.chainwork:
                continue  # an earlier catch-up this round got us there already
            first = first or url
            yield self.catch_up(url)
            if -negative_work > self.node.chain.tip.chainwork:
                self.poll.retry(url)  # still behind it: ask again next round, whatever the backoff says
        return first

    @defer.inlineCallbacks
    def catch_up(self, peer: str):
        """Download and hand to the node every block the peer has on a heavier chain; fires with the count.

        A peer that answers with an invalid block is penalised; one that does not
        answer is reported as failed; one whose chain moved under us (its /blocks
        no longer match its /headers) is left alone until the next round.
        """
        if self._catching_up is not None:
            return 0
        self._catching_up = peer
        received, started_at, last_report = 0, self.clock.seconds(), self.clock.seconds()
        try:
            while True:
                locator = ",".join(h.hex() for h in self.node.chain.locator())
                status, answer = yield self.client.get_json(
                    peer, "/headers", {"locator": locator, "limit": str(HEADERS_PER_REQUEST)})
                if status != 200:
                    raise PeerUnreachable(f"{peer} answered /headers with {status}")
                headers = [jsonview.parse_header(h, "header") for h in _list(answer, "headers")]
                if not headers:
                    break
                target_height = answer.get("height") if isinstance(answer.get("height"), int) else headers[-1].height
                position = 0
                while position < len(headers):
                    # a peer may answer with fewer blocks than asked: ask again from where it stopped
                    blocks = yield self._fetch_blocks(peer, headers[position:position + BLOCKS_PER_REQUEST])
                    position += len(blocks)
                    results, error = yield self.node.submit_blocks(blocks, source=peer)
                    received += len(results)
                    if error is not None:
                        raise error
                    now = self.clock.seconds()
                    if now - last_report >= PROGRESS_EVERY_S:
                        last_report = now
                        height = self.node.chain.height
                        rate = received / max(now - started_at, 1e-9)
                        log.info("catching up with {peer}: height {height} of {target} ({pct:.0f}%), "
                                 "{rate:.0f} blocks/s", peer=peer, height=height, target=target_height,
                                 pct=100.0 * height / max(target_height, 1), rate=rate)
                if len(headers) < HEADERS_PER_REQUEST:
                    break
            if received:
                elapsed = self.clock.seconds() - started_at
                log.info("caught up with {peer}: {n} blocks in {s:.1f} s, tip height {height}",
                         peer=peer, n=received, s=elapsed, height=self.node.chain.height)
            self._count("caught-up" if received else "in-sync")
            return received
        except _ChainMoved as err:
            log.info("{err}; trying again next round", err=err)
            self._count("moved")
            return received
        except Invalid as err:
            log.warn("peer {peer} sent invalid data during sync: {err}", peer=peer, err=err)
            self.discovery.report_misbehaviour(peer, err)
            self._count("invalid")
            return received
        except PeerUnreachable as err:
            self.discovery.report_failure(peer, str(err))
            self._count("failed")
            return received
        finally:
            self._catching_up = None
            if received:
                for listener in list(self.caught_up_listeners):
                    listener(peer, received)

    @defer.inlineCallbacks
    def _fetch_blocks(self, peer: str, headers: list):
        status, answer = yield self.client.get_json(
            peer, "/blocks", {"start": str(headers[0].height), "limit": str(len(headers))},
            max_bytes=64_000_000)
        if status != 200:
            raise PeerUnreachable(f"{peer} answered /blocks with {status}")
        blocks = [jsonview.parse_block(b, "block") for b in _list(answer, "blocks")]
        if [b.hash for b in blocks] != [h.hash for h in headers[:len(blocks)]] or not blocks:
            raise _ChainMoved(f"{peer} changed its chain during sync")
        return blocks

    # -- orphans ---------------------------------------------------------------------------

    def on_orphan(self, missing: bytes, source: str | None):
        """A block arrived whose ancestors we lack: catch up with whoever sent it."""
        if source and source in self.discovery.active_peers():
            d = self.catch_up(source)
            d.addErrback(lambda f: log.failure("catch-up after an orphan failed", f))

    # -- mempool exchange ------------------------------------------------------------------

    @defer.inlineCallbacks
    def exchange_mempool(self, peer: str):
        """Fetch a peer's mempool and take in what is valid; fires with the number accepted."""
        try:
            status, answer = yield self.client.get_json(peer, "/transactions", max_bytes=32_000_000)
        except PeerUnreachable as err:
            self.discovery.report_failure(peer, str(err))
            return 0
        except Malformed as err:
            self.discovery.report_misbehaviour(peer, err)
            return 0
        if status != 200:
            return 0
        accepted = 0
        try:
            txs = _list(answer, "transactions")[:MAX_TXS_PER_EXCHANGE]
        except Malformed as err:
            self.discovery.report_misbehaviour(peer, err)
            return 0
        for raw in txs:
            try:
                tx = jsonview.parse_tx(raw)
                result = yield self.node.submit_tx(tx, source=peer)
                if result.status == "accepted":
                    accepted += 1
            except Malformed as err:
                self.discovery.report_misbehaviour(peer, err)
                return accepted
            except Refused:
                continue  # conflicts and missing parents are normal between two mempools
        return accepted

    @defer.inlineCallbacks
    def exchange_all_mempools(self):
        peers = self.discovery.active_peers()
        results = yield defer.DeferredList([self.exchange_mempool(url) for url in peers], consumeErrors=True)
        return sum(r for ok, r in results if ok)

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.sync_rounds.labels(result).inc()


class _ChainMoved(Exception):
    """The peer's /blocks no longer match its /headers: its chain moved between the two requests."""


def _list(answer: dict, key: str) -> list:
    value = answer.get(key)
    if not isinstance(value, list):
        raise Malformed(f"peer answer lacks a list {key}")
    return value


def _reason(failure) -> str:
    return str(getattr(failure, "value", failure))
