"""The CLIs' --node URL goes through the node's own peer URL check (core.peer_url)."""

from twisted.trial.unittest import SynchronousTestCase

from chaincore.cli.common import UsageError, node_url


class NodeUrlTests(SynchronousTestCase):
    def test_host_port_and_base_urls_are_taken(self):
        """host:port gets http://; a base URL loses its trailing slash and upper case."""
        self.assertEqual(node_url("localhost:5000"), "http://localhost:5000")
        self.assertEqual(node_url("HTTPS://Node.Example:8443/"), "https://node.example:8443")

    def test_what_the_peer_table_refuses_is_a_usage_error(self):
        """A path, user info, an out-of-range port or no host is a one-line usage error."""
        for text in ("http://localhost:5000/api", "http://u:p@localhost:5000", "localhost:0", "localhost:65536",
                     "http://", "ftp://localhost:5000"):
            err = self.assertRaises(UsageError, node_url, text)
            self.assertIn("node URL", str(err))
            self.assertNotIn("\n", str(err))
