"""Requests that go wrong before any route runs: every answer is still a JSON error (CONTRACT 2).

A path or Host header that is not UTF-8, or a Host that cannot be a host
name, is refused by the resource in front of the routes; the node keeps
answering the next request as before.
"""

from twisted.trial.unittest import SynchronousTestCase

from ..support.api import APIClient, assert_error, funded_node


class BeforeRoutesTests(SynchronousTestCase):
    def setUp(self):
        self.client = APIClient(self, funded_node())

    def test_path_not_utf8(self):
        """A path whose percent escapes are not UTF-8 answers 400 JSON (malformed), as any bad parameter."""
        for path in ("/block/%ff%fe", "/balance/%ff", "/%c3"):
            assert_error(self, self.client.get(path), 400, "malformed")
        self.assertEqual(self.client.get("/status").status, 200)

    def test_host_not_utf8(self):
        """A Host header that is not UTF-8 answers 400 JSON (malformed)."""
        assert_error(self, self.client.get("/status", headers={b"Host": [b"\xff\xfe"]}), 400, "malformed")

    def test_host_not_a_host_name(self):
        """A Host header no host could have (a label over 63 characters) answers 400 JSON, not a 500 page."""
        for host in (b"a" * 64, b"a" * 5000 + b":5000"):
            assert_error(self, self.client.get("/status", headers={b"Host": [host]}), 400, "malformed")
        self.assertEqual(self.client.get("/status").status, 200)
