"""The CLIs' NodeClient against nodes that misbehave: every answer it cannot use is one CliError line."""

import io
import socket
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from chaincore.cli.common import CliError, NodeClient, NodeRefused, NodeUnreachable, run_main

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


class TimeLimitTests(SynchronousTestCase):
    def test_trickled_answer_hits_the_time_limit(self):
        """A node sending its answer a byte at a time cannot hold the client past its time limit."""
        node = FakeNode(self)
        node.answers[("GET", "/status")] = (200, Raw(b" " * 1_000 + b"{}", pause_s=0.05))
        started = time.monotonic()
        err = self.assertRaises(NodeUnreachable, NodeClient(node.url, timeout_s=5, total_timeout_s=0.5).get,
                                "/status")
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("no complete answer", str(err))
        self.assertIn("within 0.5 s", str(err))

    def test_trickled_error_hits_the_time_limit(self):
        """The body of an error answer is under the same time limit."""
        node = FakeNode(self)
        node.answers[("POST", "/add_transaction")] = (400, Raw(b" " * 1_000, pause_s=0.05))
        started = time.monotonic()
        err = self.assertRaises(NodeUnreachable, NodeClient(node.url, timeout_s=5, total_timeout_s=0.5).post,
                                "/add_transaction", {})
        self.assertLess(time.monotonic() - started, 5)
        self.assertIn("within 0.5 s", str(err))

    def test_silent_node_hits_the_time_limit(self):
        """A node that never answers is given up on with the same one-line reason."""
        node = FakeNode(self)
        node.answers[("GET", "/status")] = lambda seen: (time.sleep(2), (200, {}))[1]
        err = self.assertRaises(NodeUnreachable, NodeClient(node.url, timeout_s=5, total_timeout_s=0.3).get,
                                "/status")
        self.assertIn("within 0.3 s", str(err))


class LongErrorTests(SynchronousTestCase):
    def test_huge_error_message_is_cut(self):
        """A node's error message of megabytes is cut to a readable length, still one line."""
        node = FakeNode(self)
        node.answers[("GET", "/status")] = (400, {"error": "bad\n " * 1_000_000})
        err = self.assertRaises(NodeRefused, NodeClient(node.url).get, "/status")
        self.assertLess(len(str(err)), 400)
        self.assertTrue(str(err).startswith("the node refused (400): bad bad bad"), str(err)[:80])

    def test_every_error_line_is_cut(self):
        """run_main prints at most a screenful for any error, however long its text."""
        stderr = io.StringIO()

        def body(argv):
            raise CliError("x" * 100_000)
        self.assertEqual(run_main("prog", body, [], stderr), 1)
        line = stderr.getvalue()
        self.assertEqual(len(line.splitlines()), 1)
        self.assertLess(len(line), 1_000)
        self.assertTrue(line.rstrip().endswith("..."), line[-20:])


class NotHTTPTests(SynchronousTestCase):
    def test_answer_that_is_not_http(self):
        """A server answering bytes that are not HTTP is named as such, without echoing the bytes."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.addCleanup(server.close)

        def answer():
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"\x00\xffSSH-2.0-garbage\r\n\r\n")
        threading.Thread(target=answer, daemon=True).start()
        err = self.assertRaises(NodeUnreachable, NodeClient(f"http://127.0.0.1:{server.getsockname()[1]}").get,
                                "/status")
        self.assertIn("does not answer in HTTP", str(err))
        self.assertNotIn("garbage", str(err))
