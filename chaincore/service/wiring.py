"""Wiring one node: the store, the Node, the HTTP site, the peer network and the miner, as one MultiService.

`build_node` is the one place that connects a node's parts (who listens to
whom, which worker pool and timers they share); the twistd service and the
tests both get their nodes from it, so tests run the production wiring.
`make_node_service` adds what only a real process needs: a datadir with its
lock, a SqliteStore, worker processes and a listening port.  Everything that
can fail at start (a bad endpoint, a port in use, a datadir that cannot be
opened or belongs to another network) fails inside make_node_service with one
line and exit status 1, before twistd daemonizes.
"""

import fcntl
import ipaddress
import os
import re
import socket
import time
from urllib.parse import urlsplit

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Cooperator, deferLater

from ..api.budgets import ConnectionTable, RequestBudget, TokenBuckets, classify_host
from ..api.events import EventHub, HeartbeatService
from ..api.guard import guard
from ..api.routes import NodeAPI
from ..api.site import make_site
from ..core.errors import StoreError
from ..core.params import NETWORKS
from ..core.store import CachedStore
from ..logs import logger
from ..p2p.network import PeerNetwork
from ..storage.sqlite import SqliteStore
from .config import NodeLimits
from .heap import HEAP_TRIM_S, trim_heap
from .metrics import NodeMetrics
from .node import Node
from .timers import after_two_turns, every
from .workers import ProcessOffloader

log = logger("chaincore.service")

STORE_FILE = "chain.sqlite"
IDLE_CONNECTION_S = 300.0


class NodeService(service.MultiService):
    """The node's top service: closes the store after every child (site, timers, miner) has stopped."""

    def __init__(self, node, store, *, api, site, peers, metrics, miner=None, datadir=None, reactor=None,
                 lock=None, listening=None):
        super().__init__()
        self.listening = listening  # the guarded factory the endpoint listens with (api/guard.py)
        self.node = node
        self.store = store
        self.api = api          # the NodeAPI behind site
        self.site = site
        self.peers = peers      # the PeerNetwork (the API's peer directory)
        self.metrics = metrics
        self.miner = miner      # the MinerService under --mine, or None
        self.lock = lock        # the datadir's lock file, released when the store is closed
        self.datadir = datadir
        self.reactor = reactor
        self.reopen_store = None  # opens the store closed before twistd's fork (make_node_service)

    def startService(self):
        if self.reopen_store is not None:  # in the process that runs the node, after twistd's fork
            try:
                self.reopen_store()
            except StoreError as e:
                log.error("cannot open the store again: {e}", e=e)
                raise SystemExit(f"chaincore: {e}")
        if self.lock is not None:
            note_lock_holder(self.lock)
        tip = self.node.chain.tip
        log.info("ChainCore node {node_id} on {network}: datadir {datadir}, tip {tip} at height {height}, "
                 "serving as {url}", node_id=self.node.node_id[:12], network=self.node.params.name,
                 datadir=self.datadir, tip=tip.hash.hex()[:16], height=tip.height, url=self.node.advertise_url)
        super().startService()

    def stopService(self):
        d = super().stopService()

        def close(result):
            self.node.stop()  # its pending write is done by the store's close
            if self.listening is not None:
                self.listening.close_connections()
            if self.site is not None:
                self.site.close_connections()
            self.store.close()
            if self.lock is not None:
                self.lock.close()
            log.info("store closed at height {height}", height=self.node.chain.height)
            return result

        d.addBoth(close)
        if self.node.offloader is not None:
            offloader = self.node.offloader
            d.addBoth(lambda r: offloader.shutdown().addBoth(lambda _: r))
        if self.reactor is not None:
            d.addBoth(lambda r: deferLater(self.reactor, 0, lambda: r))  # let aborted connections finish
        return d


def preflight_bind(interface: str, port: int) -> None:
    """Fail at once, with one line, if the port cannot be bound."""
    probe = socket.socket(socket.AF_INET6 if ":" in interface else socket.AF_INET)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((interface, port))
    except OSError as e:
        raise SystemExit(f"chaincore: cannot listen on {interface}:{port}: {e.strerror}")
    finally:
        probe.close()


def endpoint_port(endpoint):
    """The TCP port a tcp: endpoint or an inherited (socket-activated) socket listens on, or None if unknown yet."""
    fileno = getattr(endpoint, "fileno", None)  # AdoptedStreamServerEndpoint: systemd:domain=INET:index=0
    if isinstance(fileno, int):
        try:
            with socket.socket(fileno=os.dup(fileno)) as adopted:
                name = adopted.getsockname()
        except OSError:
            return None
        return name[1] if isinstance(name, tuple) and name[1] else None
    port = getattr(endpoint, "_port", None)  # TCP4ServerEndpoint, TCP6ServerEndpoint
    return port if isinstance(port, int) and port else None


LOCK_FILE = "node.lock"


