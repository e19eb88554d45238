"""The budgets of a wired node (build_node), driven by its task.Clock: request tokens per client class with 429
and Retry-After, the recently-rejected set, the shared signature cache, the connection guard's deadlines and
the metrics an operator reads."""

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.budgets import DEFAULT_RATES, ENDPOINT_COSTS, STRANGER
from chaincore.core import jsonview, keys, rules
from chaincore.core.errors import BadSignature
from chaincore.core.params import REGTEST
from chaincore.service.config import NodeLimits
from chaincore.service.workers import InlineOffloader
from tests.support.api import APIClient, assert_error, funded_node, mature_outpoint
from tests.support.builders import ALICE, BOB, signed_tx

STRANGER_HOST = "198.18.0.7"
PEER_HOST = "198.18.0.9"
FEE = 10_000


class CountingOffloader(InlineOffloader):
    """Runs work inline and keeps the arguments of every job, so a test sees what left the reactor."""

    def __init__(self):
        self.jobs = []

    def run(self, fn, *args):
        self.jobs.append(args)
        return super().run(fn, *args)


def metric(service, line_start: str) -> float:
    """The value of the first /metrics line starting with line_start (0.0 when absent)."""
    for line in service.metrics.render().decode().splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def tampered(tx, index: int = 0):
    """tx with the signature of input `index` changed by one bit."""
    sigs = [i.signature for i in tx.inputs]
    sig = bytearray(sigs[index])
    sig[5] ^= 1
    sigs[index] = bytes(sig)
    return tx.with_signatures(sigs)


