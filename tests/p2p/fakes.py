"""Small fake peers and a fake network for p2p tests, with no sockets.

A `FakePeer` is a Klein app answering /status and /peers (and any canned
answer a test sets), recording what it was asked.  A `NodePeer` is a real
node built by the production factory (service.wiring.build_node: Node, NodeAPI,
PeerNetwork and the listeners between them) talking over a FakeNetwork, for
sync, relay and start-up tests.  A `FakeNetwork` is an IAgent
that routes each request by host:port to the fake registered there, or fails it
with ConnectionRefusedError when nobody listens or the fake is unreachable.
"""

import json
from urllib.parse import urlsplit

from klein import Klein
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from chaincore.core import jsonview, wire
from chaincore.core.block import HEADER_SIZE, Header
from chaincore.core.params import REGTEST
from chaincore.p2p.client import BytesBody
from tests.support.nodes import make_node

GENESIS_HEX = REGTEST.genesis_hash.hex()


def status_json(node_id: str, url: str, network: str = "regtest", genesis_hash: str = GENESIS_HEX,
                height: int = 0) -> dict:
    """A /status answer shaped as CONTRACT 2 says."""
    return {"node_id": node_id, "version": "0.1.0", "network": network, "genesis_hash": genesis_hash,
            "height": height, "blockchain_length": height + 1, "tip_hash": genesis_hash,
            "chainwork": "1", "target": "7f" + "ff" * 31, "peer_count": 0, "mempool_size": 0,
            "coinbase_maturity": 100, "block_reward": 5_000_000_000, "url": url, "syncing": False}


class FakePeer:
    """A fake node: configurable status and peer list, reachable or not, recording every request."""

    def __init__(self, url: str, node_id: str = None, *, network: str = "regtest",
                 genesis_hash: str = GENESIS_HEX, peers=(), reachable: bool = True):
        self.url = url
        self.status = status_json(node_id or "node-" + url.rsplit(":", 1)[-1], url, network, genesis_hash)
        self.peers = list(peers)
        self.reachable = reachable
        self.probes = 0           # GET /status attempts, refused ones included (counted by FakeNetwork)
        self.requests = []        # (method, path, X-ChainCore-Peer header, body bytes) of answered requests
        self.canned = {}          # path -> (code, raw bytes[, {header: value}]) answered instead of the normal route
        self.stalled = set()      # paths that never answer

    @property
    def node_id(self) -> str:
        return self.status["node_id"]

    def resource(self):
        app = Klein()

        @app.route("/", branch=True, methods=["GET", "POST"])
        def answer(request):
            path = request.path.decode()
            self.requests.append((request.method.decode(), path,
                                  request.getHeader("X-ChainCore-Peer"), request.content.read()))
            if path in self.stalled:
                return defer.Deferred()
            request.setHeader("Content-Type", "application/json")
            if path in self.canned:
                code, raw, *media = self.canned[path]
                request.setResponseCode(code)
                for name, value in (media[0] if media else {}).items():
                    request.setHeader(name, value)
                return raw
            if path == "/status":
                return json.dumps(self.status).encode()
            if path == "/peers":
                return json.dumps({"peers": self.peers, "active_peers": self.peers,
                                   "peer_count": len(self.peers)}).encode()
            request.setResponseCode(404)
            return json.dumps({"error": f"no route {path}"}).encode()

        return app.resource()


@implementer(IAgent)
class FakeNetwork:
    """An IAgent routing requests by host:port to FakePeers; `client()` wraps it in a treq HTTPClient."""

    def __init__(self):
        self._by_netloc = {}
        self._agents = {}
        self.refused = []         # URLs of requests that found nobody listening

    def add(self, peer: FakePeer, *also_at: str) -> FakePeer:
        """Make peer answer at its URL and at any other base URLs given."""
        agent = self._agents.setdefault(id(peer), RequestTraversalAgent(peer.resource()))
        for url in (peer.url,) + also_at:
            self._by_netloc[urlsplit(url).netloc] = (peer, agent)
        return peer

    def client(self) -> HTTPClient:
        return HTTPClient(self, data_to_body_producer=BytesBody)

    def request(self, method, uri, headers=None, bodyProducer=None):
        parts = urlsplit(uri.decode("ascii"))
        peer, agent = self._by_netloc.get(parts.netloc, (None, None))
        if peer is not None and method == b"GET" and parts.path == "/status":
            peer.probes += 1
        if peer is None or not peer.reachable:
            self.refused.append(uri.decode("ascii"))
            return defer.fail(ConnectionRefusedError(parts.netloc))
        return agent.request(method, uri, headers, bodyProducer)

    def flush(self):
        for agent in self._agents.values():
            agent.flush()


