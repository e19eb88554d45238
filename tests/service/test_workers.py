"""Worker processes are lean: the core's functions run there, and nothing of Twisted, the web or TLS is
imported in them; the signature batcher sends rules.verify_groups."""

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from chaincore.core import rules
from chaincore.service.workers import InlineOffloader, ProcessOffloader, SignatureBatcher
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