class RequestBudgetTests(SynchronousTestCase):
    def setUp(self):
        self.service = funded_node()
        self.clock = self.service.node.clock
        self.stranger = APIClient(self, self.service, client_address=STRANGER_HOST)
        self.local = APIClient(self, self.service)  # 127.0.0.1

    def spend_stranger_chain_budget(self) -> int:
        """Ask /chain as the stranger until refused; how many were answered."""
        answered = 0
        while True:
            answer = self.stranger.get("/chain?start=0&limit=5")
            if answer.status != 200:
                return answered
            answered += 1
            self.assertLess(answered, 1_000)

    def test_stranger_gets_429_with_retry_after_then_tokens_come_back(self):
        """A stranger's bucket pays for burst/cost requests; the next is 429 JSON with Retry-After; time refills it."""
        burst, cost = DEFAULT_RATES[STRANGER].burst, ENDPOINT_COSTS["chain"][1]
        self.assertEqual(self.spend_stranger_chain_budget(), burst // cost)
        refused = self.stranger.get("/chain?start=0&limit=5")
        assert_error(self, refused, 429, "rate-limited")
        wait = int(refused.header("Retry-After"))
        self.assertEqual(wait, 1)  # 20 tokens at 20 a second
        self.clock.advance(wait)
        self.assertEqual(self.stranger.get("/chain?start=0&limit=5").status, 200)

    def test_loopback_and_known_peers_keep_their_own_budgets(self):
        """While a stranger is refused, the operator (loopback) and a known peer are still served."""
        table = self.service.peers.discovery.table
        table.add(f"http://{PEER_HOST}:5000", self.clock.seconds())
        table.mark_alive(f"http://{PEER_HOST}:5000", "peer-node", self.clock.seconds())
        self.spend_stranger_chain_budget()
        peer = APIClient(self, self.service, client_address=PEER_HOST)
        for _ in range(int(DEFAULT_RATES["peer"].burst // ENDPOINT_COSTS["chain"][1])):
            self.assertEqual(peer.get("/chain?start=0&limit=5").status, 200)
        for _ in range(50):
            self.assertEqual(self.local.get("/chain?start=0&limit=5").status, 200)
        self.assertEqual(self.stranger.get("/chain?start=0&limit=5").status, 429)

    def test_a_peer_that_becomes_active_gets_its_budget_within_a_second(self):
        """The active peers' hosts are read at most once a second: a peer that just became active is metered as
        a stranger until then, as a peer after."""
        peer = APIClient(self, self.service, client_address=PEER_HOST)
        peer.get("/chain?start=0&limit=5")  # the hosts are read now, without it
        table = self.service.peers.discovery.table
        table.add(f"http://{PEER_HOST}:5000", self.clock.seconds())
        table.mark_alive(f"http://{PEER_HOST}:5000", "peer-node", self.clock.seconds())
        answered = 0
        while peer.get("/chain?start=0&limit=5").status == 200:
            answered += 1
        self.assertEqual(answered, DEFAULT_RATES[STRANGER].burst // ENDPOINT_COSTS["chain"][1] - 1)
        self.clock.advance(1)
        for _ in range(int(DEFAULT_RATES["peer"].burst // ENDPOINT_COSTS["chain"][1])):
            self.assertEqual(peer.get("/chain?start=0&limit=5").status, 200)

    def test_cheap_endpoints_are_not_charged(self):
        """/status stays open to a stranger whose bucket is empty."""
        self.spend_stranger_chain_budget()
        self.assertEqual(self.stranger.get("/status").status, 200)

    def test_submissions_are_charged_to_strangers_only(self):
        """POST /add_transaction costs a stranger tokens (then 429); the operator's are never counted."""
        body = {"transaction": {"version": 1}}
        answers = [self.stranger.post("/add_transaction", body).status for _ in range(80)]
        self.assertIn(429, answers)
        self.assertEqual(answers.index(429), DEFAULT_RATES[STRANGER].burst // ENDPOINT_COSTS["add_transaction"][1])
        self.assertTrue(all(self.local.post("/add_transaction", body).status == 400 for _ in range(200)))

    def test_explorer_pages_are_charged(self):
        """Explorer pages draw on the same bucket: a stranger who spent it gets 429 on a page too."""
        self.spend_stranger_chain_budget()
        assert_error(self, self.stranger.get("/explorer/mempool"), 429, "rate-limited")

    def test_429s_are_counted_by_endpoint_class(self):
        """/metrics counts each 429 under its endpoint class (one bucket per address pays for every class)."""
        self.spend_stranger_chain_budget()
        self.stranger.get(f"/utxos/{ALICE.address}")
        self.assertEqual(metric(self.service, 'chaincore_rate_limited_total{endpoint_class="bulk"}'), 1)
        self.assertEqual(metric(self.service, 'chaincore_rate_limited_total{endpoint_class="address"}'), 1)
        self.assertEqual(metric(self.service, 'chaincore_rate_limited_total{endpoint_class="block"}'), 0)

    def test_limits_come_from_the_options(self):
        """build_node's limits set the stranger's bucket: a burst of 20 pays for one /chain."""
        service = funded_node(limits=NodeLimits(rates=dict(DEFAULT_RATES, stranger=type(DEFAULT_RATES[STRANGER])(
            burst=20, per_s=1))))
        stranger = APIClient(self, service, client_address=STRANGER_HOST)
        self.assertEqual(stranger.get("/chain?start=0&limit=5").status, 200)
        refused = stranger.get("/chain?start=0&limit=5")
        self.assertEqual(refused.status, 429)
        self.assertEqual(refused.header("Retry-After"), "20")


class BlockCostTests(SynchronousTestCase):
    def test_long_answers_cost_a_token_per_ten_blocks(self):
        """A stranger's /chain of 600 blocks costs 60 tokens: two from a full bucket, then 3 s to wait."""
        from twisted.internet.task import Clock
        from chaincore.api.budgets import RequestBudget
        clock = Clock()
        budget = RequestBudget(clock)
        decisions = [budget.charge(STRANGER_HOST, "chain", blocks=600)[1] for _ in range(3)]
        self.assertEqual([d.allowed for d in decisions], [True, True, False])
        self.assertEqual(decisions[2].retry_after_header, "3")
        clock.advance(0.1)  # two tokens back: a /block (2 tokens) passes, a short /chain (20) does not
        self.assertTrue(budget.charge(STRANGER_HOST, "block")[1].allowed)
        self.assertFalse(budget.charge(STRANGER_HOST, "chain", blocks=5)[1].allowed)


class StrictJSONTests(SynchronousTestCase):
    def test_deep_nesting_is_a_400(self):
        """A body nested 100,000 deep answers 400 malformed (not a 500) and changes nothing."""
        service = funded_node()
        client = APIClient(self, service)
        deep = b'{"transaction": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        assert_error(self, client.request("POST", "/add_transaction", data=deep), 400, "malformed")
        assert_error(self, client.request("POST", "/submit_block", data=deep), 400, "malformed")
        self.assertEqual(len(service.node.mempool), 0)


class CPUBudgetTests(SynchronousTestCase):
    def setUp(self):
        self.offloader = CountingOffloader()
        self.service = funded_node(offloader=self.offloader)
        self.node = self.service.node
        self.verified = []
        real = keys.verify_batch

        def counting(checks):
            checks = list(checks)
            bad = real(checks)
            self.verified.extend(checks if bad < 0 else checks[:bad + 1])  # what it verified
            return bad
        self.patch(keys, "verify_batch", counting)

    def amplifier(self, n_inputs: int = 9):
        """One transaction spending n_inputs of ALICE's coins: every input carries the same (key, sighash,
        signature) check, except the last, whose signature is bad."""
        spends = [(mature_outpoint(h), ALICE) for h in range(1, n_inputs + 1)]
        total = sum(REGTEST.block_reward(h) for h in range(1, n_inputs + 1))
        tx = signed_tx(spends, [(BOB, total - FEE)])
        return tampered(tx, n_inputs - 1)

    def test_identical_checks_are_verified_once_in_a_worker(self):
        """Nine inputs sharing one signature and a bad last one cost two verifications, both in a worker."""
        tx = self.amplifier()
        self.failureResultOf(self.node.submit_tx(tx), BadSignature)
        self.assertEqual(len(self.offloader.jobs), 1)
        (buf,), = self.offloader.jobs
        self.assertEqual([len(checks) for checks in rules.decode_groups(buf)], [2])
        self.assertEqual(len(self.verified), 2)
        self.assertGreaterEqual(metric(self.service, "chaincore_signature_cache_hits_total"), 7)

    def test_a_refused_transaction_is_refused_again_without_any_check(self):
        """The second submission of a refused transaction sends nothing to the workers and verifies nothing."""
        tx = self.amplifier()
        self.failureResultOf(self.node.submit_tx(tx), BadSignature)
        jobs, verified = len(self.offloader.jobs), len(self.verified)
        err = self.failureResultOf(self.node.submit_tx(tx), BadSignature).value
        self.assertIn("refused recently", str(err))
        self.assertEqual((len(self.offloader.jobs), len(self.verified)), (jobs, verified))
        self.assertEqual(metric(self.service, "chaincore_recent_reject_hits_total"), 1)

    def test_the_same_body_is_refused_before_it_is_parsed(self):
        """A body refused at this tip is refused again from its digest: parse_tx does not run a second time."""
        body = {"transaction": jsonview.tx_to_json(self.amplifier())}
        client = APIClient(self, self.service)
        assert_error(self, client.post("/add_transaction", body), 400, "bad-signature")
        parsed = []
        real = jsonview.parse_tx
        self.patch(jsonview, "parse_tx", lambda *a, **k: parsed.append(a) or real(*a, **k))
        again = client.post("/add_transaction", body)
        assert_error(self, again, 400, "bad-signature")
        self.assertIn("refused recently", again.json["error"])
        self.assertEqual(parsed, [])

    def test_cheap_refusals_are_remembered_too(self):
        """A transaction refused by a cheap rule (insufficient funds) is remembered: no second check runs."""
        tx = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, REGTEST.block_reward(1) + 1)])
        self.failureResultOf(self.node.submit_tx(tx))
        self.assertIn(tx.tx_id, {k for k in self.node.recent_rejects._refused})
        self.assertIn("refused recently", str(self.failureResultOf(self.node.submit_tx(tx)).value))

    def test_a_new_tip_forgets_the_refusals(self):
        """After the tip changes, a refused transaction is checked again (its refusal may no longer hold)."""
        from tests.support.builders import make_block
        tx = self.amplifier()
        self.failureResultOf(self.node.submit_tx(tx), BadSignature)
        tip = self.node.chain.block(self.node.chain.tip.hash)
        self.node.chain.accept_block(make_block(tip, pay_to=BOB), self.node.now())  # a new tip
        jobs = len(self.offloader.jobs)
        err = self.failureResultOf(self.node.submit_tx(tx), BadSignature).value
        self.assertNotIn("refused recently", str(err))
        self.assertEqual(len(self.offloader.jobs), jobs + 1)

    def test_a_valid_transaction_is_verified_in_a_worker_only(self):
        """A valid transaction from the API is verified in a worker; the mempool does not verify it again."""
        tx = signed_tx([(mature_outpoint(2), ALICE)], [(BOB, REGTEST.block_reward(2) - FEE)])
        self.assertEqual(self.successResultOf(self.node.submit_tx(tx)).status, "accepted")
        self.assertEqual(len(self.offloader.jobs), 1)
        self.assertEqual(len(self.verified), 1)


class ConnectionBudgetTests(SynchronousTestCase):
    """The guard build_node puts in front of the site, on the node's Clock."""

    def setUp(self):
        self.service = funded_node(limits=NodeLimits(per_address={"loopback": 2, "peer": 4, "stranger": 1}))
        self.factory = self.service.listening
        self.clock = self.service.node.clock

    def connect(self, host=STRANGER_HOST):
        address = IPv4Address("TCP", host, 40000)
        proto = self.factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        return proto, transport

    def test_slow_headers_get_408_at_the_deadline(self):
        """Headers still incomplete 10 s after their first byte get 408 JSON, are closed and counted."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /status HTTP/1.1\r\n")
        self.clock.advance(9.9)
        self.assertEqual(transport.value(), b"")
        self.clock.advance(0.2)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408"))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(metric(self.service, 'chaincore_slow_clients_closed_total{reason="header-timeout"}'), 1)

    def test_slow_body_gets_408_after_the_grace(self):
        """A body below 10 kB/s after the 10 s grace gets 408 and is counted."""
        proto, transport = self.connect()
        proto.dataReceived(b"POST /submit_block HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000000\r\n\r\n")
        for _ in range(11):
            proto.dataReceived(b"x" * 100)
            self.clock.advance(1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408"))
        self.assertEqual(metric(self.service, 'chaincore_slow_clients_closed_total{reason="body-too-slow"}'), 1)

    def test_per_address_cap_answers_429_and_is_counted(self):
        """A stranger's second connection (cap 1 from the limits) is answered 429 JSON with Retry-After."""
        self.connect()
        _, second = self.connect()
        head, _, body = second.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 429"))
        self.assertIn(b"Retry-After: 5", head)
        self.assertIn("error", json.loads(body))
        self.assertEqual(metric(self.service, 'chaincore_connections_refused_total{reason="per-address"}'), 1)
        self.connect("127.0.0.1")  # the operator's own places are untouched
        self.assertEqual(self.factory.connections.count("127.0.0.1"), 1)

    def test_a_transaction_too_big_for_the_mempool_is_refused_from_its_length(self):
        """POST /add_transaction declaring a body over 400 kB is answered 413 before any of it is read."""
        proto, transport = self.connect("127.0.0.1")
        proto.dataReceived(b"POST /add_transaction HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 768000\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413"))
        self.assertIn(b"request body over 400000 bytes", transport.value())

    def test_a_complete_request_is_served_through_the_guard(self):
        """A whole request through the guarded factory reaches the API and is answered."""
        proto, transport = self.connect()
        proto.dataReceived(b"GET /status HTTP/1.1\r\nHost: n\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200"))
        self.assertIn(b'"height":110', transport.value())
