"""PeerTable: which peers this node knows, which are active, whom to probe when, whom it bans.

Pure on purpose (STYLE 1): no Twisted, no clock, no I/O; every method that
needs the time takes `now` (seconds, the reactor's wall clock in the node).
Discovery drives it; sync and relay report failures and misbehaviour to it.
Peer penalties by error code live here, in PENALTIES (STYLE 3).
"""

import hashlib
from dataclasses import dataclass

from ..core import errors
from ..core.errors import Malformed
from ..core.peer_url import normalise_url, subnet_of  # the one peer URL check (re-exported for p2p modules)

MAX_KNOWN = 256
MAX_BANS = 1024
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
RECHECK_S = 300.0          # an active peer is probed again this long after its last good probe (sync polls between)
REFUSED_RETRY_S = 3600.0   # a node of another network or genesis, or not a ChainCore node
BAN_THRESHOLD = 100
BAN_S = 3600.0

# Misbehaviour points by error class, first match wins; PENALTIES is the map by code.
_PENALTY_BY_CLASS = [
    (errors.TimeTooNew, 0),         # may become valid as time passes: not the sender's fault
    (errors.BlockRuleError, 50),    # bad-pow, bad-merkle-root, ...: costs real work to check
    (errors.FeeTooLow, 0),          # policy and relay races, not misbehaviour
    (errors.MempoolFull, 0),
    (errors.MissingInput, 0),
    (errors.DoubleSpend, 0),
    (errors.ImmatureCoinbase, 0),
    (errors.NonFinal, 0),
    (errors.MempoolChainLimit, 0),  # policy: valid once its ancestors are confirmed
    (errors.TxRuleError, 10),
    (errors.Malformed, 20),         # garbage JSON, a non-object, a bad field
    (errors.Invalid, 20),
]


def _points_for_class(cls) -> int:
    return next((points for base, points in _PENALTY_BY_CLASS if issubclass(cls, base)), 0)


# Built from the classes core/errors.py defines (every error ChainCore raises on purpose lives there),
# not from ChainCoreError.__subclasses__(), so the table is the same whatever was imported first.
PENALTIES = {cls.code: _points_for_class(cls) for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ChainCoreError)}


def penalty_for(code: str) -> int:
    """Misbehaviour points for an error code (0 for unknown codes and for faults that are nobody's)."""
    return PENALTIES.get(code, 0)


def backoff_s(failures: int) -> float:
    """Seconds to wait before probing a peer again after `failures` failures in a row: 2, 4, 8 ... 300."""
    if failures <= 0:
        return 0.0
    return min(BACKOFF_BASE_S * 2 ** min(failures - 1, 30), BACKOFF_MAX_S)


@dataclass
class Peer:
    """What the table knows about one peer URL."""

    url: str
    node_id: str = None
    active: bool = False
    failures: int = 0
    next_probe_at: float = 0.0
    last_seen: float = None       # time of the last good answer
    score: int = 0                # misbehaviour points since the last ban
    refused: str = None           # why it is not a peer for us (other network, ...), if so
    source: str = "candidate"     # seed, port, exchange, told, ... (for logs)


