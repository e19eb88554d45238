"""The real twistd plugin in a subprocess (CONTRACT 1): start, serve, mine, stop cleanly, restart, fail clearly.

These tests run `twistd -n --pidfile= chaincore ...` as an operator would, on a
free loopback port and a temporary datadir, and talk to it over HTTP with treq
(one connection pool per test, closed in cleanup).  Start-up is awaited by
polling /status on the reactor, never by sleeping.
"""

import hashlib
import json
import os
import signal
import sqlite3
import sys

from treq.client import HTTPClient
from twisted.internet import error, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from chaincore.core.params import REGTEST
from chaincore.service.wiring import open_store

from ..support.builders import ALICE
from tests.support.processes import OutputProcess, child_env
from tests.support.waiting import free_port, wait_until

START_TIMEOUT_S = 20


def twistd_command() -> list:
    """twistd beside this interpreter, or the same program through -c."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

def node_args(port, datadir, network="regtest") -> list:
    return ["-n", "--pidfile=", "chaincore", "--port", str(port), "--network", network,
            "--datadir", str(datadir), "--discover-ports", ""]

TwistdProcess = OutputProcess  # a twistd child: its output, and `ended` with the exit reason


class PluginTestCase(TestCase):
    def setUp(self):
        pool = HTTPConnectionPool(reactor, persistent=True)
        self.addCleanup(pool.closeCachedConnections)
        self.http = HTTPClient(Agent(reactor, pool=pool))

    def start(self, port, datadir, network="regtest") -> TwistdProcess:
        """Spawn a node; a cleanup kills it if the test has not stopped it."""
        proc = TwistdProcess()
        argv = twistd_command() + node_args(port, datadir, network)
        transport = reactor.spawnProcess(proc, argv[0], argv, env=child_env(), path=self.mktemp_dir())
        proc.transport = transport

        def kill():
            if not proc.ended.called:
                transport.signalProcess("KILL")
                return proc.ended

        self.addCleanup(kill)
        return proc

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    async def get_json(self, url: str, timeout_s: float = 5):
        response = await self.http.get(url, timeout=timeout_s)
        return response.code, json.loads(await response.content())

    async def post_json(self, url: str, body: dict):
        response = await self.http.post(url, data=json.dumps(body).encode(),
                                        headers={b"Content-Type": [b"application/json"]}, timeout=5)
        return response.code, json.loads(await response.content())

    async def mine_one(self, base: str):
        """Mine the node's template as an external miner would (nonce at nonce_offset) and submit it: the
        answer's code and JSON, and the block hash the miner computed."""
        code, template = await self.get_json(f"{base}/mining/template?address={ALICE.address}")
        self.assertEqual(code, 200)
        header = bytearray(bytes.fromhex(template["header_hex"]))
        offset, size = template["nonce_offset"], template["nonce_size"]
        for nonce in range(1000):
            header[offset:offset + size] = nonce.to_bytes(size, "little")
            digest = hashlib.sha256(hashlib.sha256(bytes(header)).digest()).digest()
            if int.from_bytes(digest, "big") <= int(template["target"], 16):
                break
        code, body = await self.post_json(base + "/submit_block", {"block": dict(template["block"], nonce=nonce)})
        return code, body, digest.hex()

    async def wait_for_status(self, base: str, proc: TwistdProcess) -> dict:
        async def answered():
            if proc.ended.called:
                self.fail(f"the node exited at start:\n{proc.output.decode(errors='replace')}")
            try:
                code, body = await self.get_json(base + "/status", timeout_s=1)
            except Exception:  # refused, or ResponseNeverReceived, while the node starts
                return None
            return body if code == 200 else None

        return await wait_until(answered, START_TIMEOUT_S, interval_s=0.1)

    async def stop(self, proc: TwistdProcess) -> None:
        """SIGTERM, then check twistd shut down cleanly (it re-raises SIGTERM, so 'killed by 15' is clean)."""
        proc.transport.signalProcess("TERM")
        reason = await proc.ended
        if isinstance(reason, error.ProcessTerminated):
            self.assertIn(reason.signal, (signal.SIGTERM, None), proc.output)
            if reason.signal is None:
                self.assertEqual(reason.exitCode, 0, proc.output)
        else:
            self.assertIsInstance(reason, error.ProcessDone)
        self.assertNotIn(b"Traceback", proc.output)
        self.assertIn(b"store closed", proc.output)


class LifecycleTests(PluginTestCase):
    async def test_mine_stop_restart(self):
        """A node started by twistd serves /status, accepts a block solved from its template, stops on
        SIGTERM without a traceback, and keeps height 1 when restarted on the same datadir."""
        port, datadir = free_port(), os.path.abspath(self.mktemp())
        base = f"http://127.0.0.1:{port}"
        proc = self.start(port, datadir)
        status = await self.wait_for_status(base, proc)
        self.assertEqual((status["network"], status["height"]), ("regtest", 0))
        self.assertEqual(status["url"], f"http://localhost:{port}")

        code, body, block_hash = await self.mine_one(base)
        self.assertEqual((code, body["status"], body["height"], body["main_chain"]), (200, "accepted", 1, True))
        await self.stop(proc)

        again = self.start(port, datadir)
        status = await self.wait_for_status(base, again)
        self.assertEqual((status["height"], status["tip_hash"]), (1, block_hash))
        self.assertIn(datadir.encode(), again.output)  # the datadir is printed at start
        await self.stop(again)



