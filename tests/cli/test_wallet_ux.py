"""chaincore-wallet for people (CONTRACT 7): the balance split, the default fee, CHAINCORE_NODE, --version,
history pages, a closed pipe, and `send --wait` through /events or polling."""

import http.server
import io
import os
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from chaincore import __version__
from chaincore.cli import miner, wallet
from chaincore.cli.common import NodeClient
from chaincore.cli.events import EventStream, wait_for_confirmations
from chaincore.core.params import COIN
from tests.support.builders import CAROL

from .fakenode import FakeNode
from .test_wallet import CliCase, WalletNode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BalanceAndNodeTests(CliCase):
    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = FakeNode(self)
        self.node.answers[("GET", f"/balance/{self.address}")] = (200, {
            "address": self.address, "balance": 5_089 * COIN, "confirmed": 5_100 * COIN,
            "unconfirmed": -11 * COIN, "spendable": 139 * COIN, "immature": 4_950 * COIN})

    def test_balance_shows_spendable_immature_and_unconfirmed(self):
        """balance prints spendable, immature and unconfirmed amounts, so rewards are never shown as spendable."""
        out = self.ok("balance", "--wallet", self.path, "--node", self.node.url)
        self.assertIn("spendable    139.00000000", out)
        self.assertIn("immature     4950.00000000", out)
        self.assertIn("unconfirmed  -11.00000000", out)

    def test_node_from_the_environment(self):
        """Without --node, CHAINCORE_NODE names the node; without either, one line says --node is needed."""
        out = self.ok("balance", "--wallet", self.path, env={**self.env, "CHAINCORE_NODE": self.node.url})
        self.assertIn("spendable", out)
        self.fails(2, "--node", "balance", "--wallet", self.path)

    def test_version_everywhere(self):
        """--version answers on the wallet, each of its commands and the miner, with ChainCore's version."""
        runs = [lambda argv=argv: wallet.main(argv, env=self.env, prompt=None, stderr=io.StringIO())
                for argv in (["--version"], ["balance", "--version"], ["send", "--version"], ["create", "--version"])]
        runs.append(lambda: miner.main(["--version"], stderr=io.StringIO()))
        for n, run in enumerate(runs):
            out = io.StringIO()
            sys_stdout, sys.stdout = sys.stdout, out  # argparse's version action prints to sys.stdout
            try:
                self.assertEqual(run(), 0)
            finally:
                sys.stdout = sys_stdout
            name = "chaincore-miner" if n == len(runs) - 1 else "chaincore-wallet"
            self.assertEqual(out.getvalue().strip(), f"{name} {__version__}")


class HistoryPagingTests(CliCase):
    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = FakeNode(self)
        rows = [{"tx_id": f"{n:064x}", "height": 300 - n, "confirmations": n + 1, "amount_delta": COIN}
                for n in range(250)]

        def history(seen):
            start = int(seen.query.get("cursor", 0))
            limit = int(seen.query.get("limit", 50))
            end = start + limit
            return 200, {"history": rows[start:end], "next": str(end) if end < len(rows) else None}

        self.node.answers[("GET", f"/history/{self.address}")] = history

    def test_all_pages_by_default(self):
        """history prints every row, asking the node page by page."""
        out = self.ok("history", "--wallet", self.path, "--node", self.node.url)
        self.assertEqual(len(out.splitlines()), 250)
        self.assertEqual(len(self.node.seen("GET", f"/history/{self.address}")), 3)

    def test_limit_says_how_to_go_on(self):
        """With --limit the output stops there and one line on stderr gives the cursor to go on from."""
        code, out, err = self.run_wallet("history", "--wallet", self.path, "--node", self.node.url, "--limit", "20")
        self.assertEqual((code, len(out.splitlines())), (0, 20))
        self.assertIn("--cursor 20", err)
        out = self.ok("history", "--wallet", self.path, "--node", self.node.url, "--limit", "5", "--cursor", "20")
        self.assertTrue(out.startswith(f"{20:064x}"), out[:80])

    def test_pages_that_loop_are_an_error(self):
        """A node whose `next` leads back to a page already read gets one line, not endless output."""
        self.node.answers[("GET", f"/history/{self.address}")] = (200, {"history": [
            {"tx_id": "aa" * 32, "height": 3, "confirmations": 5, "amount_delta": COIN}], "next": "again"})
        self.fails(1, "loop", "history", "--wallet", self.path, "--node", self.node.url)
        self.assertEqual(len(self.node.seen("GET", f"/history/{self.address}")), 2)
        self.node.answers[("GET", f"/history/{self.address}")] = (200, {"history": [], "next": {"a": 1}})
        self.fails(1, "malformed", "history", "--wallet", self.path, "--node", self.node.url)

    def test_closed_pipe_is_quiet(self):
        """`history | head -1` prints one line and no traceback: the wallet stops quietly when its reader goes."""
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "CHAINCORE_WALLET_PASSPHRASE": ""}
        cmd = (f"{sys.executable} -m chaincore.cli.wallet history --wallet {self.path} --node {self.node.url}"
               " | head -1")
        done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(len(done.stdout.splitlines()), 1)
        self.assertNotIn("Traceback", done.stderr)
        self.assertNotIn("BrokenPipe", done.stderr)


