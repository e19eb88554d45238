"""Worker processes are lean: the core's functions run there, and nothing of Twisted, the web or TLS is
imported in them; the signature batcher's batches travel to signature workers as one buffer each way."""

import io
import os
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.error import ProcessTerminated
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chaincore.core import rules
from chaincore.core.errors import Malformed
from chaincore.service.workerproc import serve_signatures
from chaincore.service.workers import (InlineOffloader, ProcessOffloader, SignatureBatcher, SignatureWorkers,
                                       WorkerLost, _SignatureWorker)
from tests.support.builders import ALICE, BOB, regtest_chain, signed_tx, coinbase_outpoint
from tests.support.workerprobe import loaded_packages

HEAVY = {"twisted", "klein", "treq", "werkzeug", "OpenSSL", "cryptography", "prometheus_client"}


class LeanWorkerTests(TestCase):
    async def test_worker_imports_no_twisted(self):
        """A node's worker runs a core function and has imported no Twisted (so not the twistd script), web or TLS module."""
        offloader = ProcessOffloader(reactor, workers=1)
        self.addCleanup(offloader.shutdown)
        tx = signed_tx([(coinbase_outpoint(regtest_chain(1)[1]), ALICE)], [(BOB, 1000)])
        good = rules.signature_checks(tx)
        bad = [(good[0][0], good[0][1], bytes(64))]
        self.assertEqual(await offloader.run(rules.verify_groups, [good, bad]), [True, False])
        packages = await offloader.run(loaded_packages)
        self.assertIn("chaincore", packages)
        self.assertEqual(HEAVY & set(packages), set())


class RecordingOffloader(InlineOffloader):
    """Runs work inline and records each function it ran."""

    def __init__(self):
        self.ran = []

    def run(self, fn, *args):
        self.ran.append(fn)
        return super().run(fn, *args)


class BatcherTests(SynchronousTestCase):
    def test_batches_go_to_the_core_function(self):
        """SignatureBatcher hands its batches, encoded in one buffer, to rules.verify_encoded, a core function."""
        offloader = RecordingOffloader()
        batcher = SignatureBatcher(offloader)
        tx = signed_tx([(coinbase_outpoint(regtest_chain(1)[1]), ALICE)], [(BOB, 1000)])
        self.assertTrue(self.successResultOf(batcher.verify(rules.signature_checks(tx))))
        self.assertEqual(offloader.ran, [rules.verify_encoded])


class SignatureWorkerTests(TestCase):
    async def test_a_worker_process_answers_groups(self):
        """A signature worker process answers each group of a batch: all verify, one signature is bad, or empty."""
        workers = SignatureWorkers(reactor, 1)
        self.addCleanup(workers.shutdown)
        tx = signed_tx([(coinbase_outpoint(regtest_chain(1)[1]), ALICE)], [(BOB, 1000)])
        good = rules.signature_checks(tx)
        bad = [(good[0][0], good[0][1], bytes(64))]
        self.assertEqual(await workers.verify_groups([good, bad, []]), [True, False, True])
        self.assertEqual(await workers.verify_groups([bad + good]), [False])  # the same process, again

    async def test_a_killed_worker_is_replaced(self):
        """After its worker process is killed, the next batch starts another one and is answered."""
        workers = SignatureWorkers(reactor, 1)
        self.addCleanup(workers.shutdown)
        tx = signed_tx([(coinbase_outpoint(regtest_chain(1)[1]), ALICE)], [(BOB, 1000)])
        good = rules.signature_checks(tx)
        self.assertEqual(await workers.verify_groups([good]), [True])
        (first,) = workers._running
        first.transport.signalProcess("KILL")
        await first.ended
        self.assertEqual(await workers.verify_groups([good]), [True])
        self.assertNotIn(first, workers._running)


class RecordingProcessTransport:
    """What a _SignatureWorker writes to its process, and the signals it sends."""

    def __init__(self):
        self.written, self.signals = [], []

    def writeSequence(self, parts):
        self.written.append(b"".join(parts))

    def signalProcess(self, name):
        self.signals.append(name)


def framed(buf: bytes) -> bytes:
    return len(buf).to_bytes(4, "big") + buf


class SignatureWorkerProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.lost = []
        self.worker = _SignatureWorker(self.lost.append)
        self.worker.transport = RecordingProcessTransport()

    def test_batch_goes_out_as_one_frame(self):
        """A batch leaves as its length and the encoded groups, in one write."""
        groups = [[(b"k" * 65, b"h" * 32, b"s" * 64)]]
        self.worker.send(rules.encode_groups(groups))
        self.assertEqual(self.worker.transport.written, [framed(rules.encode_groups(groups))])

    def test_answers_in_pieces_and_together(self):
        """Answers split across reads, or two in one read, fire their batches in the order they were sent."""
        first, second = self.worker.send(b"a"), self.worker.send(b"b")
        stream = framed(rules.encode_answer([True, False])) + framed(rules.encode_answer([False]))
        self.worker.outReceived(stream[:3])
        self.assertNoResult(first)
        self.worker.outReceived(stream[3:])
        self.assertEqual(self.successResultOf(first), [True, False])
        self.assertEqual(self.successResultOf(second), [False])

    def test_ended_worker_fails_what_it_held(self):
        """A worker that ends with batches unanswered fails them with WorkerLost, and its pool forgets it."""
        d = self.worker.send(b"a")
        self.worker.processEnded(Failure(ProcessTerminated(signal=9)))
        self.failureResultOf(d, WorkerLost)
        self.assertEqual(self.lost, [self.worker])
        self.assertIsNone(self.successResultOf(self.worker.ended))

    def test_nonsense_answer_kills_the_worker(self):
        """An answer that is not a bitmap of its batch fails that batch, kills the worker and takes it out of use."""
        d = self.worker.send(b"a")
        self.worker.outReceived(framed(b"\x00\x00\x00\x05"))  # five groups in no bytes
        self.failureResultOf(d, WorkerLost)
        self.assertEqual(self.worker.transport.signals, ["KILL"])
        self.assertEqual(self.lost, [self.worker])

    def test_answer_nobody_asked_for_kills_the_worker(self):
        """An answer with no batch waiting for it kills the worker."""
        self.worker.outReceived(framed(rules.encode_answer([True])))
        self.assertEqual(self.worker.transport.signals, ["KILL"])


class SignatureWireTests(SynchronousTestCase):
    def test_groups_round_trip(self):
        """Groups of checks come out of their buffer as they went in, empty groups and odd lengths included."""
        groups = [[(b"k" * 65, b"h" * 32, b"s" * 64), (b"", b"x", b"y" * 300)], [], [(b"a", b"b", b"c")]]
        self.assertEqual(rules.decode_groups(rules.encode_groups(groups)), groups)

    def test_cut_or_padded_buffer_is_malformed(self):
        """A buffer cut short, or with bytes past its end, is Malformed."""
        buf = rules.encode_groups([[(b"k", b"h", b"s")]])
        self.assertRaises(Malformed, rules.decode_groups, buf[:-1])
        self.assertRaises(Malformed, rules.decode_groups, buf + b"\x00")

    def test_answer_bitmap(self):
        """Nine results travel as a count and two bytes, least significant bit first."""
        results = [True, False, False, True, True, False, False, False, True]
        buf = rules.encode_answer(results)
        self.assertEqual(buf, b"\x00\x00\x00\x09\x19\x01")
        self.assertEqual(rules.decode_answer(buf), results)
        self.assertRaises(Malformed, rules.decode_answer, buf[:-1])

    def test_worker_loop_answers_every_frame(self):
        """The worker's loop answers each frame on stdin with its bitmap, and returns when stdin ends."""
        tx = signed_tx([(coinbase_outpoint(regtest_chain(1)[1]), ALICE)], [(BOB, 1000)])
        good = rules.signature_checks(tx)
        bad = [(good[0][0], good[0][1], bytes(64))]
        stdin = io.BytesIO(framed(rules.encode_groups([good, bad])) + framed(rules.encode_groups([])))
        stdout = io.BytesIO()
        serve_signatures(stdin, stdout)
        self.assertEqual(stdout.getvalue(),
                         framed(rules.encode_answer([True, False])) + framed(rules.encode_answer([])))

    def test_worker_module_imports_no_twisted(self):
        """What a signature worker process runs (workerproc and the core) imports no Twisted, web or TLS module."""
        code = ("import io, sys; from chaincore.service import workerproc; "
                "workerproc.serve_signatures(io.BytesIO(), io.BytesIO()); "
                "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=root), check=True).stdout.split()
        self.assertIn("chaincore", out)
        self.assertEqual(HEAVY & set(out), set())