class PeerTable:
    """Known and active peers, retry backoff, bans, and self- and duplicate-detection by node_id.

    A URL is known once added; it becomes active after `mark_alive` and leaves
    the active set on `record_failure`, `refuse` or a ban.  The node's own URLs
    and node_id are never added; two URLs answering with one node_id are kept
    once (the first seen); a banned URL or node_id is refused until the ban ends.
    """

    def __init__(self, own_node_id: str = None, own_urls=(), *, max_known: int = MAX_KNOWN,
                 recheck_s: float = RECHECK_S):
        self.own_node_id = own_node_id
        self._own_urls = {normalise_url(u) for u in own_urls}
        self.max_known = max_known
        self.recheck_s = recheck_s
        self._peers = {}            # url -> Peer
        self._aliases = {}          # url -> url of the peer with the same node_id
        self._bans = {}             # url or "node:<id>" -> banned until

    # -- queries ---------------------------------------------------------------------

    def __len__(self):
        return len(self._peers)

    def __contains__(self, url):
        return _try_normalise(url) in self._peers

    def get(self, url: str) -> Peer:
        """The record for url, or None."""
        return self._peers.get(_try_normalise(url))

    def known_urls(self) -> list:
        """Every known peer URL that is not refused, sorted."""
        return sorted(u for u, p in self._peers.items() if p.refused is None)

    def active_urls(self) -> list:
        """The active peers' URLs, sorted."""
        return sorted(u for u, p in self._peers.items() if p.active)

    def is_active(self, url: str) -> bool:
        peer = self.get(url)
        return peer is not None and peer.active

    def is_banned(self, url: str, now: float) -> bool:
        """Whether url (or the node last seen there) is banned at time now."""
        url = _try_normalise(url)
        peer = self._peers.get(url)
        keys = [url] + ([_node_key(peer.node_id)] if peer is not None and peer.node_id else [])
        return any(self._bans.get(k, -1.0) > now for k in keys)

    def is_self(self, url: str) -> bool:
        return _try_normalise(url) in self._own_urls

    def due_for_probe(self, now: float) -> list:
        """URLs to probe now: known, not banned, next_probe_at reached; active ones included, sorted."""
        self._expire_bans(now)
        return sorted(u for u, p in self._peers.items()
                      if p.next_probe_at <= now and not self.is_banned(u, now))

    def next_probe_at(self, url: str) -> float:
        """When url is next due for a probe, or None if unknown."""
        peer = self.get(url)
        return None if peer is None else peer.next_probe_at

    # -- changes ----------------------------------------------------------------------

    def mark_self(self, url: str) -> None:
        """url reaches this node: drop it and never add it."""
        url = normalise_url(url)
        self._own_urls.add(url)
        self._peers.pop(url, None)

    def add(self, url: str, now: float, source: str = "candidate") -> bool:
        """Remember url as a candidate to probe now; False if bad, ours, banned, an alias, known or no room."""
        try:
            url = normalise_url(url)
        except Malformed:
            return False
        if url in self._peers or url in self._own_urls or url in self._aliases or self.is_banned(url, now):
            return False
        if len(self._peers) >= self.max_known and not self._evict_one():
            return False
        self._peers[url] = Peer(url, next_probe_at=now, source=source)
        return True

    def probe_soon(self, url: str, now: float) -> bool:
        """A known, inactive, unrefused and unbanned url is due for a probe now (it showed signs of life)."""
        peer = self.get(url)
        if peer is None or peer.active or peer.refused is not None or self.is_banned(peer.url, now):
            return False
        if peer.next_probe_at <= now:
            return False
        peer.next_probe_at = now
        return True

    def mark_alive(self, url: str, node_id: str, now: float) -> str:
        """Record a good probe of a compatible node; returns 'added', 'alive', 'self', 'duplicate' or 'banned'.

        'added' means the peer just became active.  'self' and 'duplicate' (the
        node_id is ours, or another active URL has it) drop the URL from the table
        and remember it so it is never added again.  A node_id known only at an
        inactive URL has moved: the new URL replaces the old one.
        """
        url = normalise_url(url)
        if node_id == self.own_node_id:
            self.mark_self(url)
            return "self"
        if self._bans.get(_node_key(node_id), -1.0) > now:
            self._peers.pop(url, None)
            return "banned"
        holder = next((p for p in self._peers.values() if p.node_id == node_id and p.url != url), None)
        if holder is not None and holder.active:
            self._aliases[url] = holder.url
            self._peers.pop(url, None)
            return "duplicate"
        if holder is not None:  # the node answers here and not at its old URL: it moved (a restart on a new port)
            del self._peers[holder.url]
            for alias, old in list(self._aliases.items()):
                if old == holder.url:
                    self._aliases[alias] = url
            self._aliases[holder.url] = url
            self._aliases.pop(url, None)
        peer = self._peers.get(url)
        if peer is None:
            if not self.add(url, now):
                return "banned" if self.is_banned(url, now) else "duplicate"
            peer = self._peers[url]
        was_active = peer.active
        peer.node_id, peer.active, peer.failures, peer.refused = node_id, True, 0, None
        peer.last_seen, peer.next_probe_at = now, now + self.recheck_s
        return "alive" if was_active else "added"

    def answered(self, url: str, node_id, now: float) -> bool:
        """An active peer answered a /status poll as itself (same node_id): that is as good as a probe, so the
        next probe moves recheck_s ahead.  True if it counted; a peer inactive or answering as another node
        is left for discovery's own probe."""
        peer = self._peers.get(url)
        if peer is None or not peer.active or node_id is None or peer.node_id != node_id:
            return False
        peer.last_seen, peer.next_probe_at = now, max(peer.next_probe_at, now + self.recheck_s)
        return True

    def record_failure(self, url: str, now: float) -> bool:
        """A probe or request failed: leave the active set, retry after backoff; True if it was active."""
        peer = self.get(url)
        if peer is None:
            return False
        was_active = peer.active
        peer.active = False
        peer.failures += 1
        peer.next_probe_at = now + backoff_s(peer.failures)
        return was_active

    def refuse(self, url: str, reason: str, now: float) -> bool:
        """url is not a peer for us (other network or genesis, not ChainCore): probe it again only after
        REFUSED_RETRY_S; returns True the first time (so the caller logs once)."""
        peer = self.get(url)
        if peer is None:
            return False
        first = peer.refused != reason
        peer.active, peer.refused = False, reason
        peer.next_probe_at = now + REFUSED_RETRY_S
        return first

    def penalise(self, url: str, code: str, now: float, points: int = None) -> bool:
        """Add misbehaviour points (PENALTIES[code] unless given); ban at BAN_THRESHOLD; True if now banned."""
        peer = self.get(url)
        if peer is None:
            return False
        peer.score += penalty_for(code) if points is None else points
        if peer.score < BAN_THRESHOLD:
            return False
        self.ban(url, now)
        return True

    def ban(self, url: str, now: float, duration_s: float = BAN_S) -> None:
        """Ban url and the node last seen there until now + duration_s; it leaves the table meanwhile."""
        url = normalise_url(url)
        peer = self._peers.pop(url, None)
        self._bans[url] = now + duration_s
        if peer is not None and peer.node_id:
            self._bans[_node_key(peer.node_id)] = now + duration_s
            for alias in [a for a, holder in self._aliases.items() if holder == url]:
                self._bans[alias] = now + duration_s
                del self._aliases[alias]
        if len(self._bans) > MAX_BANS:
            del self._bans[min(self._bans, key=self._bans.get)]

    def forget(self, url: str) -> None:
        """Drop url from the table (not a ban: it may be added again)."""
        self._peers.pop(_try_normalise(url), None)

    def _expire_bans(self, now: float) -> None:
        for key in [k for k, until in self._bans.items() if until <= now]:
            del self._bans[key]

    def _evict_one(self) -> bool:
        """Drop the least useful inactive peer to make room; False if every peer is active."""
        idle = [p for p in self._peers.values() if not p.active]
        if not idle:
            return False
        worst = max(idle, key=lambda p: (p.refused is not None, p.failures, p.last_seen is None,
                                         -(p.last_seen or 0.0), p.url))
        del self._peers[worst.url]
        return True

    # -- persistence ------------------------------------------------------------------

    def to_json(self) -> dict:
        """A JSON-ready snapshot for the datadir; active flags are not kept (every peer is re-probed)."""
        return {
            "version": 1,
            "peers": [{"url": p.url, "node_id": p.node_id, "failures": p.failures, "last_seen": p.last_seen,
                       "score": p.score, "refused": p.refused, "next_probe_at": p.next_probe_at,
                       "source": p.source}
                      for p in sorted(self._peers.values(), key=lambda p: p.url)],
            "aliases": dict(sorted(self._aliases.items())),
            "bans": dict(sorted(self._bans.items())),
        }

    @classmethod
    def from_json(cls, obj, now: float, own_node_id: str = None, own_urls=(), **kwargs) -> "PeerTable":
        """A table from to_json() output; Malformed if the shape is wrong, bad entries are skipped.

        Peers are loaded inactive and due at once, except refused ones, which keep their retry time.
        """
        if not isinstance(obj, dict) or obj.get("version") != 1 or not isinstance(obj.get("peers"), list):
            raise Malformed("not a version 1 peer table")
        table = cls(own_node_id, own_urls, **kwargs)
        for entry in obj["peers"]:
            try:
                table._load_peer(entry, now)
            except (Malformed, KeyError, TypeError, ValueError):
                continue
        for key, until in (obj.get("bans") or {}).items():
            if isinstance(key, str) and isinstance(until, (int, float)) and until > now:
                table._bans[key] = float(until)
        for alias, holder in (obj.get("aliases") or {}).items():
            if isinstance(alias, str) and holder in table._peers:
                table._aliases[alias] = holder
        return table

    def _load_peer(self, entry: dict, now: float) -> None:
        url = normalise_url(entry["url"])
        node_id = entry.get("node_id")
        if len(self._peers) >= self.max_known or url in self._own_urls or (
                node_id is not None and node_id == self.own_node_id):
            return
        refused = entry.get("refused")
        peer = Peer(url, node_id=node_id if isinstance(node_id, str) else None,
                    failures=max(0, int(entry.get("failures") or 0)),
                    last_seen=float(entry["last_seen"]) if entry.get("last_seen") is not None else None,
                    score=max(0, int(entry.get("score") or 0)),
                    refused=refused if isinstance(refused, str) else None,
                    source=str(entry.get("source") or "saved"))
        peer.next_probe_at = float(entry.get("next_probe_at") or now) if peer.refused else now
        self._peers[url] = peer


