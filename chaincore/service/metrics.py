"""Prometheus metrics of one node, in a registry of its own (two nodes in one process never collide)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class NodeMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self._children = {}  # (id of the metric, labels...) -> its labelled child
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
        # budgets: what the node refused to protect itself, so an operator sees an attack
        self.connections_refused = Counter("chaincore_connections_refused", "Connections refused at once, by "
                                           "reason (per-address or total cap).", ["reason"], registry=r)
        self.slow_clients = Counter("chaincore_slow_clients_closed", "Connections closed for a request too slow, "
                                    "by reason (header-timeout, body-too-slow).", ["reason"], registry=r)
        self.rate_limited = Counter("chaincore_rate_limited", "Requests answered 429 for an empty token bucket, "
                                    "by endpoint class.", ["endpoint_class"], registry=r)
        self.recent_reject_hits = Counter("chaincore_recent_reject_hits", "Transactions refused again from the "
                                          "recently-rejected set, without any check.", registry=r)
        self.signature_cache_hits = Counter("chaincore_signature_cache_hits", "Signature checks answered by the "
                                            "signature cache instead of a verification.", registry=r)
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

    def _child(self, metric, *labels):
        """metric.labels(*labels), remembered: prometheus_client validates labels and takes a lock on every
        call, and these run once per request or transaction.  The label sets are few (fixed names)."""
        key = (id(metric),) + labels
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < 1_000:  # a client's odd HTTP methods do not grow it without end
                self._children[key] = child
        return child

    def count(self, kind: str, outcome: str, reason: str = "") -> None:
        self._child(self.blocks if kind == "block" else self.txs, outcome, reason).inc()

    def refused(self, kind: str, label: str = "") -> None:
        """Count one refusal: "connection" (label: per-address, total, header-timeout, body-too-slow),
        "rate-limited" (label: the endpoint class), "recent-reject", "signature-cache" (a hit, not a refusal)."""
        if kind == "connection":
            if label in ("header-timeout", "body-too-slow"):
                self.slow_clients.labels(label).inc()
            else:
                self.connections_refused.labels(label).inc()
        elif kind == "rate-limited":
            self.rate_limited.labels(label).inc()
        elif kind == "recent-reject":
            self.recent_reject_hits.inc()
        elif kind == "signature-cache":
            self.signature_cache_hits.inc(float(label or 1))

    def observe_request(self, request, seconds: float) -> None:
        path = request.path.decode("ascii", "replace").strip("/").split("/")[0] or "root"
        if path not in _ENDPOINTS:
            path = "other"
        self._child(self.latency, path, request.method.decode("ascii", "replace")).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


_ENDPOINTS = {"root", "status", "chain", "peers", "transactions", "submit_block", "add_transaction", "block",
              "blocks", "headers", "tx", "balance", "utxos", "history", "mining", "metrics", "openapi.json"}
