"""Node CPU per request, part by part, in one process (docs/benchmarks.md, "HTTP API"), run by hand.

Builds the node's whole HTTP stack as `twistd chaincore` does (build_node: the
guard, the Site, Klein, the NodeAPI, the Node on a SqliteStore in a temporary
datadir, metrics, relay and event listeners), funds it through its own API,
and feeds it requests over an in-memory transport on a task.Clock, so that
nothing but the node's own work is timed: no sockets, no client, no other
process.  The signature batches are answered at once by a stand-in that still
encodes each batch and decodes its answer as the node does for its workers
(the verifying itself happens in a worker process, off the node's CPU).
It prints the process CPU time per request of `GET /status` and of `POST
/add_transaction` (JSON and canonical bytes), and how much of a transaction
each part took (inclusive; nested parts are inside their callers).

    PYTHONPATH=. python bench/apicost.py [--requests 4000] [--backend NAME]
"""

import argparse
import collections
import functools
import json
import os
import shutil
import sys
import tempfile
import time

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chaincore.core import keys, rules
from chaincore.core.params import REGTEST

import api  # bench/api.py, beside this script: funding and the pre-signed requests
from machine import describe


class AnsweringOffloader:
    """Stands in for the node's worker pool: every batch is encoded and its answer decoded, as for a worker,
    and every signature is answered valid (the bench's transactions are)."""

    workers = 2

    def run(self, fn, *args):
        return defer.maybeDeferred(fn, *args)

    def verify_groups(self, groups):
        rules.encode_groups(groups)
        return defer.succeed(rules.decode_answer(rules.encode_answer([True] * len(groups))))

    def verify_tx_bytes(self, raw_txs):
        rules.encode_txs(raw_txs)
        return defer.succeed(rules.decode_index(rules.encode_index(-1)))

    def shutdown(self):
        return defer.succeed(None)