class NodePeer:
    """A whole node (make_node: MemoryStore, REGTEST) reaching others through `network`, seeded with
    `seeds`; add it to a FakeNetwork like a FakePeer.  `service` is its NodeService (not started); its
    p2p parts are `client`, `discovery`, `sync` and `relay`.

    It records every request, and a test can make paths stall (never answer),
    hold (answer when `release()` is called) or answer from `canned[path]`, a
    function of the request returning (code, JSON-ready object), to play a
    peer that lies or whose chain moves.
    """

    def __init__(self, url: str, clock, blocks=(), *, network=None, seeds=(), store=None):
        self.url = url
        network = FakeNetwork() if network is None else network  # a network of its own reaches nobody
        self.service = make_node(clock, blocks=blocks, advertise_url=url, http=network.client(), seeds=seeds,
                                 store=store)
        self.node = self.service.node
        self.api = self.service.api
        peers = self.service.peers
        self.client, self.discovery, self.sync, self.relay = peers.client, peers.discovery, peers.sync, peers.relay
        self.reachable = True
        self.probes = 0
        self.requests = []        # (method, path) of every request that reached the node
        self.queries = []         # (path, {name: value}) of every request's query
        self.posted = []          # (path, JSON body) of every POST (bytes as the same item's JSON)
        self.canned = {}          # path -> f(request) -> (code, obj), obj bytes for an octet-stream answer
        self.stalled = set()
        self.held = set()
        self.json_only = False    # play a node from before binary relay: 415 to bytes posted, JSON answers
        self._held_requests = []
        self._resource = _NodeResource(self)

    def count(self, path: str, method: str = "GET") -> int:
        """How many `method path` requests reached this peer."""
        return sum(1 for m, p in self.requests if (m, p) == (method, path))

    def tip(self) -> bytes:
        return self.node.chain.tip.hash

    def resource(self):
        return self._resource

    def release(self) -> int:
        """Answer every held request (then flush the FakeNetwork); how many were answered."""
        held, self._held_requests = self._held_requests, []
        for request in held:
            if not request._disconnected:
                self._resource.answer(request)
        return len(held)


def _posted_json(path: str, request):
    """A POST's body as JSON; canonical bytes (what relay sends) in the JSON form the same item has."""
    raw = request.content.read()
    if (request.getHeader(b"content-type") or b"").startswith(wire.MEDIA_TYPE.encode()):
        if path == "/submit_block":
            return {"block": jsonview.block_to_json(wire.decode_block(raw, REGTEST.max_block_size))}
        if path == "/announce":  # a header, or a compact form starting with it: the header as JSON, and the bytes
            return {"block": jsonview.header_to_json(Header.decode(raw[:HEADER_SIZE])), "bytes": raw}
        if path == "/send_compact":  # one byte: the choice as it came
            return {"bytes": raw}
        if path in ("/announce_txs", "/txs"):  # 32-byte ids concatenated: as the JSON list of hex ids
            return {"tx_ids": [raw[i:i + 32].hex() for i in range(0, len(raw), 32)]}
        return {"transaction": jsonview.tx_to_json(wire.decode_tx(raw, REGTEST.max_block_size))}
    return json.loads(raw or b"null")


class _NodeResource(Resource):
    isLeaf = True

    def __init__(self, peer: NodePeer):
        super().__init__()
        self._peer = peer
        self._api = peer.api.resource()

    def render(self, request):
        path = request.path.decode()
        self._peer.requests.append((request.method.decode(), path))
        self._peer.queries.append((path, {k.decode(): v[0].decode() for k, v in request.args.items()}))
        if request.method == b"POST":
            self._peer.posted.append((path, _posted_json(path, request)))
            request.content.seek(0)
        if path in self._peer.stalled:
            return NOT_DONE_YET
        if path in self._peer.held:
            self._peer._held_requests.append(request)
            return NOT_DONE_YET
        return self.answer(request)

    def answer(self, request):
        path = request.path.decode()
        if self._peer.json_only:
            request.requestHeaders.removeHeader(b"accept")  # it answers JSON whatever is asked
            if path in ("/announce", "/announce_txs", "/txs") and \
                    request.getHeader(b"content-type") == wire.MEDIA_TYPE.encode():
                request.setResponseCode(415)
                request.setHeader(b"Content-Type", b"application/json")
                request.write(b'{"error": "Content-Type must be application/json"}')
                request.finish()
                return NOT_DONE_YET
        if path in self._peer.canned:
            code, obj = self._peer.canned[path](request)
            request.setResponseCode(code)
            binary = isinstance(obj, bytes)
            request.setHeader(b"Content-Type", wire.MEDIA_TYPE.encode() if binary else b"application/json")
            body = obj if binary else json.dumps(obj).encode()
        else:
            body = self._api.render(request)
        if body is not NOT_DONE_YET:
            request.write(body)
            request.finish()
        return NOT_DONE_YET
