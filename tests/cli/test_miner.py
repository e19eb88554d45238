"""chaincore-miner against a fake node: solved blocks, stale templates, stopping and every error path."""

import concurrent.futures
import io
import os
import signal
import subprocess
import sys
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from chaincore.cli import miner
from chaincore.cli.common import NodeClient
from chaincore.core.block import NONCE_OFFSET, NONCE_SIZE
from chaincore.core.jsonview import block_to_json, parse_block
from chaincore.core.params import REGTEST
from tests.support.builders import ALICE, BOB, make_block

from .fakenode import FakeNode

EASY = REGTEST.pow_limit
HARD = (1 << 256) >> 10  # about 1,000 hashes a block
IMPOSSIBLE = 0


class MiningNode(FakeNode):
    """A fake node with a tip, serving templates on it and taking blocks that extend it."""

    def __init__(self, testcase, target=EASY, targets=None):
        super().__init__(testcase)
        self.tip = REGTEST.genesis
        self.accepted = []
        self.targets = list(targets or [])
        self.target = target
        self.refuse_next = 0
        self.elsewhere_at_status = None  # the nth GET /status sees a block from another miner
        self.elsewhere = []
        self.answers.update({
            ("GET", "/status"): self.status,
            ("GET", "/mining/template"): self.template,
            ("POST", "/submit_block"): self.submit_block,
        })

    def status(self, seen):
        if len(self.seen("GET", "/status")) == self.elsewhere_at_status:
            self.elsewhere.append(self.extend_elsewhere())
        return 200, {"tip_hash": self.tip.hash.hex(), "height": self.tip.height, "mempool_size": 0}

    def extend_elsewhere(self):
        """A block from another miner becomes the tip."""
        self.tip = make_block(self.tip, pay_to=ALICE)
        return self.tip

    def template(self, seen):
        target = self.targets.pop(0) if self.targets else self.target
        block = make_block(self.tip, pay_to=ALICE, target=target, mine=False)
        view = block_to_json(block)
        del view["hash"]
        return 200, dict(view, block=dict(view), header_hex=block.header.with_nonce(0).raw.hex(),
                         nonce_offset=NONCE_OFFSET, nonce_size=NONCE_SIZE, target=f"{target:064x}")

    def submit_block(self, seen):
        block = parse_block(seen.body["block"])
        if not block.header.has_valid_pow:
            return 400, {"error": "proof of work does not meet the target"}
        if block.header.previous_hash != self.tip.hash:
            return 400, {"error": "stale block"}
        if self.refuse_next:
            self.refuse_next -= 1
            return 400, {"error": "refused for the test"}
        self.tip = block
        self.accepted.append(block)
        return 200, {"status": "accepted", "block_hash": block.hash.hex(), "height": block.height,
                     "main_chain": True}


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = miner.main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


class MinerTests(SynchronousTestCase):
    def test_mines_two_blocks_then_stops(self):
        """--blocks 2 submits two blocks with valid proof of work on successive tips, then exits 0 with a summary."""
        node = MiningNode(self)
        code, out, err = run(["--node", node.url, "--address", ALICE.address, "--workers", "2", "--blocks", "2"])
        self.assertEqual(code, 0, err)
        self.assertEqual([b.height for b in node.accepted], [1, 2])
        self.assertEqual(node.accepted[1].header.previous_hash, node.accepted[0].hash)
        for seen in node.seen("POST", "/submit_block"):
            self.assertTrue(parse_block(seen.body["block"]).header.has_valid_pow)
            self.assertEqual(seen.headers.get("x-local-mining"), "true")
        self.assertEqual(node.seen("GET", "/mining/template")[0].query, {"address": ALICE.address})
        self.assertIn("mined 2 blocks", out)
        self.assertNotIn("Traceback", err)

    def test_searches_past_invalid_nonces(self):
        """Against a harder target the miner submits the nonce the search found, with valid proof of work."""
        node = MiningNode(self, target=HARD)
        code, out, err = run(["--node", node.url, "--address", ALICE.address, "--workers", "1", "--blocks", "1"])
        self.assertEqual(code, 0, err)
        (block,) = node.accepted
        self.assertTrue(block.header.has_valid_pow)
        self.assertEqual(block.header.target, HARD)

    def test_refused_block_is_logged_and_mining_goes_on(self):
        """A block the node refuses is reported on stderr and does not count; mining continues."""
        node = MiningNode(self)
        node.refuse_next = 1
        code, out, err = run(["--node", node.url, "--address", ALICE.address, "--workers", "1", "--blocks", "1"])
        self.assertEqual(code, 0, err)
        self.assertEqual(len(node.seen("POST", "/submit_block")), 2)
        self.assertIn("refused for the test", err)
        self.assertIn("mined 1 block ", out)

    def test_new_tip_replaces_the_template(self):
        """When /status shows another tip, the miner drops its template and mines the new one."""
        node = MiningNode(self, targets=[IMPOSSIBLE])
        node.elsewhere_at_status = 2
        code, out, err = run(["--node", node.url, "--address", ALICE.address, "--workers", "1", "--blocks", "1"])
        self.assertEqual(code, 0, err)
        (block,) = node.accepted
        self.assertEqual((block.height, block.header.previous_hash), (2, node.elsewhere[0].hash))


    def test_node_away_then_back(self):
        """A template the node cannot give is retried quietly until it comes, then mining resumes."""
        node = MiningNode(self, targets=[IMPOSSIBLE])
        serve = node.template
        failures = iter([(503, {"error": "syncing"})] * 3)

        def template(seen):
            if len(node.seen("GET", "/mining/template")) > 1:
                return next(failures, None) or serve(seen)
            return serve(seen)
        node.answers[("GET", "/mining/template")] = template
        node.elsewhere_at_status = 2  # the first poll sees a new tip and asks for a new template
        err = mine_one_block(node)
        self.assertEqual(len(node.accepted), 1)
        self.assertEqual(err.getvalue().count("syncing"), 1, err.getvalue())
        self.assertIn("answers again", err.getvalue())

    def test_node_still_syncing_at_start(self):
        """A node answering 503 (catching up) to the first template request is waited for, not an error."""
        node = MiningNode(self)
        serve = node.template
        failures = iter([(503, {"error": "the node is catching up with its peers"})] * 2)
        node.answers[("GET", "/mining/template")] = lambda seen: next(failures, None) or serve(seen)
        err = mine_one_block(node)
        self.assertEqual(len(node.accepted), 1)
        self.assertIn("answers again", err.getvalue())