class DaemonTests(PluginTestCase):
    """`twistd` without -n, as the README's three-node example runs it: twistd forks after building the node."""

    async def test_daemon_keeps_its_store_to_itself(self):
        """A daemonized node keeps SQLite's locks on its store: a reader (a live `sqlite3 .backup`) leaves the
        node's write-ahead log in place, and a block the node accepted afterwards is in the file for the next
        reader.  (SQLite's locks stay with the process that took them: a connection opened before the fork
        holds none in the daemon, the reader's close deleted the log, and the node wrote into a deleted file.)"""
        port, datadir, rundir = free_port(), os.path.abspath(self.mktemp()), os.path.abspath(self.mktemp_dir())
        pidfile, logfile = os.path.join(rundir, "node.pid"), os.path.join(rundir, "node.log")
        argv = twistd_command() + [f"--pidfile={pidfile}", f"--logfile={logfile}", "chaincore", "--port", str(port),
                                   "--network", "regtest", "--datadir", datadir, "--discover-ports", ""]
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:], env=child_env(), path=rundir)
        self.assertEqual(code, 0, out + err)
        pid = int(open(pidfile).read())

        def alive():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True

        self.addCleanup(lambda: alive() and os.kill(pid, signal.SIGKILL))
        base = f"http://127.0.0.1:{port}"

        async def answered():
            try:
                code, body = await self.get_json(base + "/status", timeout_s=1)
            except Exception:  # refused while the node starts
                return None
            return body if code == 200 else None

        await wait_until(answered, START_TIMEOUT_S, interval_s=0.1, what="the daemon's /status")

        def stored_blocks() -> int:
            reader = sqlite3.connect(os.path.join(datadir, "chain.sqlite"))
            try:
                return reader.execute("SELECT count(*) FROM blocks").fetchone()[0]
            finally:
                reader.close()

        before = stored_blocks()
        self.assertTrue(os.path.exists(os.path.join(datadir, "chain.sqlite-wal")), "the reader removed the log")
        code, body, _ = await self.mine_one(base)
        self.assertEqual((code, body["status"]), (200, "accepted"))
        self.assertEqual(stored_blocks(), before + 1)

        os.kill(pid, signal.SIGTERM)
        await wait_until(lambda: not alive(), START_TIMEOUT_S, interval_s=0.1, what="the daemon's exit")
        with open(logfile, "rb") as f:
            log = f.read()
        self.assertIn(b"store closed at height 1", log)
        self.assertNotIn(b"Traceback", log)


class StartupFailureTests(TestCase):
    async def run_twistd(self, *args):
        argv = twistd_command()
        out, err, code = await getProcessOutputAndValue(argv[0], argv[1:] + list(args), env=child_env(),
                                                        path=self.mktemp_dir())
        return (out + err).decode(errors="replace"), code

    def mktemp_dir(self) -> str:
        path = self.mktemp()
        os.makedirs(path)
        return path

    def assertOneLine(self, output: str, code: int, starts: str) -> None:
        lines = [ln for ln in output.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, output)
        self.assertTrue(lines[0].startswith(starts), output)
        self.assertNotIn("Traceback", output)
        self.assertNotEqual(code, 0)

    async def test_port_in_use(self):
        """A port already taken gives one line `chaincore: cannot listen on ...` and a non-zero exit."""
        taken = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        self.addCleanup(taken.stopListening)
        port = taken.getHost().port
        output, code = await self.run_twistd(*node_args(port, os.path.abspath(self.mktemp())))
        self.assertOneLine(output, code, f"chaincore: cannot listen on 127.0.0.1:{port}")

    async def test_datadir_is_a_file(self):
        """A datadir path that is a regular file gives one line naming it."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("not a directory")
        output, code = await self.run_twistd(*node_args(free_port(), path))
        self.assertOneLine(output, code, "chaincore: ")
        self.assertIn(path, output)

    async def test_datadir_of_another_network(self):
        """A regtest datadir opened with --network main gives one line naming both networks."""
        datadir = os.path.abspath(self.mktemp())
        store, lock = open_store(datadir, REGTEST)
        store.close()
        lock.close()
        output, code = await self.run_twistd(*node_args(free_port(), datadir, network="main"))
        self.assertOneLine(output, code, "chaincore: ")
        self.assertIn("regtest", output)
        self.assertIn("main", output)

    async def test_bad_endpoint(self):
        """A --port that is no endpoint description gives one line quoting it."""
        output, code = await self.run_twistd(*node_args("bogus:1", os.path.abspath(self.mktemp())))
        self.assertOneLine(output, code, "chaincore: bad --port 'bogus:1'")

    async def test_help_lists_every_option(self):
        """`twistd chaincore --help` lists every CONTRACT 1 option and exits 0."""
        output, code = await self.run_twistd("chaincore", "--help")
        self.assertEqual(code, 0, output)
        for option in ("--port", "--interface", "--datadir", "--network", "--peer", "--discover-ports",
                       "--advertise", "--mine"):
            self.assertIn(option, output)
