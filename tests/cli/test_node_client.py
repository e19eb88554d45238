"""The CLIs' NodeClient against nodes that misbehave: every answer it cannot use is one CliError line."""

import time

from twisted.trial.unittest import SynchronousTestCase

from chaincore.cli.common import CliError, NodeClient, NodeRefused, NodeUnreachable

from .fakenode import FakeNode, Raw


class HostileAnswerTests(SynchronousTestCase):
    def setUp(self):
        self.node = FakeNode(self)

    def test_deeply_nested_json_is_refused(self):
        """An answer nested too deep for the JSON parser is a CliError, not a RecursionError."""
        self.node.answers[("GET", "/status")] = (200, Raw(b"[" * 100_000 + b"]" * 100_000))
        err = self.assertRaises(CliError, NodeClient(self.node.url).get, "/status")
        self.assertIn("not JSON", str(err))

    def test_deeply_nested_error_answer_is_shown_as_text(self):
        """A 4xx answer nested too deep to parse is reported as the node's refusal, not a RecursionError."""
        self.node.answers[("GET", "/status")] = (400, Raw(b"[" * 100_000 + b"]" * 100_000))
        err = self.assertRaises(NodeRefused, NodeClient(self.node.url).get, "/status")
        self.assertIn("(400)", str(err))