class PacedMinerTests(SynchronousTestCase):
    def test_pause_after_each_block(self):
        """With a pause the miner rests after every accepted block but the last, paced by its sleep function."""
        node = MiningNode(self)
        rests = []
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=miner.default_mp_context()) as pool:
            mining = miner.Miner(NodeClient(node.url), ALICE.address, 1, 3, miner.Display(io.StringIO(), time.monotonic),
                                 time.monotonic, pool, pause_s=7, sleep=rests.append)
            mining.run()
        self.assertEqual((len(node.accepted), rests), (3, [7, 7]))


def mine_one_block(node) -> io.StringIO:
    """Run a one-worker Miner against node until one block is accepted, retrying every 0.05 s; its log."""
    err = io.StringIO()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=miner.default_mp_context()) as pool:
        mining = miner.Miner(NodeClient(node.url), ALICE.address, 1, 1, miner.Display(err, time.monotonic),
                             time.monotonic, pool, retry_s=0.05)
        mining.run()
    return err


class MinerErrorTests(SynchronousTestCase):
    def assertOneLineError(self, argv, code, text):
        got, out, err = run(argv)
        self.assertEqual(got, code)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn(text, err)
        self.assertTrue(err.startswith("chaincore-miner: error: "), err)

    def test_bad_address_checksum(self):
        """A mistyped address is refused with one line and exit status 2."""
        bad = ALICE.address[:-1] + ("1" if ALICE.address[-1] != "1" else "2")
        self.assertOneLineError(["--node", "http://127.0.0.1:1", "--address", bad], 2, "--address")

    def test_unreachable_node(self):
        """A node that does not answer is one line and exit status 1."""
        self.assertOneLineError(["--node", "http://127.0.0.1:1", "--address", ALICE.address, "--workers", "1"],
                                1, "cannot reach the node")

    def test_bad_options(self):
        """Unknown options, a missing --node and bad counts are one line each, exit status 2."""
        self.assertOneLineError(["--node", "x", "--address", ALICE.address, "--bogus"], 2, "--bogus")
        self.assertOneLineError(["--address", ALICE.address], 2, "--node")
        self.assertOneLineError(["--node", "x", "--address", ALICE.address, "--workers", "0"], 2, "at least 1")
        self.assertOneLineError(["--node", "x", "--address", ALICE.address, "--blocks", "two"], 2, "whole number")
        self.assertOneLineError(["--node", "ftp://x", "--address", ALICE.address], 2, "not an http")

    def test_bad_counts_name_their_option(self):
        """A count that is not a whole number of at least 1 is refused naming the option it was given to."""
        for option, value in (("--workers", "0"), ("--workers", "-3"), ("--blocks", "0"), ("--blocks", "two")):
            self.assertOneLineError(["--node", "x", "--address", ALICE.address, option, value], 2,
                                    f"argument {option}: ")

    def test_too_many_workers(self):
        """More workers than MAX_WORKERS is refused before any process starts (each would be a process)."""
        self.assertOneLineError(["--node", "x", "--address", ALICE.address, "--workers", "1000000"], 2,
                                "argument --workers: 1000000 is more than 64")
        args = miner.make_parser({}).parse_args(["--node", "x", "--address", ALICE.address, "--workers", "64"])
        self.assertEqual(args.workers, 64)

    def test_template_whose_parts_disagree(self):
        """A template whose header bytes, merkle root or target are not its block's is refused before any hashing."""
        def header_of_another_block(view):
            view["header_hex"] = ("00" if view["header_hex"][:2] != "00" else "01") + view["header_hex"][2:]

        def merkle_root_of_nothing(view):
            view["block"]["merkle_root"] = "00" * 32

        def easier_target(view):
            view["target"] = "f" * 64
        for junk in (header_of_another_block, merkle_root_of_nothing, easier_target):
            node = MiningNode(self, target=HARD)
            serve = node.template

            def template(seen, junk=junk, serve=serve):
                status, view = serve(seen)
                junk(view)
                return status, view
            node.answers[("GET", "/mining/template")] = template
            self.assertOneLineError(["--node", node.url, "--address", ALICE.address, "--workers", "1",
                                     "--blocks", "1"], 1, "template is malformed")
            self.assertEqual(node.seen("POST", "/submit_block"), [], junk.__name__)

    def test_template_paying_someone_else(self):
        """A template whose coinbase pays another address than --address is refused: nothing is mined for it."""
        node = MiningNode(self)  # its templates pay Alice, whatever address was asked for
        self.assertOneLineError(["--node", node.url, "--address", BOB.address, "--workers", "1", "--blocks", "1"],
                                1, f"not {BOB.address}")
        self.assertEqual(node.seen("POST", "/submit_block"), [])

    def test_malformed_template(self):
        """A template without header_hex is one line and exit status 1."""
        node = FakeNode(self)
        node.answers[("GET", "/status")] = (200, {"tip_hash": "00" * 32, "mempool_size": 0, "height": 0})
        node.answers[("GET", "/mining/template")] = (200, {"block": {"index": 1}})
        self.assertOneLineError(["--node", node.url, "--address", ALICE.address, "--workers", "1"], 1,
                                "template is malformed")


