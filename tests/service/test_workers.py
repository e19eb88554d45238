"""Worker processes are lean: the core's functions run there, and nothing of Twisted, the web or TLS is
imported in them; the signature batcher's batches, and the transactions of a block submitted on its own,
travel to signature workers as one buffer each way, while a catch-up's blocks go to the process pool."""

import io
import os
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.internet.error import ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chaincore.core import rules
from chaincore.core.errors import BadSignature, Malformed
from chaincore.service.workerproc import serve_signatures
from chaincore.service.workers import (InlineOffloader, ProcessOffloader, SignatureBatcher, SignatureWorkers,
                                       WorkerLost, _SignatureWorker)
from tests.support.builders import ALICE, BOB, make_block, regtest_chain, signed_tx, coinbase_outpoint
from tests.support.nodes import make_node
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
        self.worker.send(rules.encode_groups(groups), rules.decode_answer)
        self.assertEqual(self.worker.transport.written, [framed(rules.encode_groups(groups))])

    def test_answers_in_pieces_and_together(self):
        """Answers split across reads, or two in one read, fire their batches in the order they were sent."""
        first, second = self.worker.send(b"a", rules.decode_answer), self.worker.send(b"b", rules.decode_answer)
        stream = framed(rules.encode_answer([True, False])) + framed(rules.encode_answer([False]))
        self.worker.outReceived(stream[:3])
        self.assertNoResult(first)
        self.worker.outReceived(stream[3:])
        self.assertEqual(self.successResultOf(first), [True, False])
        self.assertEqual(self.successResultOf(second), [False])

    def test_ended_worker_fails_what_it_held(self):
        """A worker that ends with batches unanswered fails them with WorkerLost, and its pool forgets it."""
        d = self.worker.send(b"a", rules.decode_answer)
        self.worker.processEnded(Failure(ProcessTerminated(signal=9)))
        self.failureResultOf(d, WorkerLost)
        self.assertEqual(self.lost, [self.worker])
        self.assertIsNone(self.successResultOf(self.worker.ended))

    def test_nonsense_answer_kills_the_worker(self):
        """An answer that is not a bitmap of its batch fails that batch, kills the worker and takes it out of use."""
        d = self.worker.send(b"a", rules.decode_answer)
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


def bad_signature(tx):
    """tx with its first input's signature changed by one bit."""
    sig = bytearray(tx.inputs[0].signature)
    sig[5] ^= 1
    return tx.with_signatures([bytes(sig)] + [i.signature for i in tx.inputs[1:]])


class SignatureWorkerTxTests(SynchronousTestCase):
    """Transaction batches on the pipe protocol, beside group batches."""

    def setUp(self):
        self.lost = []
        self.worker = _SignatureWorker(self.lost.append)
        self.worker.transport = RecordingProcessTransport()
        self.good = [signed_tx([(coinbase_outpoint(block), ALICE)], [(BOB, 1000)]) for block in regtest_chain(2)[1:]]
        self.bad = bad_signature(self.good[1])

    def test_each_answer_is_read_with_its_batch_decoder(self):
        """Group and transaction batches sent in turn get their answers in order, each read with its own decoder."""
        groups = self.worker.send(rules.encode_groups([[]]), rules.decode_answer)
        txs = self.worker.send(rules.encode_txs([b"x"]), rules.decode_index)
        self.worker.outReceived(framed(rules.encode_answer([True])) + framed(rules.encode_index(0)))
        self.assertEqual(self.successResultOf(groups), [True])
        self.assertEqual(self.successResultOf(txs), 0)

    def test_nonsense_index_answer_kills_the_worker(self):
        """A transaction batch answered with something that is not an index fails with WorkerLost and kills the worker."""
        d = self.worker.send(rules.encode_txs([b"x"]), rules.decode_index)
        self.worker.outReceived(framed(rules.encode_answer([True, True])))  # five bytes, not four
        self.failureResultOf(d, WorkerLost)
        self.assertEqual(self.worker.transport.signals, ["KILL"])

    def test_ended_worker_fails_its_transaction_batch(self):
        """A worker that ends with a transaction batch unanswered fails it with WorkerLost."""
        d = self.worker.send(rules.encode_txs([b"x"]), rules.decode_index)
        self.worker.processEnded(Failure(ProcessTerminated(signal=9)))
        self.failureResultOf(d, WorkerLost)

    def test_inline_offloader_verifies_transactions_at_once(self):
        """InlineOffloader.verify_tx_bytes answers through the pipe's buffers, at once."""
        offloader = InlineOffloader()
        self.assertEqual(self.successResultOf(offloader.verify_tx_bytes([tx.raw for tx in self.good])), -1)
        self.assertEqual(self.successResultOf(offloader.verify_tx_bytes([self.good[0].raw, self.bad.raw])), 1)

    def test_worker_loop_answers_both_kinds_in_order(self):
        """The worker's loop answers group and transaction frames in the order they came, each in its kind."""
        checks = rules.signature_checks(self.good[0])
        frames = [rules.encode_txs([self.good[0].raw, self.bad.raw]), rules.encode_groups([checks]),
                  rules.encode_txs([tx.raw for tx in self.good]), rules.encode_txs([b"\x01"])]
        stdin, stdout = io.BytesIO(b"".join(map(framed, frames))), io.BytesIO()
        serve_signatures(stdin, stdout)
        self.assertEqual(stdout.getvalue(), b"".join(map(framed, [
            rules.encode_index(1), rules.encode_answer([True]), rules.encode_index(-1), rules.encode_index(0)])))