class InMemoryNode:
    """One node built by build_node, reached through a kept-alive in-memory connection."""

    def __init__(self, datadir: str):
        from chaincore.service.wiring import build_node, open_store

        self.clock = Clock()
        self.clock.advance(time.time())
        store, self.lock = open_store(datadir, REGTEST)
        self.service = build_node(store, REGTEST, self.clock, advertise_url="http://127.0.0.1:5999",
                                  offloader=AnsweringOffloader(), datadir=datadir)
        self.transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 5999),
                                         peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.protocol = self.service.listening.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    def raw(self, request: bytes) -> tuple:
        """(status, body) of one raw HTTP/1.1 request."""
        self.transport.clear()
        self.protocol.dataReceived(request)
        head, _, body = self.transport.value().partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            body = dechunk(body)
        return int(head.split(b" ", 2)[1]), body

    def call(self, base: str, path: str, body=None, timeout_s: float = 30):
        """bench/api.py's call(), answered in memory."""
        if body is None:
            request = b"GET %s HTTP/1.1\r\nHost: node\r\n\r\n" % path.encode()
        else:
            data = json.dumps(body).encode()
            request = (b"POST %s HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (path.encode(), len(data), data))
        status, answer = self.raw(request)
        return status, json.loads(answer)


def dechunk(body: bytes) -> bytes:
    out = []
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out.append(rest[:n])
        body = rest[n + 2:]
    return b"".join(out)


class PartTimer:
    """CPU time spent inside chosen functions, by name (inclusive of what they call)."""

    def __init__(self):
        self.spent = collections.Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        spent = self.spent

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t0 = time.process_time_ns()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.process_time_ns() - t0

        setattr(owner, name, timed)


def cpu_per_request(node: InMemoryNode, requests) -> float:
    """Process CPU microseconds per request over requests, every answer checked to be a 200."""
    t0 = time.process_time()
    n = 0
    for raw in requests:
        status, body = node.raw(raw)
        assert status == 200, body[:200]
        n += 1
    return (time.process_time() - t0) / n * 1e6


def run(backend: str, n: int) -> None:
    keys.use_backend(backend)
    datadir = tempfile.mkdtemp(prefix="chaincore-apicost-")
    try:
        node = InMemoryNode(datadir)
        api.call = node.call  # funding and mining go through the same in-memory connection
        coins = api.fund("http://node", coinbases=max(1, (3 * n) // 1000 + 1), fanout=1000)
        status = b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n"
        json_spends = api.spend_requests(coins[:n], "node")
        binary_spends = api.spend_requests(coins[n:2 * n], "node", binary=True)
        timed = coins[2 * n:3 * n]
        cpu_per_request(node, [status] * 500)  # warm caches and code paths
        status_us = cpu_per_request(node, [status] * n)
        json_us = cpu_per_request(node, json_spends)
        binary_us = cpu_per_request(node, binary_spends)

        from chaincore.api import routes
        from chaincore.core.mempool import Mempool
        from chaincore.service import node as node_module
        from chaincore.service.workers import SignatureBatcher

        status_parts = PartTimer()
        status_parts.wrap(routes.NodeAPI, "_heard_from", "peer header (_heard_from)")
        status_parts.wrap(routes, "status_of", "the status object (status_of)")
        status_parts.wrap(routes, "conditional_json", "answer rendered (conditional_json)")
        status_timed_us = cpu_per_request(node, [status] * n)
        for owner, name in ((routes.NodeAPI, "_heard_from"), (routes, "status_of"), (routes, "conditional_json")):
            setattr(owner, name, getattr(owner, name).__wrapped__)

        parts = PartTimer()
        parts.wrap(routes.NodeAPI, "_charge", "request budget (_charge)")
        parts.wrap(routes.NodeAPI, "_heard_from", "peer header (_heard_from)")
        parts.wrap(node_module.Node, "refused_recently", "recently refused bodies (refused_recently)")
        parts.wrap(routes, "read_tx", "body read and decode (read_tx)")
        parts.wrap(node_module.Node, "submit_tx", "Node.submit_tx (the indented parts are inside it)")
        parts.wrap(Mempool, "check", "  mempool rules before signatures (Mempool.check)")
        parts.wrap(rules, "signature_checks", "  signature checks built (signature_checks)")
        parts.wrap(SignatureBatcher, "verify", "  batch: cache look-up, queue, encode, answer (SignatureBatcher.verify)")
        parts.wrap(node_module.Node, "_accept_tx", "  admission after the signatures (Node._accept_tx)")
        parts.wrap(Mempool, "accept", "    Mempool.accept")
        listeners = node.service.node.tx_listeners
        for i, listener in enumerate(list(listeners)):
            holder = type("Holder", (), {"f": staticmethod(listener)})
            parts.wrap(holder, "f", f"    listener {getattr(listener, '__qualname__', listener)}")
            listeners[i] = holder.f
        parts.wrap(routes, "json_body", "answer rendered (json_body)")
        timed_us = cpu_per_request(node, api.spend_requests(timed, "node"))
        node.service.store.close()
        node.lock.close()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)

    print(f"[{backend}] node CPU per request, in process ({n} requests each):")
    print(f"[{backend}]   GET /status                      {status_us:7.1f} us")
    print(f"[{backend}]   POST /add_transaction, JSON      {json_us:7.1f} us   ratio {status_us / json_us:.2f}")
    print(f"[{backend}]   POST /add_transaction, bytes     {binary_us:7.1f} us   ratio {status_us / binary_us:.2f}")
    for title, total, timer in (("GET /status", status_timed_us, status_parts),
                                ("POST /add_transaction, JSON", timed_us, parts)):
        print(f"[{backend}]   {title}, by part (a timed run: {total:.1f} us a request with the timers):")
        ours = 0
        for label, ns in timer.spent.items():
            us = ns / 1000 / n
            ours += 0 if label.startswith(" ") else us
            print(f"[{backend}]     {label:72s} {us:7.1f} us")
        print(f"[{backend}]     {'the rest: twisted.web, Klein, the guard, metrics, Deferreds':72s} "
              f"{total - ours:7.1f} us")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests of each kind")
    parser.add_argument("--backend", action="append", choices=keys.BACKEND_NAMES,
                        help="only this backend (repeatable); default every one installed")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    for backend in args.backend or keys.available_backends():
        run(backend, args.requests)


if __name__ == "__main__":
    main()
