"""Wiring one node into twistd: the store, the Node, the HTTP site, peers and the miner, as one MultiService.

Everything that can fail at start (a bad endpoint, a port in use, a datadir
that cannot be opened or belongs to another network) fails inside
makeService with one line and exit status 1, before twistd daemonizes.
"""

import fcntl
import ipaddress
import os
import re
import socket

from twisted.application import service
from ..logs import logger

from ..core.params import NETWORKS

log = logger("chaincore.service")

STORE_FILE = "chain.sqlite"


class NodeService(service.MultiService):
    """The node's top service: closes the store after every child (site, timers, miner) has stopped."""

    def __init__(self, node, store, datadir, reactor=None, site=None, lock=None):
        super().__init__()
        self.node = node
        self.store = store
        self.lock = lock  # the datadir's lock file, released when the store is closed
        self.datadir = datadir
        self.reactor = reactor
        self.site = site

    def startService(self):
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
            from twisted.internet.task import deferLater
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
    from ..storage.sqlite import SqliteStore, StoreError
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
    return store, lock


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


def make_node_service(options, reactor=None):
    """The twistd service of one node, built from checked options."""
    if reactor is None:
        from twisted.internet import reactor
    from twisted.application.internet import StreamServerEndpointService
    from twisted.internet.endpoints import serverFromString

    from ..api.request import make_site
    from ..api.routes import NodeAPI
    from .metrics import NodeMetrics
    from .node import Node

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
    metrics = NodeMetrics()
    from .workers import ProcessOffloader
    offloader = ProcessOffloader(reactor)
    node = Node(store, params, reactor, advertise_url=(advertise or "").rstrip("/"), metrics=metrics,
                offloader=offloader)
    from ..api.events import EventHub, HeartbeatService  # live events (/events) for pages and wallets
    events = EventHub()
    events.attach(node)
    node.mining_to = options["mine"]
    site = make_site(NodeAPI(node, metrics, events=events).resource(), on_finish=metrics.observe_request)
    top = NodeService(node, store, options["datadir"], reactor, site, lock)
    top.metrics = metrics
    top.events = events
    HeartbeatService(events, reactor).setServiceParent(top)

    http = StreamServerEndpointService(endpoint, site)
    http._raiseSynchronously = True
    http.setServiceParent(top)

    from ..p2p.service import PeerService
    peers = PeerService(node, reactor, datadir=options["datadir"], seeds=options["peers"],
                        discover_ports=options["discover_ports"], own_port=own_port,
                        metrics=metrics)
    peers.setServiceParent(top)
    top.peers = peers

    if options["mine"]:
        from .miner import MinerService
        MinerService(node, reactor, options["mine"]).setServiceParent(top)
    return top
