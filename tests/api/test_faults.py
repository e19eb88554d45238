"""The error seam of the API: refusals answer 4xx with their code, faults of the node 5xx without a local
path or a traceback (503 with Retry-After where waiting helps), and anything unexpected a JSON 500."""

import json

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import errors, jsonview
from chaincore.core.store import MemoryStore
from tests.support.api import APIClient, assert_error, funded_chain, funded_node
from tests.support.builders import ALICE, BOB, make_block

SECRET_PATH = "/var/lib/chaincore-secret/regtest/chain.sqlite"


class FaultyStore(MemoryStore):
    """A MemoryStore whose writes (apply) or address lookups (coins_of) raise what a test sets."""

    def __init__(self):
        super().__init__()
        self.write_error = None
        self.lookup_error = None

    def apply(self, update):
        if self.write_error is not None:
            raise self.write_error
        super().apply(update)

    def coins_of(self, payload):
        if self.lookup_error is not None:
            raise self.lookup_error
        return super().coins_of(payload)


def classes(base) -> list:
    """Every class of core/errors.py under base, base included."""
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, base)]


def expected_refusal_status(cls) -> int:
    """The 4xx CONTRACT 2 gives each refusal: 404 unknown, 403 not allowed, 413 too large, 429 over budget,
    else 400."""
    for base, status in ((errors.NotFound, 404), (errors.Forbidden, 403), (errors.TooLarge, 413),
                         (errors.RateLimited, 429)):
        if issubclass(cls, base):
            return status
    return 400


class FaultTests(SynchronousTestCase):
    def setUp(self):
        self.store = FaultyStore()
        self.service = funded_node(store=self.store)
        self.node = self.service.node
        self.client = APIClient(self, self.service)

    def assert_no_local_detail(self, answer):
        self.assertNotIn(b"/var/lib", answer.body)
        self.assertNotIn(b"chaincore-secret", answer.body)
        self.assertNotIn(b"Traceback", answer.body)

    def test_store_fault_on_submit_block_is_503_without_a_path(self):
        """A full disk while storing a valid block answers 503 JSON with Retry-After, naming no path."""
        self.store.write_error = errors.StoreError(f"cannot write to {SECRET_PATH}: database or disk is full")
        block = make_block(funded_chain()[-1], pay_to=BOB)
        answer = self.client.post("/submit_block", {"block": jsonview.block_to_json(block)})
        assert_error(self, answer, 503, "store")
        self.assertEqual(answer.header("Retry-After"), str(errors.StoreError.retry_after_s))
        self.assert_no_local_detail(answer)
        self.assertEqual(self.node.chain.tip.hash, funded_chain()[-1].hash)

    def test_unknown_exception_is_json_500(self):
        """An exception ChainCore did not raise on purpose answers 500 {"error": "internal error"}, no detail."""
        self.store.lookup_error = RuntimeError(f"{SECRET_PATH} exploded")
        answer = self.client.get(f"/balance/{ALICE.address}")
        assert_error(self, answer, 500, "internal")
        self.assertEqual(answer.json["error"], "internal error")
        self.assertIsNone(answer.header("Retry-After"))
        self.assert_no_local_detail(answer)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # the traceback goes to the log

    def test_every_refusal_class_answers_its_4xx(self):
        """Each Refused class of the error tree answers its 4xx with its message and its own code."""
        refusals = classes(errors.Refused)
        self.assertGreater(len(refusals), 30)
        for cls in refusals:
            self.store.lookup_error = cls(f"refused with {cls.__name__}")
            answer = self.client.get(f"/balance/{ALICE.address}")
            assert_error(self, answer, expected_refusal_status(cls), cls.code)
            self.assertEqual(answer.json["error"], f"refused with {cls.__name__}")
            if cls is errors.RateLimited:
                self.assertEqual(answer.header("Retry-After"), "1")
            else:
                self.assertIsNone(answer.header("Retry-After"), cls)

    def test_every_fault_class_answers_5xx_with_its_public_text(self):
        """Each Fault class answers 5xx with its class's public text, never its message; Retry-After when set."""
        faults = classes(errors.Fault)
        self.assertEqual({c.__name__ for c in faults},
                         {"Fault", "Unavailable", "StoreError", "PeerUnreachable", "PeerBusy", "Internal"})
        for cls in faults:
            self.store.lookup_error = cls(f"failed at {SECRET_PATH}" if not cls.shows_message else "catching up")
            answer = self.client.get(f"/balance/{ALICE.address}")
            assert_error(self, answer, answer.status, cls.code)
            self.assertTrue(500 <= answer.status < 600, (cls, answer.status))
            self.assert_no_local_detail(answer)
            expected = "catching up" if cls.shows_message else cls.public
            self.assertEqual(answer.json["error"], expected)
            retry = answer.header("Retry-After")
            self.assertEqual(retry, None if cls.retry_after_s is None else str(cls.retry_after_s), cls)

    def test_tree_has_two_branches(self):
        """Every error class of core/errors.py is either a refusal or a fault, never both."""
        for cls in classes(errors.ChainCoreError):
            if cls is errors.ChainCoreError:
                continue
            self.assertNotEqual(issubclass(cls, errors.Refused), issubclass(cls, errors.Fault), cls)

    def test_syncing_template_is_503_with_retry_after(self):
        """A template asked for while the node catches up is 503 JSON with Retry-After and its reason."""
        self.node.syncing = True
        answer = self.client.get(f"/mining/template?address={ALICE.address}")
        assert_error(self, answer, 503, "unavailable")
        self.assertIn("catching up", answer.json["error"])
        self.assertEqual(answer.header("Retry-After"), str(errors.Unavailable.retry_after_s))
        json.loads(answer.body)
