"""SIGKILL a real writer process at random moments and check that the store keeps every acknowledged block.

The writer (crash_writer.py) connects a deterministic chain into a SqliteStore
and prints "ACK <height>" after each apply() returns.  After each kill the
test reopens the file and checks that every acknowledged block is there whole,
that the UTXO set is exactly the one the sequence implies at the stored tip,
and that SQLite finds the file intact; then the writer resumes on the same file.
"""

import os
import random
import signal
import sqlite3
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from chaincore.storage.sqlite import SqliteStore

from . import crash_writer as writer
from tests.support.waiting import wait_until

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_writer.py")
KILLS = 10

class WriterProcess(ProcessProtocol):
    """One run of crash_writer.py: the lines it printed, its stderr, and `ended`, fired when it exits."""

    def __init__(self):
        self.lines, self.stderr, self._partial = [], b"", b""
        self.ended = Deferred()
        self.running = True

    def outReceived(self, data):
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += [line.decode() for line in complete]

    def errReceived(self, data):
        self.stderr += data

    def processEnded(self, reason):
        self.running = False
        self.ended.callback(reason.value)

    @property
    def start_height(self) -> int | None:
        return int(self.lines[0].split()[1]) if self.lines and self.lines[0].startswith("START") else None

    @property
    def acked(self) -> list:
        return [int(line.split()[1]) for line in self.lines if line.startswith("ACK ")]


class CrashTests(TestCase):
    timeout = 60

    def spawn(self, path) -> WriterProcess:
        proc = WriterProcess()
        transport = reactor.spawnProcess(proc, sys.executable, [sys.executable, WRITER, path], env=os.environ)
        proc.kill = lambda: transport.signalProcess("KILL")

        async def reap():
            if proc.running:
                proc.kill()
                await proc.ended
        self.addCleanup(reap)
        return proc

    def check_store(self, path, acked, context) -> int:
        """Check the file after a kill against the writer's sequence; return the stored tip height."""
        store = SqliteStore(path, writer.NETWORK, writer.GENESIS)
        try:
            tip_height = store.get_entry(store.tip()).height
            self.assertEqual(store.tip(), writer.block_hash(tip_height), context)
            for height in acked:
                self.assertLessEqual(height, tip_height, context)
                block_hash = writer.block_hash(height)
                self.assertEqual(store.main_hash(height), block_hash, context)
                self.assertEqual(store.get_entry(block_hash).height, height, context)
                self.assertEqual(store.get_undo(block_hash), writer.spent_by(height), context)
            self.assertIsNone(store.main_hash(tip_height + 1), context)
            self.assertEqual(store.get_undo(store.tip()), writer.spent_by(tip_height), context)
            self.assertEqual(store.coin_count(), len(writer.expected_utxos(tip_height)), context)
        finally:
            store.close()
        db = sqlite3.connect(path)
        try:
            rows = set(db.execute("SELECT tx_id, idx, amount, recipient, height, coinbase FROM utxo"))
            self.assertEqual(rows, writer.expected_utxos(tip_height), context)
            main_rows = db.execute("SELECT count(*) FROM main_chain").fetchone()[0]
            self.assertEqual(main_rows, tip_height + 1, context)
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchall(), [("ok",)], context)
        finally:
            db.close()
        return tip_height

    async def test_sigkill_loses_no_acknowledged_block(self):
        """A writer SIGKILLed at random moments loses no acknowledged block and leaves a consistent file."""
        seed = int.from_bytes(os.urandom(4), "big")
        rng = random.Random(seed)
        path = self.mktemp()
        tip_height, total_acked = -1, 0
        for run in range(KILLS):
            proc = self.spawn(path)
            # Every third run dies around its open (the quick_check and clean-shutdown flag write), the rest
            # while connecting blocks.
            started = (lambda: proc.lines) if run % 3 == 2 else (lambda: proc.acked)
            await wait_until(lambda: started() or not proc.running, 10, what=f"run {run} of the writer to start")
            self.assertTrue(proc.running, f"writer died by itself: {proc.stderr.decode()}")
            # The random part of the kill moment: anywhere within a few dozen block connects.
            await deferLater(reactor, rng.uniform(0, 0.03 if run % 3 == 2 else 0.3), lambda: None)
            proc.kill()
            reason = await proc.ended
            self.assertEqual(reason.signal, signal.SIGKILL, proc.stderr.decode())
            context = f"seed {seed}, run {run}"
            self.assertEqual(proc.start_height, tip_height + 1, f"{context}: the writer resumes at the tip")
            acked = proc.acked
            total_acked += len(acked)
            last_acked = acked[-1] if acked else tip_height
            tip_height = self.check_store(path, acked, context)
            # The kill may land between a commit and its ACK, but nothing else may differ.
            self.assertIn(tip_height, (last_acked, last_acked + 1), context)
        self.assertGreater(total_acked, KILLS)
