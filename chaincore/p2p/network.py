"""The node's peer-to-peer network as a twistd service: discovery, startup sync, periodic sync, relay.

On start it finds peers (port probing, seeds, peer exchange), catches up
with them before it mines or serves templates (the guard against genesis
forks), and then keeps running discovery, tip comparison and mempool
exchange on timers the wiring makes (`make_timer`).  The peer table is saved
in the datadir.  It is the API's peer directory (known_urls, active_urls,
add, hint); the wiring subscribes its relay and sync to the node.
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.internet.task import deferLater
from ..core.errors import Malformed, PeerNotKept
from ..logs import logger

from .client import PeerClient, pooled_http_client
from .discovery import Discovery, NodeIdentity
from .peerfile import load_table, save_table
from .peers import OUTBOUND_DEGREE, PeerTable, normalise_url
from .relay import COMPACT_PUSH, Relay
from .sync import Synchronizer

log = logger("chaincore.p2p")

DISCOVERY_INTERVAL_S = 2.0   # a round probes only peers that are due, so it is cheap
SYNC_INTERVAL_S = 5.0        # a round polls only the outbound peers whose poll is due (peers.PollSchedule)
MEMPOOL_INTERVAL_S = 600.0   # transactions are announced; the whole-mempool exchange is a slow safety net
MEMPOOL_READD_S = 60.0       # a peer added again this soon after its mempool was asked for is not asked again
MEMPOOL_ASKED_KEPT = 1024    # peers whose last mempool request is remembered
SAVE_INTERVAL_S = 60.0
STARTUP_RETRIES = 2
STARTUP_RETRY_DELAY_S = 2.0


class PeerNetwork(service.MultiService):
    """Discovery, Synchronizer and Relay of one node over one PeerClient, started and stopped as a service."""

    def __init__(self, node, reactor, *, make_timer, datadir, seeds=(), discover_ports=(), own_port=None,
                 metrics=None, http=None, degree: int = OUTBOUND_DEGREE, compact_push: int = COMPACT_PUSH):
        super().__init__()
        self.make_timer = make_timer  # (interval_s, fn, clock, now) -> a child IService; the wiring chooses it
        self.node = node
        self.reactor = reactor
        self.path = os.path.join(datadir, "peers.json") if datadir else None
        self._pool = None
        if http is None:
            http, self._pool = pooled_http_client(reactor, max_idle_per_host=4)
        self.client = PeerClient(http, reactor, node.advertise_url)
        identity = NodeIdentity(node.node_id, node.params.name, node.params.genesis_hash.hex(), node.advertise_url)
        table = load_table(self.path, reactor.seconds(), node.node_id, (node.advertise_url,)) if self.path else None
        if table is None:
            table = PeerTable(node.node_id, (node.advertise_url,))
        self.discovery = Discovery(self.client, table, reactor, identity, discover_ports=discover_ports,
                                   seeds=seeds, own_port=own_port, on_peer_added=self._peer_added,
                                   on_peer_lost=self._peer_lost, degree=degree)
        self.sync = Synchronizer(node, self.client, self.discovery, reactor, metrics)
        self.relay = Relay(node, self.client, self.discovery, self.sync, reactor, compact_push=compact_push,
                           on_heard=self._heard_news)
        self.sync.in_flight = self.relay.in_time
        self._hint_call = None
        self._mempool_asked = {}  # peer -> when it was last asked for its mempool on being added
        self.startup_done = None  # a Deferred that fires when startup sync is over

    def startService(self):
        super().startService()
        self.node.syncing = True
        self.startup_done = self._startup()

    @defer.inlineCallbacks
    def _startup(self):
        try:
            yield self.discovery.run_once()
            if not self.discovery.active_peers():
                log.info("no peers found: starting on our own chain at height {h}", h=self.node.chain.height)
            else:
                log.info("startup synchronisation with {n} peer(s)", n=len(self.discovery.active_peers()))
                for attempt in range(STARTUP_RETRIES):
                    best = yield self.sync.sync_round()
                    if best is None or self.node.chain.height > 0:
                        break
                    yield deferLater(self.reactor, STARTUP_RETRY_DELAY_S, lambda: None)
                yield self.sync.exchange_all_mempools()
        except Exception:
            log.failure("startup synchronisation failed")
        finally:
            self.node.syncing = False
        if self.running:
            # startup has just run a round of each: the timers start one interval later
            for interval_s, fn in self.periodic_tasks():
                self.make_timer(interval_s, fn, self.reactor, now=False).setServiceParent(self)

    def periodic_tasks(self) -> list:
        """(interval_s, fn) of the rounds that run on timers once startup is over."""
        return [(DISCOVERY_INTERVAL_S, self.discovery.run_once), (SYNC_INTERVAL_S, self.sync.sync_round),
                (MEMPOOL_INTERVAL_S, self.sync.exchange_all_mempools), (SAVE_INTERVAL_S, self.save)]

    # -- the peer directory the API is given (api.routes.PeerDirectory) -------------------

    def known_urls(self) -> list:
        return self.discovery.table.known_urls()

    def active_urls(self) -> list:
        return self.discovery.table.active_urls()

    def add(self, url: str) -> str:
        """Take a peer named by hand: "added" (probed at once) or "known"; BadPeerURL or PeerNotKept otherwise."""
        url = normalise_url(url)
        if self.discovery.table.get(url) is not None:
            self.discovery.remember(url, "admin")  # it is evidently wanted: probe it soon
            return "known"
        if not self.discovery.remember(url, "admin"):
            raise PeerNotKept(f"the peer table does not take {url} (this node's own URL, banned, or full)")
        self.discovery.run_once()
        return "added"

    def announced(self, url: str, header, compact=None, sent_to=()) -> str:
        """A peer announced a block (api.routes.PeerDirectory): relay fetches it if we lack it; sent_to are the
        tags of the peers it sent the block to as well."""
        return self.relay.announced(normalise_url(url), header, compact, sent_to)

    def send_compact(self, url: str, want: bool) -> None:
        """Peer url asked us to push it compact forms of the blocks we relay, or to stop (relay)."""
        self.relay.push_wished(normalise_url(url), want)

    def announced_txs(self, url: str, tx_ids: list) -> int:
        """A peer announced transactions by id: relay fetches those we lack."""
        return self.relay.announced_txs(normalise_url(url), tx_ids)

    def _heard_news(self, url: str) -> None:
        self.sync.poll.heard(url, self.reactor.seconds())

    def relay_urls(self) -> list:
        return self.discovery.relay_peers()

    def misbehaved(self, url: str, error) -> None:
        """A peer posted a block or transaction that breaks a rule: points by the error's code (p2p/peers.py)."""
        try:
            url = normalise_url(url)
        except Malformed:
            return
        self.discovery.report_misbehaviour(url, error)

    def inbound(self, url: str) -> None:
        """A peer polls or announces to us as one of its outbound peers: we announce to it too."""
        self.discovery.heard_from(url)

    def hint(self, url: str) -> None:
        """A request named its sender's URL: probe it soon if it is new or was thought down."""
        if self.discovery.remember(url, "header") and self.running and not self.node.syncing:
            if self._hint_call is None or not self._hint_call.active():
                self._hint_call = self.reactor.callLater(0, self.discovery.run_once)

    def _peer_added(self, url, status):
        # discovery logs the one "peer added" line
        if not self.node.syncing:
            d = self.sync.sync_round()
            if self._mempool_due(url):
                d.addCallback(lambda _: self.sync.exchange_mempool(url))
            return d
        return None

    def _mempool_due(self, url) -> bool:
        """Whether a peer just added is asked for its whole mempool: not when it was asked within MEMPOOL_READD_S
        (a peer that drops and comes back every few seconds on a loaded machine would otherwise be asked for
        its whole mempool each time; announcements carry transactions between peers that stay)."""
        now = self.reactor.seconds()
        asked = self._mempool_asked
        if now - asked.get(url, now - MEMPOOL_READD_S) < MEMPOOL_READD_S:
            return False
        asked.pop(url, None)
        asked[url] = now  # oldest first, so the bound drops the longest asked
        while len(asked) > MEMPOOL_ASKED_KEPT:
            del asked[next(iter(asked))]
        return True

    def _peer_lost(self, url):
        # discovery logs the one line saying why (dropped, banned, refused)
        self.relay.forget(url)
        self.sync.forget_peer(url)
        self.sync.poll.forget(url)
        self.client.forget_cached(url)

    def save(self):
        if self.path:
            save_table(self.path, self.discovery.table)

    def stopService(self):
        d = defer.maybeDeferred(super().stopService)
        self.relay.stop()
        self.client.close()
        if self.startup_done is not None and not self.startup_done.called:
            self.startup_done.cancel()
        if self._hint_call is not None and self._hint_call.active():
            self._hint_call.cancel()
        try:
            self.save()
        except OSError as e:
            log.warn("could not save the peer table: {e}", e=e)
        if self._pool is not None:
            pool = self._pool
            d.addBoth(lambda r: pool.closeCachedConnections().addBoth(lambda _: r))
        return d