OUTBOUND_DEGREE = 8
POLL_MIN_S = 5.0            # a peer whose tip moved is polled again this soon
POLL_MAX_S = 120.0          # an idle peer at most this rarely (Bitcoin Core pings every 2 minutes)


def choose_outbound(current, candidates, degree: int = OUTBOUND_DEGREE) -> list:
    """The outbound peers: those of current still among candidates, then candidates from the subnets
    (and hosts) least represented so far, so one network cannot fill every slot; sorted, at most degree."""
    candidates = sorted(set(candidates))
    chosen = [u for u in sorted(set(current)) if u in candidates][:degree]
    by_subnet, by_host = {}, {}
    for url in chosen:
        by_subnet[subnet_of(url)] = by_subnet.get(subnet_of(url), 0) + 1
        host = url.partition("://")[2].rpartition(":")[0]
        by_host[host] = by_host.get(host, 0) + 1
    rest = [u for u in candidates if u not in chosen]
    while len(chosen) < degree and rest:
        def crowding(url):
            host = url.partition("://")[2].rpartition(":")[0]
            return by_subnet.get(subnet_of(url), 0), by_host.get(host, 0), _spread(url)
        best = min(rest, key=crowding)
        rest.remove(best)
        chosen.append(best)
        by_subnet[subnet_of(best)] = by_subnet.get(subnet_of(best), 0) + 1
        host = best.partition("://")[2].rpartition(":")[0]
        by_host[host] = by_host.get(host, 0) + 1
    return sorted(chosen)