class RoutingOffloader(InlineOffloader):
    """Runs work inline, records which road each batch took, and can lose the pipe workers' batches."""

    workers = 2

    def __init__(self, lose_pipe: bool = False):
        self.lose_pipe = lose_pipe
        self.ran = []        # functions given to run()
        self.tx_batches = []  # raw transactions given to verify_tx_bytes()

    def run(self, fn, *args):
        self.ran.append(fn)
        return super().run(fn, *args)

    def verify_tx_bytes(self, raw_txs):
        self.tx_batches.append(list(raw_txs))
        if self.lose_pipe:
            return defer.fail(WorkerLost("signature worker ended: killed"))
        return super().verify_tx_bytes(raw_txs)


_CHAIN = []


def spendable_chain():
    """A regtest chain of 101 blocks (built once) and a transaction spending its first coinbase."""
    if not _CHAIN:
        chain = regtest_chain(101)
        _CHAIN.append((chain, signed_tx([(coinbase_outpoint(chain[1]), ALICE)], [(BOB, 50 * 10**8 - 10_000)])))
    return _CHAIN[0]


class BlockSignatureRouteTests(SynchronousTestCase):
    """A block submitted on its own has its signatures checked by the pipe workers, a catch-up by the pool."""

    def node(self, offloader):
        chain, self.tx = spendable_chain()
        clock = Clock()
        clock.advance(chain[-1].header.timestamp + 60)
        node = make_node(clock, offloader=offloader, blocks=chain).node
        self.block = make_block(chain[-1], [self.tx], fees=10_000)
        self.bad_block = make_block(chain[-1], [bad_signature(self.tx)], fees=10_000)
        return node

    def test_relayed_block_goes_to_the_pipe_workers(self):
        """A single relayed block's unverified transactions go to verify_tx_bytes, never to the process pool."""
        offloader = RoutingOffloader()
        node = self.node(offloader)
        result = self.successResultOf(node.submit_block(self.block, source="http://localhost:5001"))
        self.assertTrue(result.main_chain)
        self.assertEqual(offloader.tx_batches, [[self.tx.raw]])
        self.assertNotIn(rules.verify_tx_bytes, offloader.ran)
        self.assertIn(self.tx.tx_id, node.sig_cache)

    def test_catch_up_run_goes_to_the_pool(self):
        """A catch-up run (submit_blocks) sends its transactions to run(rules.verify_tx_bytes), not the pipe."""
        offloader = RoutingOffloader()
        node = self.node(offloader)
        results, error = self.successResultOf(node.submit_blocks([self.block], source="http://localhost:5001",
                                                                 requested=True))
        self.assertIsNone(error)
        self.assertEqual(node.chain.tip.hash, self.block.hash)
        self.assertEqual(offloader.ran, [rules.verify_tx_bytes])
        self.assertEqual(offloader.tx_batches, [])

    def test_blocks_preverified_ahead_go_to_the_pool(self):
        """preverify_blocks (a catch-up's next run) sends its transactions to the process pool."""
        offloader = RoutingOffloader()
        node = self.node(offloader)
        node.preverify_blocks([self.block])
        self.assertEqual(offloader.ran, [rules.verify_tx_bytes])
        self.assertEqual(offloader.tx_batches, [])

    def test_bad_signature_in_a_relayed_block_is_refused(self):
        """A bad signature in a single relayed block, found by the pipe workers, is refused with BadSignature."""
        offloader = RoutingOffloader()
        node = self.node(offloader)
        tip = node.chain.tip.hash
        failure = self.failureResultOf(node.submit_block(self.bad_block, source="http://localhost:5001"),
                                       BadSignature)
        self.assertEqual(failure.value.code, "bad-signature")
        self.assertEqual(len(offloader.tx_batches), 1)
        self.assertEqual(node.chain.tip.hash, tip)
        self.assertNotIn(self.bad_block.transactions[1].tx_id, node.sig_cache)

    def test_lost_worker_leaves_the_check_to_the_chain_state(self):
        """A pipe batch lost with its worker leaves the block to the chain state: a good one is taken, a bad one
        refused with BadSignature."""
        offloader = RoutingOffloader(lose_pipe=True)
        node = self.node(offloader)
        failure = self.failureResultOf(node.submit_block(self.bad_block, source="http://localhost:5001"),
                                       BadSignature)
        self.assertEqual(failure.value.code, "bad-signature")
        self.assertNotIn(self.tx.tx_id, node.sig_cache)
        result = self.successResultOf(node.submit_block(self.block, source="http://localhost:5001"))
        self.assertTrue(result.main_chain)
        self.assertEqual(len(offloader.tx_batches), 2)
        self.assertEqual(node._verifying, {})


class PipeWorkerBlockTests(TestCase):
    async def test_a_blocks_transactions_verify_through_the_pipe(self):
        """With the real offloader, a relayed block's transactions are verified by a signature worker process (the
        process pool never starts), and a bad signature is refused; the worker answers index batches directly."""
        offloader = ProcessOffloader(reactor, workers=2)
        self.addCleanup(offloader.shutdown)
        chain, tx = spendable_chain()
        clock = Clock()
        clock.advance(chain[-1].header.timestamp + 60)
        node = make_node(clock, offloader=offloader, blocks=chain).node
        bad = make_block(chain[-1], [bad_signature(tx)], fees=10_000)
        with self.assertRaises(BadSignature):
            await node.submit_block(bad, source="http://localhost:5001")
        block = make_block(chain[-1], [tx], fees=10_000)
        result = await node.submit_block(block, source="http://localhost:5001")
        self.assertTrue(result.main_chain)
        self.assertIn(tx.tx_id, node.sig_cache)
        self.assertIsNone(offloader._executor)
        self.assertEqual(len(offloader._signatures._running), 1)
        self.assertEqual(await offloader.verify_tx_bytes([tx.raw, bad.transactions[1].raw]), 1)
        self.assertEqual(await offloader.verify_tx_bytes([b"\x00"]), 0)
