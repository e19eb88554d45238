"""Prometheus metrics of one node, in a registry of its own (two nodes in one process never collide)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("chaincore_height", "Height of the active chain's tip.", registry=r)
        self.peers = Gauge("chaincore_peers", "Active peers.", registry=r)
        self.known_peers = Gauge("chaincore_known_peers", "Known peers, reachable or not.", registry=r)
        self.mempool = Gauge("chaincore_mempool_transactions", "Transactions in the mempool.", registry=r)
        self.mempool_bytes = Gauge("chaincore_mempool_bytes", "Bytes of transactions in the mempool.", registry=r)
        self.blocks = Counter("chaincore_blocks", "Blocks received, by outcome and rejection reason.",
                              ["outcome", "reason"], registry=r)
        self.txs = Counter("chaincore_transactions", "Transactions received, by outcome and rejection reason.",
                           ["outcome", "reason"], registry=r)
        self.sync_rounds = Counter("chaincore_sync_rounds", "Synchronisation rounds run, by result.",
                                   ["result"], registry=r)
        self.latency = Histogram("chaincore_request_seconds", "HTTP request latency by endpoint.",
                                 ["endpoint", "method"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    def observe_chain(self, node) -> None:
        """Read height and mempool gauges from node when scraped."""
        self.height.set_function(lambda: node.chain.height)
        self.mempool.set_function(lambda: len(node.mempool))
        self.mempool_bytes.set_function(lambda: node.mempool.total_bytes)

    def observe_peers(self, directory) -> None:
        """Read the peer gauges from a peer directory (known_urls, active_urls) when scraped."""
        self.peers.set_function(lambda: len(directory.active_urls()))
        self.known_peers.set_function(lambda: len(directory.known_urls()))

    def count(self, kind: str, outcome: str, reason: str = "") -> None:
        (self.blocks if kind == "block" else self.txs).labels(outcome, reason).inc()

    def observe_request(self, request, seconds: float) -> None:
        path = request.path.decode("ascii", "replace").strip("/").split("/")[0] or "root"
        if path not in _ENDPOINTS:
            path = "other"
        self.latency.labels(path, request.method.decode("ascii", "replace")).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_ENDPOINTS = {"root", "status", "chain", "peers", "transactions", "submit_block", "add_transaction", "block",
              "blocks", "headers", "tx", "balance", "utxos", "history", "mining", "metrics", "openapi.json"}