def _spread(url: str) -> bytes:
    """A stable, well-mixed order among equals, so nodes do not all pick the same first peers."""
    return hashlib.blake2b(url.encode(), digest_size=8).digest()


class PollSchedule:
    """When to poll each peer's tip: soon after it changed, backing off to POLL_MAX_S while nothing
    changes, and not at all while the peer's announcements show it is alive and talking. Pure."""

    def __init__(self, min_s: float = POLL_MIN_S, max_s: float = POLL_MAX_S):
        self.min_s, self.max_s = min_s, max_s
        self._next = {}       # url -> (next poll time, current interval)

    def due(self, urls, now: float) -> list:
        """The urls whose poll is due at now (a url never seen is due at once)."""
        return [u for u in urls if self._next.get(u, (0.0, 0.0))[0] <= now]

    def polled(self, url: str, now: float, changed: bool) -> None:
        """A poll answered: next one after min_s if it showed news, else after twice the last interval."""
        interval = self.min_s if changed else min(self.max_s, max(self.min_s, 2 * self._next.get(url, (0, 0))[1]))
        self._next[url] = (now + interval, interval)

    def heard(self, url: str, now: float) -> None:
        """url announced something: it is alive and tells us its news, so its next poll moves back."""
        _, interval = self._next.get(url, (0.0, self.min_s))
        interval = max(interval, self.min_s)
        self._next[url] = (now + interval, interval)

    def retry(self, url: str) -> None:
        """Poll url again at the next round (we are still behind it)."""
        self._next[url] = (0.0, self.min_s)

    def forget(self, url: str) -> None:
        self._next.pop(url, None)


def _try_normalise(url) -> str:
    try:
        return normalise_url(url)
    except Malformed:
        return url


def _node_key(node_id: str) -> str:
    return "node:" + node_id