def lock_datadir(datadir: str):
    """An open, exclusively locked file in datadir (held until closed), or SystemExit naming the holder.

    Two nodes on one datadir would each keep their own idea of the chain in memory;
    the lock survives twistd's daemonizing fork, and the kernel drops it if the node dies.
    """
    path = os.path.join(datadir, LOCK_FILE)
    try:
        handle = open(path, "a+")
    except OSError as e:
        raise SystemExit(f"chaincore: cannot open {path}: {e.strerror}")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise SystemExit(f"chaincore: datadir {datadir} is in use by another node (pid {holder})")
    return handle


def note_lock_holder(handle) -> None:
    """Write this process's pid into the lock file (after twistd's fork, so it is the node's)."""
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()


def open_store(datadir: str, params):
    """The node's SqliteStore in datadir and the datadir's lock, or SystemExit with one line saying why not."""
    try:
        os.makedirs(datadir, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"chaincore: cannot create datadir {datadir}: {e.strerror}")
    if not os.access(datadir, os.R_OK | os.W_OK | os.X_OK):
        raise SystemExit(f"chaincore: datadir {datadir} is not readable and writable")
    lock = lock_datadir(datadir)
    try:
        store = SqliteStore(os.path.join(datadir, STORE_FILE), params.name, params.genesis_hash)
    except StoreError as e:
        lock.close()
        raise SystemExit(f"chaincore: {e}")
    except OSError as e:
        lock.close()
        raise SystemExit(f"chaincore: cannot open datadir {datadir}: {e.strerror}")
    if store.upgraded:
        log.info("{what}", what=store.upgraded)
    return CachedStore(store), lock


def exposure_warning(options) -> str | None:
    """A warning when the node listens beyond loopback but advertises no URL others can reach."""
    if options["advertise"]:
        return None
    endpoint = options["endpoint"]
    if not endpoint.startswith(("tcp:", "tcp6:", "ssl:")):
        return None
    m = re.search(r"(?:^|:)interface=((?:\\:|[^:])*)", endpoint)
    interface = (m.group(1).replace("\\:", ":") if m else "") or "0.0.0.0"
    try:
        if ipaddress.ip_address(interface).is_loopback:
            return None
    except ValueError:
        if interface == "localhost":
            return None
    port = options["port_number"] or (re.match(r"\w+:(\d+)", endpoint) or [None, "PORT"])[1]
    scheme = "https" if endpoint.startswith("ssl:") else "http"
    return (f"listening on {interface}, reachable from other machines, but advertising "
            f"{scheme}://localhost:{port} to peers: give --advertise {scheme}://HOST:{port} with a name "
            "or address they can reach")


PEER_HOSTS_REFRESH_S = 1.0  # a peer that just became active gets its budget within this long


def peer_hosts(directory) -> set:
    """The hosts of a directory's active peers: their clients get the peers' budgets.  Only peers that
    answered as nodes of our network count: anyone may name itself a candidate (X-ChainCore-Peer)."""
    hosts = set()
    for url in directory.active_urls():
        host = urlsplit(url).hostname
        if host:
            hosts.add(host)
    return hosts


COOPERATE_SLICE_S = 0.002  # how long slices of long answers may run before the reactor serves others


def time_sliced_cooperator(reactor, slice_s: float = COOPERATE_SLICE_S) -> Cooperator:
    """A Cooperator that runs long answers' slices for at most slice_s in a row (task.cooperate's global one
    runs them for 10 ms), so a request such as /status waits a slice, not a whole answer."""
    def slice_ends():
        end = time.monotonic() + slice_s
        return lambda: time.monotonic() >= end

    return Cooperator(terminationPredicateFactory=slice_ends, scheduler=lambda work: reactor.callLater(0, work))