class TerminalStream(io.StringIO):
    def isatty(self):
        return True


class DisplayTests(SynchronousTestCase):
    def test_terminal_gets_one_rewritten_status_line(self):
        """On a terminal the status line is redrawn in place at most once a second and cleared for log lines."""
        now = [100.0]
        stream = TerminalStream()
        display = miner.Display(stream, lambda: now[0])
        now[0] += 1
        display.status("height 1")
        display.status("height 1 again")  # too soon: not drawn
        display.log("block 1 accepted")
        text = stream.getvalue()
        self.assertTrue(text.startswith("\r\x1b[Kheight 1\r\x1b[K"), repr(text))
        self.assertNotIn("again", text)
        self.assertTrue(text.endswith("block 1 accepted\n"))

    def test_plain_stream_gets_occasional_log_lines(self):
        """Without a terminal, status goes out as a plain line every 10 s."""
        now = [100.0]
        stream = io.StringIO()
        display = miner.Display(stream, lambda: now[0])
        display.status("early")
        now[0] += 10
        display.status("height 7")
        self.assertNotIn("early", stream.getvalue())
        self.assertNotIn("\r", stream.getvalue())
        self.assertTrue(stream.getvalue().endswith(" height 7\n"))


class InterruptTests(SynchronousTestCase):
    def stop_with(self, signum):
        """Start the miner as a process, send it signum once its loop runs; return (status, stdout, stderr)."""
        node = MiningNode(self, target=IMPOSSIBLE)
        proc = subprocess.Popen([sys.executable, "-m", "chaincore.cli.miner", "--node", node.url,
                                 "--address", ALICE.address, "--workers", "1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.monotonic() + 10
        while len(node.seen("GET", "/status")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting on another process: its first status poll means the loop runs
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
        return proc.returncode, out, err

    def test_killed_miner_leaves_nothing_behind(self):
        """After SIGKILL, before anyone reaps the miner, its workers and helpers exit and let go of its output."""
        node = MiningNode(self, target=IMPOSSIBLE)
        proc = subprocess.Popen([sys.executable, "-m", "chaincore.cli.miner", "--node", node.url,
                                 "--address", ALICE.address, "--workers", "2"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))

        def cleanup():
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group, should anything be left
            except ProcessLookupError:
                pass
            proc.wait()
            proc.stdout.close()
        self.addCleanup(cleanup)
        deadline = time.monotonic() + 10
        while len(node.seen("GET", "/status")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting on another process: its first status poll means the loop runs
        proc.kill()  # and not reaped: a parent that reads the output to its end before waiting
        done = threading.Thread(target=proc.stdout.read, daemon=True)
        done.start()
        done.join(10)
        self.assertFalse(done.is_alive(), "the miner's output stayed open after it was killed")

    def test_ctrl_c_stops_cleanly(self):
        """SIGINT ends a running miner with its summary, exit status 0 and no traceback."""
        code, out, err = self.stop_with(signal.SIGINT)
        self.assertEqual(code, 0, err)
        self.assertIn("mined 0 blocks", out)
        self.assertNotIn("Traceback", err)

    def test_sigterm_stops_cleanly(self):
        """SIGTERM stops the miner the same way as Ctrl-C."""
        code, out, err = self.stop_with(signal.SIGTERM)
        self.assertEqual(code, 0, err)
        self.assertIn("mined 0 blocks", out)
        self.assertNotIn("Traceback", err)
