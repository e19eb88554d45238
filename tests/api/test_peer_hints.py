"""X-ChainCore-Peer makes the node probe a URL only when that URL names the client that sent it."""

from twisted.internet.address import IPv4Address
from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.routes import names_sender, peer_url

from ..support.api import APIClient, assert_error, assert_json, funded_node


class FakeRequest:
    def __init__(self, host, peer=None):
        self.host, self.peer = host, peer

    def getHeader(self, name):
        return self.peer.encode() if name.lower() == b"x-chaincore-peer" and self.peer else None

    def getClientAddress(self):
        return IPv4Address("TCP", self.host, 40000)


class NamesSenderTests(SynchronousTestCase):
    def test_loopback_client_may_name_a_loopback_url(self):
        """A local node announces itself as localhost or a loopback address."""
        for url in ("http://localhost:5001", "http://127.0.0.1:5001", "http://127.0.0.2:5001"):
            self.assertTrue(names_sender(FakeRequest("127.0.0.1"), url), url)

    def test_loopback_client_may_not_name_another_host(self):
        """A local client cannot make the node probe a host elsewhere."""
        for url in ("http://10.0.0.5:5001", "http://example.org:5001"):
            self.assertFalse(names_sender(FakeRequest("127.0.0.1"), url), url)

    def test_remote_client_names_only_itself(self):
        """A remote peer is believed about its own address only."""
        self.assertTrue(names_sender(FakeRequest("203.0.113.7"), "http://203.0.113.7:5000"))
        self.assertFalse(names_sender(FakeRequest("203.0.113.7"), "http://203.0.113.8:5000"))
        self.assertFalse(names_sender(FakeRequest("203.0.113.7"), "http://localhost:5000"))

    def test_unparsable_url_is_no_peer_url(self):
        """An X-ChainCore-Peer URL that does not parse (an unclosed IPv6 bracket, a bracketed name, a port that
        is not a number) is taken for no header, so nothing that reads a sender sees it."""
        for url in ("http://[::1", "http://[zz]:5000", "http://[127.0.0.1]:5000", "http://host:port"):
            self.assertIsNone(peer_url(FakeRequest("127.0.0.1", url)), url)
        self.assertEqual(peer_url(FakeRequest("127.0.0.1", "http://[::1]:5000")), "http://[::1]:5000")


class PeerHeaderTests(SynchronousTestCase):
    def test_unparsable_peer_header_is_ignored(self):
        """An X-ChainCore-Peer header that does not parse as a URL is taken for no header: /status answers
        200 and a bad transaction its 400, never a 500."""
        client = APIClient(self, funded_node())
        for url in ("http://[::1", "http://[zz]:5000"):
            answer = client.get("/status?outbound=1", headers={"X-ChainCore-Peer": url})
            self.assertEqual(answer.status, 200, answer.body[:200])
            assert_json(self, answer)
            answer = client.post("/add_transaction", {"transaction": None}, headers={"X-ChainCore-Peer": url})
            assert_error(self, answer, 400, "malformed")