def build_node(store, params, clock, *, advertise_url: str, http=None, offloader=None, datadir=None,
               seeds=(), discover_ports=(), own_port=None, mine=None, make_timer=every, metrics=None,
               verify=None, reactor=None, lock=None, endpoint=None, cooperate=None,
               limits: NodeLimits | None = None, outbound=None) -> NodeService:
    """A whole node as a NodeService: Node, NodeAPI and its Site, PeerNetwork, miner, metrics, listeners.

    `http` is the treq HTTPClient peers are reached through (a pooled one when
    None); `offloader` runs CPU work (signature batches, --mine nonce ranges),
    None to run it inline; `clock` drives every timer; `endpoint`, when given,
    is where the site listens; `cooperate` schedules long answers (a
    time-sliced Cooperator on reactor, or task.cooperate without a reactor);
    `limits` are the clients' budgets (connections, deadlines, request tokens;
    NodeLimits' defaults when None).  Nothing is started.
    """
    limits = NodeLimits() if limits is None else limits
    metrics = NodeMetrics() if metrics is None else metrics
    if cooperate is None and reactor is not None:
        cooperate = time_sliced_cooperator(reactor).cooperate
    node = Node(store, params, clock, advertise_url=advertise_url.rstrip("/"), metrics=metrics,
                offloader=offloader, **({"verify": verify} if verify is not None else {}))
    peers = PeerNetwork(node, clock, make_timer=make_timer, datadir=datadir, seeds=seeds,
                        discover_ports=discover_ports, own_port=own_port, metrics=metrics, http=http,
                        **({"degree": outbound} if outbound else {}))
    # who hears what: the node tells relay and sync; sync tells relay when a catch-up brought blocks
    node.block_listeners.append(peers.relay.on_block)
    node.early_block_listeners.append(peers.relay.on_early_block)
    if reactor is not None:
        node.after_sends = lambda: after_two_turns(reactor)
    node.tx_listeners.append(peers.relay.on_tx)
    node.orphan_listeners.append(peers.sync.on_orphan)
    peers.sync.caught_up_listeners.append(peers.relay.on_caught_up)
    metrics.observe_chain(node)
    metrics.observe_peers(peers)
    events = EventHub()  # live events (/events) for the pages and wallets
    events.attach(node)
    node.mining_to = mine

    known = {"at": None, "hosts": set()}  # the active peers' hosts, read again at most once a second

    def classify(host, _peers=peers):
        now = clock.seconds()
        if known["at"] is None or now - known["at"] >= PEER_HOSTS_REFRESH_S or now < known["at"]:
            known["at"], known["hosts"] = now, peer_hosts(_peers)
        return classify_host(host, known["hosts"])

    budget = RequestBudget(clock, TokenBuckets(limits.rates), classify)
    api = NodeAPI(node, peers, metrics, cooperate, events=events, budget=budget)
    # kept-alive connections outlive the peers' slowest polls (p2p.peers.POLL_MAX_S), so an idle network
    # sends no handshakes and an announcement leaves on an open connection
    site = make_site(api.resource(), on_finish=metrics.observe_request, timeout_s=IDLE_CONNECTION_S)
    site.reactor = clock  # connections' idle timeouts run on the node's clock, as every other timer
    listening = guard(site, clock, connections=ConnectionTable(limits.max_connections, limits.per_address),
                      classify=classify, header_timeout_s=limits.header_timeout_s, body_grace_s=limits.body_grace_s,
                      body_min_bytes_per_s=limits.body_min_bytes_per_s,
                      on_refusal=lambda reason: metrics.refused("connection", reason))
    miner = None
    if mine:
        from .miner import MinerService  # only a mining node loads the miner and its nonce search
        miner = MinerService(node, clock, mine, offloader)
    top = NodeService(node, store, api=api, site=site, peers=peers, metrics=metrics, miner=miner,
                      datadir=datadir, reactor=reactor, lock=lock, listening=listening)
    HeartbeatService(events, clock).setServiceParent(top)
    if reactor is not None:  # a real process (tests share theirs): freed startup pages go back to the system
        make_timer(HEAP_TRIM_S, trim_heap, clock).setServiceParent(top)
    if endpoint is not None:  # listening first: peers that hear of us during startup can reach us
        http_service = StreamServerEndpointService(endpoint, listening)
        http_service._raiseSynchronously = True
        http_service.setServiceParent(top)
    peers.setServiceParent(top)
    if miner is not None:
        miner.setServiceParent(top)
    return top


def make_node_service(options, reactor=None):
    """The twistd service of one node, built from checked options."""
    if reactor is None:
        from twisted.internet import reactor  # the running reactor, installed by twistd or the caller
    params = NETWORKS[options["network"]]
    try:
        endpoint = serverFromString(reactor, options["endpoint"])
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise SystemExit(f"chaincore: bad --port {options['port']!r}: {e or 'no such listening socket'}")
    except OSError as e:  # e.g. ssl: with a key or certificate file that cannot be read
        raise SystemExit(f"chaincore: bad --port {options['port']!r}: {e.strerror or e}"
                         f"{': ' + e.filename if getattr(e, 'filename', None) else ''}")
    except ImportError as e:
        raise SystemExit(f"chaincore: --port {options['port']!r} needs a module that is not installed ({e.name}); "
                         "for ssl: endpoints, pip install 'chaincore[tls]'")
    if options["port_number"] is not None and options["port_number"] != 0:
        preflight_bind(options["interface"], options["port_number"])
    own_port = options["port_number"] or endpoint_port(endpoint)
    scheme = "https" if options["endpoint"].startswith("ssl:") else "http"
    advertise = options["advertise"] or (f"{scheme}://localhost:{own_port}" if own_port else None)
    if not advertise:
        raise SystemExit(f"chaincore: cannot tell which URL to advertise for --port {options['port']!r}; "
                         "give --advertise URL")
    warning = exposure_warning(options)
    if warning:
        log.warn(warning)
    store, lock = open_store(options["datadir"], params)
    top = build_node(store, params, reactor, offloader=ProcessOffloader(reactor), advertise_url=advertise,
                     datadir=options["datadir"], seeds=options["peers"], discover_ports=options["discover_ports"],
                     own_port=own_port, mine=options["mine"], reactor=reactor, lock=lock, endpoint=endpoint,
                     limits=options.get("limits"), outbound=options.get("outbound"))
    # twistd may fork (daemonize) between here and startService, and SQLite's locks would not follow the
    # connection into the daemon: close the store (the datadir's lock, an flock, survives the fork) and
    # open it again in the node's own process.
    store.close()
    top.reopen_store = store.inner.reopen
    return top