class DefaultFeeTests(CliCase):
    def setUp(self):
        super().setUp()
        self.address = self.create()
        self.node = WalletNode(self)
        self.node.answers[("GET", "/fees")] = (200, {"fee_rate": 3, "min_fee_rate": 1})

    def test_fee_follows_the_node_rate_and_the_size(self):
        """Without --fee, the wallet pays the node's /fees rate times the signed transaction's size."""
        for _ in range(3):
            self.node.fund(self.address, 2 * COIN)
        code, out, err = self.run_wallet("send", "--wallet", self.path, "--node", self.node.url,
                                         "--to", CAROL.address, "--amount", "5")
        self.assertEqual(code, 0, err)
        (tx,) = self.node.posted()
        fee = 6 * COIN - tx.output_total
        self.assertEqual(len(tx.inputs), 3)
        self.assertEqual(fee, 3 * tx.size)
        self.assertIn("3 units/byte from the node", out)

    def test_node_rate_making_the_fee_over_the_amount_is_refused(self):
        """A node whose rate would make the fee larger than the payment gets one line, and nothing is sent."""
        self.node.fund(self.address, 50 * COIN)
        self.node.answers[("GET", "/fees")] = (200, {"fee_rate": 1_000_000})
        self.fails(1, "--allow-high-fee", "send", "--wallet", self.path, "--node", self.node.url,
                   "--to", CAROL.address, "--amount", "1")
        self.assertEqual(self.node.posted(), [])

    def test_bad_fee_answer_is_one_line(self):
        """A node whose /fees answer is not a sane rate gets one line asking for --fee."""
        self.node.fund(self.address, 2 * COIN)
        self.node.answers[("GET", "/fees")] = (200, {"fee_rate": "lots"})
        self.fails(1, "give --fee", "send", "--wallet", self.path, "--node", self.node.url,
                   "--to", CAROL.address, "--amount", "1")


class _SSEHandler(http.server.BaseHTTPRequestHandler):
    frames = []
    seen_ids = []
    trickle_s = 0.0  # when set, each frame goes out a byte at a time, this long apart

    def do_GET(self):
        type(self).seen_ids.append(self.headers.get("Last-Event-ID"))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for frame in type(self).frames:
                for piece in ([frame[n:n + 1] for n in range(len(frame))] if self.trickle_s else [frame]):
                    self.wfile.write(piece)
                    self.wfile.flush()
                    time.sleep(self.trickle_s)
        except OSError:
            pass  # the reader hung up

    def log_message(self, *args):
        pass


class EventStreamTests(SynchronousTestCase):
    def serve(self, frames, trickle_s=0.0):
        handler = type("Handler", (_SSEHandler,), {"frames": frames, "seen_ids": [], "trickle_s": trickle_s})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return handler, f"http://127.0.0.1:{server.server_address[1]}"

    def test_reads_events_and_resumes_with_the_last_id(self):
        """The reader parses events (skipping comments) and reconnects with the last id it saw."""
        handler, url = self.serve([b"retry: 3000\n\n: keep-alive\n\n",
                                   b'id: r-7\nevent: block\ndata: {"height": 7}\n\n'])
        stream = EventStream(url)
        self.addCleanup(stream.close)
        self.assertEqual(stream.next(5), ("block", {"height": 7}))
        self.assertIsNone(stream.next(5))  # the fake closes the stream
        stream.open()
        self.assertEqual(handler.seen_ids, [None, "r-7"])

    def test_event_too_deeply_nested_is_read_as_empty(self):
        """An event whose data nests deeper than the JSON parser goes comes out with empty data, no RecursionError."""
        _, url = self.serve([b"event: block\ndata: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"])
        stream = EventStream(url)
        self.addCleanup(stream.close)
        self.assertEqual(stream.next(5), ("block", {}))

    def test_trickled_stream_keeps_the_time_limit(self):
        """A stream trickling bytes that never end a line cannot hold a reader past the time it was given."""
        _, url = self.serve([b"x" * 10_000], trickle_s=0.05)
        stream = EventStream(url)
        self.addCleanup(stream.close)
        started = time.monotonic()
        self.assertIsNone(stream.next(0.5))
        self.assertLess(time.monotonic() - started, 5)

    def test_polls_a_node_without_events(self):
        """Against a node without /events, waiting polls /tx until the confirmations are there."""
        node = FakeNode(self)
        confirmations = [0]
        node.answers[("GET", "/tx/" + "ab" * 32)] = lambda seen: (200, {"confirmations": confirmations[0]})
        notes = []

        def sleep(_s):
            confirmations[0] += 1

        count = wait_for_confirmations(NodeClient(node.url), "ab" * 32, 2, 60, progress=notes.append,
                                       sleep=sleep)
        self.assertEqual(count, 2)
        self.assertEqual(len(notes), 3)

    def test_wait_gives_up_at_the_timeout(self):
        """Waiting past the timeout is one CliError naming the confirmations reached."""
        from chaincore.cli.common import CliError
        node = FakeNode(self)
        node.answers[("GET", "/tx/" + "ab" * 32)] = (200, {"confirmations": 1})
        now = [0.0]

        def sleep(s):
            now[0] += s

        err = self.assertRaises(CliError, wait_for_confirmations, NodeClient(node.url), "ab" * 32, 3, 10,
                                clock=lambda: now[0], sleep=sleep)
        self.assertIn("1 of 3", str(err))
        self.assertIsNotNone(wallet)
