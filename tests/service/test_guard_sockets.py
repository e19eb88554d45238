"""The connection guard of a wired node (build_node) on a real loopback port: slow headers, slow bodies, the
per-address cap, and a stopping node closing kept-alive connections."""

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import TestCase

from chaincore.service.config import NodeLimits
from tests.support.nodes import make_node
from tests.support.sockets import RawClients
from tests.support.waiting import free_port, wait_until


class WiredSocketTests(RawClients, TestCase):
    async def start(self, **limits):
        """A wired node on the real reactor, its guarded site listening on a free loopback port."""
        limits.setdefault("per_address", {"loopback": 3, "peer": 3, "stranger": 3})
        self.port = free_port()
        self.service = make_node(reactor, reactor=reactor, limits=NodeLimits(**limits),
                                 endpoint=serverFromString(reactor, f"tcp:{self.port}:interface=127.0.0.1"))
        self.service.startService()
        self.addCleanup(self.stop)

    async def stop(self):
        """Stop the node and wait until the server side of every connection is gone."""
        if self.service.running:
            await self.service.stopService()
        await wait_until(lambda: self.service.listening.connections.total == 0, 5, what="connections to close")

    async def test_slow_headers_are_cut(self):
        """Headers trickled to the node get 408 JSON and a close at the header deadline."""
        await self.start(header_timeout_s=0.5)
        client = await self.client()
        client.transport.write(b"GET /status HTTP/1.1\r\n")
        self.trickle(client, b"X")
        await wait_until(lambda: client.done.called, 5, what="the slow client to be closed")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408"))
        self.assertIn(b'{"error": "request headers not complete within 0.5 s", "code": "header-timeout"}',
                      client.received)
        self.assertIn(b'chaincore_slow_clients_closed_total{reason="header-timeout"} 1.0',
                      self.service.metrics.render())

    async def test_slow_body_is_cut(self):
        """A body trickled below the minimum rate gets 408 and a close after the grace."""
        await self.start(body_grace_s=0.3, body_min_bytes_per_s=5000)
        client = await self.client()
        client.transport.write(b"POST /submit_block HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 1000000\r\n\r\n")
        self.trickle(client, b"x" * 10)
        await wait_until(lambda: client.done.called, 5, what="the slow body to be cut")
        self.assertTrue(client.received.startswith(b"HTTP/1.1 408"))
        self.assertIn(b'reason="body-too-slow"} 1.0', self.service.metrics.render())

    async def test_per_address_cap(self):
        """A fourth connection from 127.0.0.1 gets 429 and a close; a held one still answers /status."""
        await self.start()
        held = [await self.client() for _ in range(3)]
        extra = await self.client()
        await wait_until(lambda: extra.done.called, 5, what="the extra connection to be refused")
        self.assertTrue(extra.received.startswith(b"HTTP/1.1 429"))
        self.assertIn(b"Retry-After: 5", extra.received)
        held[0].transport.write(b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n")
        await wait_until(lambda: b'"node_id"' in held[0].received, 5, what="the answer on a held connection")
        self.assertTrue(held[0].received.startswith(b"HTTP/1.1 200"))

    async def test_stopping_closes_kept_alive_connections(self):
        """A kept-alive connection that was answered is closed when the node stops."""
        await self.start()
        client = await self.client()
        client.transport.write(b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n")
        await wait_until(lambda: b'"node_id"' in client.received, 5, what="the answer")
        self.assertFalse(client.done.called)
        await self.service.stopService()
        await wait_until(lambda: client.done.called, 5, what="the kept-alive connection to close")

    async def test_the_sites_own_close_reaches_kept_alive_connections(self):
        """QuietSite.close_connections aborts a kept-alive connection of the bare site (Twisted 26.10's proxies)."""
        service = make_node(reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(service.site)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        client = await self.client()
        client.transport.write(b"GET /status HTTP/1.1\r\nHost: node\r\n\r\n")
        await wait_until(lambda: b'"node_id"' in client.received, 5, what="the answer")
        service.site.close_connections()
        await wait_until(lambda: client.done.called, 5, what="the kept-alive connection to be aborted")
