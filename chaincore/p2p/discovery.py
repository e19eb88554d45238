"""Discovery: finding peers of the same network and keeping the active set honest.

One round (`run_once`) seeds the PeerTable from `--peer` URLs and the
`--discover-ports` range, probes every peer that is due (GET /status, 2 s)
concurrently, keeps only nodes of our network and genesis with another
node_id, then asks the peers it just reached for theirs (GET /peers) and
probes the newcomers.  Decisions live in the pure PeerTable; this is the driver.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import LogLevel

from ..logs import logger

from ..core.errors import Malformed, PeerUnreachable
from ..core.peer_url import is_loopback_url
from .client import DATA_TIMEOUT_S
from .peers import OUTBOUND_DEGREE, choose_outbound, normalise_url

EXCHANGE_LIMIT = 32        # new URLs taken from one peer's /peers answer per round
PEERS_MAX_BYTES = 256_000
EXCHANGE_MIN_S = 4.0       # a peer whose list grew is asked again this soon ...
EXCHANGE_MAX_S = 600.0     # ... one whose list stays the same at most this rarely (conditional GETs)
MAX_INBOUND = 32           # peers that chose us, relayed to besides our own outbound choice
INBOUND_TTL_S = 600.0      # an inbound peer silent this long is no longer one


@dataclass(frozen=True)
class NodeIdentity:
    """What makes a node a compatible peer of this one, and how this node is reached."""

    node_id: str
    network: str
    genesis_hash: str      # hex, as in /status
    advertise_url: str


class Discovery:
    """Runs discovery rounds over a PeerClient and a PeerTable, and tells the node who came and went.

    `on_peer_added(url, status_json)` fires when a peer becomes active and
    `on_peer_lost(url)` when an active peer fails, is refused or is banned;
    either may return a Deferred, whose failure is logged.  Sync and relay
    report trouble with `report_failure` and `report_misbehaviour`.
    """

    log = logger("chaincore.p2p.discovery")

    def __init__(self, client, table, clock, identity: NodeIdentity, *, discover_ports=(), seeds=(),
                 own_port: int = None, exchange_limit: int = EXCHANGE_LIMIT,
                 on_peer_added=None, on_peer_lost=None, degree: int = OUTBOUND_DEGREE,
                 max_inbound: int = MAX_INBOUND):
        self.client, self.table, self._clock, self.identity = client, table, clock, identity
        self._seeds = [normalise_url(u) for u in seeds]
        table.own_node_id = identity.node_id
        table.mark_self(identity.advertise_url)
        if own_port is None:
            own_port = urlsplit(identity.advertise_url).port
        # a node others reach on another address learns peers by exchange: probing its own machine's
        # ports would find nodes at loopback URLs that mean nothing to its peers
        self.on_loopback = is_loopback_url(identity.advertise_url)
        self._port_urls = ([f"http://localhost:{p}" for p in discover_ports if p != own_port]
                           if self.on_loopback else [])
        self.degree, self.max_inbound = degree, max_inbound
        self._outbound = []
        self._inbound = {}        # url -> when it last contacted us
        self._exchange_at = {}    # url -> (next exchange time, interval)
        self._exchange_limit = exchange_limit
        self.on_peer_added = on_peer_added
        self.on_peer_lost = on_peer_lost
        self._running = None
        self.rounds = 0

    # -- for the node, sync and relay ---------------------------------------------------

    def active_peers(self) -> list:
        """URLs of the active peers, sorted."""
        return self.table.active_urls()

    def outbound_peers(self) -> list:
        """The peers this node polls and relays to: at most `degree` active peers, kept while they stay
        active, chosen from different subnets and hosts first (PeerTable is pure; choose_outbound too)."""
        self._outbound = choose_outbound(self._outbound, self.table.active_urls(), self.degree)
        return list(self._outbound)

    def inbound_peers(self) -> list:
        """Active peers that contacted us within INBOUND_TTL_S, newest first up to max_inbound, sorted."""
        now = self._clock.seconds()
        for url in [u for u, t in self._inbound.items() if now - t > INBOUND_TTL_S]:
            del self._inbound[url]
        recent = sorted((u for u in self._inbound if self.table.is_active(u)), key=self._inbound.get, reverse=True)
        return sorted(recent[:self.max_inbound])

    def relay_peers(self) -> list:
        """Whom news goes to: the outbound peers and the inbound ones."""
        return sorted(set(self.outbound_peers()) | set(self.inbound_peers()))

    def polled(self, url: str, status: dict) -> None:
        """An outbound peer answered a sync poll: it counts as this round's probe of it (an idle link then
        carries the poll alone, not the poll and a probe of the same /status)."""
        self.table.answered(url, status.get("node_id"), self._clock.seconds())

    def heard_from(self, url: str) -> None:
        """url (checked to name the sender) contacted us: an inbound peer, up to the cap."""
        try:
            url = normalise_url(url)
        except Malformed:
            return
        if url in self._inbound or len(self._inbound) < self.max_inbound:
            self._inbound[url] = self._clock.seconds()
        else:  # full: the one silent longest makes room
            oldest = min(self._inbound, key=self._inbound.get)
            if self._clock.seconds() - self._inbound[oldest] > INBOUND_TTL_S / 2:
                del self._inbound[oldest]
                self._inbound[url] = self._clock.seconds()

    def remember(self, url: str, source: str = "told") -> bool:
        """Take url (from POST /peers or an X-ChainCore-Peer header) as a candidate for the next round;
        True if it is now due for a probe, False if it is not a base URL, is ours, banned, active or
        already due, or there is no room."""
        try:
            url = normalise_url(url)
        except Malformed:
            return False
        now = self._clock.seconds()
        added = self.table.add(url, now, source)
        if added:
            self.log.debug("candidate peer {url} ({source})", url=url, source=source)
            return True
        # a known peer that contacts us is evidently up again: do not wait out its backoff
        return self.table.probe_soon(url, now)

    def report_failure(self, url: str, reason: str = "request failed") -> None:
        """A request to url gave no usable answer: it leaves the active set and is retried with backoff."""
        self._failed(url, reason)

    def report_misbehaviour(self, url: str, error) -> bool:
        """url sent data that broke a rule: penalise it by the error's code (an Invalid or a code string);
        returns True if that got it banned (it then leaves the active set)."""
        code = error if isinstance(error, str) else getattr(error, "code", "error")
        was_active = self.table.is_active(url)
        banned = self.table.penalise(url, code, self._clock.seconds())
        if banned:
            self.log.warn("banned peer {url} for misbehaviour ({code})", url=url, code=code)
            if was_active:
                self._lost(url)
        return banned

    def run_once(self):
        """One discovery round; fires with None when every probe is settled (never fails).

        A call while a round is running starts nothing and fires when that round ends.
        """
        if self._running is not None:
            waiter = defer.Deferred()
            self._running.append(waiter)
            return waiter
        self._running = []
        d = defer.Deferred.fromCoroutine(self._round())
        d.addErrback(lambda f: self.log.failure("discovery round failed", f, level=LogLevel.error))
        d.addBoth(self._round_done)
        return d

    # -- the round ----------------------------------------------------------------------

    def _round_done(self, _):
        waiters, self._running = self._running, None
        self.rounds += 1
        for w in waiters:
            w.callback(None)

    async def _round(self):
        now = self._clock.seconds()
        for url in self._seeds:
            self.table.add(url, now, "seed")
        for url in self._port_urls:
            self.table.add(url, now, "port")
        await self._probe_due()
        now = self._clock.seconds()
        due = [u for u in self.table.active_urls() if self._exchange_at.get(u, (0.0, 0.0))[0] <= now]
        learnt = await defer.gatherResults([defer.Deferred.fromCoroutine(self._exchange(url)) for url in due],
                                           consumeErrors=True)
        if any(learnt):
            await self._probe_due()

    async def _probe_due(self) -> list:
        """Probe every due URL concurrently; the URLs that answered as compatible peers."""
        due = self.table.due_for_probe(self._clock.seconds())
        results = await defer.gatherResults([defer.Deferred.fromCoroutine(self._probe(url)) for url in due],
                                            consumeErrors=True)
        return [url for url, ok in zip(due, results) if ok]

    async def _probe(self, url: str) -> bool:
        try:
            status = await self.client.status(url)
        except PeerUnreachable as e:
            self._failed(url, str(e))
            return False
        except Malformed as e:
            self._refuse(url, f"not a ChainCore node ({e})")
            return False
        except Exception as e:  # it could not even be asked (a URL the HTTP client cannot encode): that URL
            self._failed(url, f"cannot ask it: {type(e).__name__}: {e}")  # fails, not the whole round
            return False
        problem = self._incompatibility(status)
        if problem:
            self._refuse(url, problem)
            return False
        outcome = self.table.mark_alive(url, status["node_id"], self._clock.seconds())
        if outcome == "added":
            self.log.info("peer {url} added (height {height})", url=url, height=status.get("height"))
            self._notify(self.on_peer_added, url, status)
        elif outcome in ("self", "duplicate"):
            self.log.debug("{url} is {what}", url=url,
                           what="this node" if outcome == "self" else "a known peer under another URL")
        return outcome in ("added", "alive")

    def _incompatibility(self, status: dict):
        """Why a /status answer is not a peer for us, or None."""
        node_id, network, genesis = (status.get(k) for k in ("node_id", "network", "genesis_hash"))
        if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in (node_id, network, genesis)):
            return "not a ChainCore node (no node_id, network or genesis_hash in /status)"
        if network != self.identity.network:
            return f"network {network!r}, ours is {self.identity.network!r}"
        if genesis.lower() != self.identity.genesis_hash.lower():
            return f"genesis {genesis[:16]}..., ours is {self.identity.genesis_hash[:16]}..."
        return None

    async def _exchange(self, url: str) -> int:
        """Ask url for its peers and add up to the limit of new ones as candidates; how many were added."""
        try:
            code, answer, changed = await self.client.get_cached(url, "/peers", timeout_s=DATA_TIMEOUT_S,
                                                                 max_bytes=PEERS_MAX_BYTES)
            if code != 200:
                raise PeerUnreachable(f"peer {url} answered /peers with HTTP {code}")
            offered = [u for key in ("active_peers", "peers") for u in _url_list(answer, key, url)]
        except PeerUnreachable as e:
            self._failed(url, str(e))
            return 0
        except Malformed as e:
            self.report_misbehaviour(url, e)
            return 0
        except Exception as e:  # as in _probe: one URL's trouble, not the round's
            self._failed(url, f"cannot ask it: {type(e).__name__}: {e}")
            return 0
        added = 0
        for candidate in offered if changed else ():
            if added >= self._exchange_limit:
                break
            if not self.on_loopback and is_loopback_url(candidate):
                continue  # a loopback URL from another host names that host, not one we can reach
            added += self.remember(candidate, source="exchange")
        _, interval = self._exchange_at.get(url, (0.0, 0.0))
        interval = EXCHANGE_MIN_S if added else min(EXCHANGE_MAX_S, max(EXCHANGE_MIN_S, 2 * interval))
        self._exchange_at[url] = (self._clock.seconds() + interval, interval)
        return added

    # -- bookkeeping --------------------------------------------------------------------

    def _failed(self, url, reason):
        if self.table.record_failure(url, self._clock.seconds()):
            self.log.info("peer {url} dropped: {reason}", url=url, reason=reason)
            self._lost(url)
        else:
            self.log.debug("peer {url} unreachable: {reason}", url=url, reason=reason)

    def _refuse(self, url, reason):
        was_active = self.table.is_active(url)
        if self.table.refuse(url, reason, self._clock.seconds()):
            self.log.info("not peering with {url}: {reason}", url=url, reason=reason)
        if was_active:
            self._lost(url)

    def _lost(self, url):
        self._exchange_at.pop(url, None)
        self._inbound.pop(url, None)
        self.client.forget_cached(url)
        self._notify(self.on_peer_lost, url)

    def _notify(self, callback, *args):
        if callback is None:
            return
        d = defer.maybeDeferred(callback, *args)
        d.addErrback(lambda f: self.log.failure("{callback} failed for {url}", f, level=LogLevel.error,
                                                callback=getattr(callback, "__qualname__", callback), url=args[0]))


def _url_list(answer: dict, key: str, url: str) -> list:
    """The strings in answer[key] (missing means none); Malformed if it is not a list."""
    value = answer.get(key, [])
    if not isinstance(value, list):
        raise Malformed(f"peer {url} /peers: {key} is not a list")
    return [u for u in value[:1000] if isinstance(u, str)]
