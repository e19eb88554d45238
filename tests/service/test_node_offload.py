"""Big blocks have their signatures verified through the node's offloader, before the chain state sees them."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core import rules
from chaincore.core.errors import BadSignature, DoubleSpend
from chaincore.core.tx import OutPoint
from chaincore.service import node as node_module
from chaincore.service.node import OFFLOAD_MIN_INPUTS
from chaincore.service.workers import InlineOffloader
from tests.support.builders import KEYS, make_block, regtest_chain, signed_tx
from tests.support.nodes import make_node, settled


class CountingOffloader(InlineOffloader):
    """Runs work inline and remembers how many jobs it was given."""

    def __init__(self):
        self.jobs = 0

    def run(self, fn, *args):
        self.jobs += 1
        return super().run(fn, *args)


def fan_out_chain(n_outputs: int):
    """A regtest chain whose block 102 holds one transaction paying n_outputs coins to KEYS[1]."""
    chain = regtest_chain(101, pay_to=KEYS[0])
    coinbase = OutPoint(chain[1].transactions[0].tx_id, 0)
    each = (50 * 10**8 - 100_000) // n_outputs
    fan = signed_tx([(coinbase, KEYS[0])], [(KEYS[1], each)] * n_outputs)
    chain.append(make_block(chain[-1], [fan], fees=50 * 10**8 - each * n_outputs))
    return chain, fan, each


_FIXTURE = []


class OffloadTests(SynchronousTestCase):
    def setUp(self):
        if not _FIXTURE:  # built once: signing a fan-out of 510 outputs takes a moment
            _FIXTURE.append(fan_out_chain(OFFLOAD_MIN_INPUTS + 10))
        self.chain, self.fan, self.each = _FIXTURE[0]

    def node(self):
        clock = Clock()
        clock.advance(self.chain[-1].header.timestamp + 60)
        offloader = CountingOffloader()
        return make_node(clock, offloader=offloader, blocks=self.chain).node, offloader

    def held_node(self, clock, offloader):
        """A node on the fixture chain, its blocks taken as this machine's (inline), then offloader held."""
        node = make_node(clock, offloader=offloader).node
        for block in self.chain[1:]:
            settled(node.submit_block(block, local=True))
        return node

    def big_block(self, node, tamper: bool = False):
        spends = [(OutPoint(self.fan.tx_id, i), KEYS[1]) for i in range(OFFLOAD_MIN_INPUTS + 10)]
        txs = [signed_tx(spends[i:i + 10], [(KEYS[2], 10 * self.each - 5000)])
               for i in range(0, len(spends), 10)]
        if tamper:
            bad = txs[-1]
            sig = bytearray(bad.inputs[0].signature)
            sig[5] ^= 1
            txs[-1] = bad.with_signatures([bytes(sig)] + [i.signature for i in bad.inputs[1:]])
        return make_block(self.chain[-1], txs, fees=5000 * len(txs))

    def test_big_block_is_verified_in_batches(self):
        """A block with more than OFFLOAD_MIN_INPUTS unverified inputs goes to the offloader in batches."""
        node, offloader = self.node()
        block = self.big_block(node)
        before = offloader.jobs
        result = self.successResultOf(node.submit_block(block))
        self.assertTrue(result.main_chain)
        self.assertEqual(offloader.jobs - before, 3)  # 510 inputs in batches of at least 250
        self.assertEqual(node.chain.tip.hash, block.hash)

    def test_bad_signature_in_a_big_block_is_refused(self):
        """A bad signature found by a worker batch is refused with BadSignature, and the tip stays."""
        node, offloader = self.node()
        tip = node.chain.tip.hash
        failure = self.failureResultOf(node.submit_block(self.big_block(node, tamper=True)), BadSignature)
        self.assertEqual(failure.value.code, "bad-signature")
        self.assertEqual(node.chain.tip.hash, tip)
        self.assertGreater(offloader.jobs, 0)

    def test_catch_up_batch_is_verified_in_workers(self):
        """A catch-up batch (submit_blocks) has a big block's signatures checked in workers, then is taken."""
        node, offloader = self.node()
        block = self.big_block(node)
        before = offloader.jobs
        results, error = self.successResultOf(node.submit_blocks([block]))
        self.assertIsNone(error)
        self.assertEqual(offloader.jobs - before, 3)
        self.assertTrue(all(tx.tx_id in node.sig_cache for tx in block.transactions[1:]))
        self.assertTrue(results[0].main_chain)

    def test_catch_up_batch_stops_at_an_invalid_block(self):
        """submit_blocks keeps the blocks before an invalid one and reports the invalid one's rule."""
        node, offloader = self.node()
        good = self.big_block(node)
        bad = make_block(good, timestamp=0)
        results, error = self.successResultOf(node.submit_blocks([good, bad]))
        self.assertEqual([r.main_chain for r in results], [True])
        self.assertEqual(error.code, "time-too-old")
        self.assertEqual(node.chain.tip.hash, good.hash)

    def test_blocks_connect_as_their_batches_return(self):
        """In a run of two big blocks, the first is connected as soon as its own batches are back, while the
        second's are still out; the run ends with both."""
        clock = Clock()
        clock.advance(self.chain[-1].header.timestamp + 60)
        offloader = HeldOffloader()
        node = self.held_node(clock, offloader)
        spends = [(OutPoint(self.fan.tx_id, i), KEYS[1]) for i in range(500)]
        first_txs = [signed_tx(spends[i:i + 10], [(KEYS[2], 10 * self.each - 5000)]) for i in range(0, 500, 10)]
        first = make_block(self.chain[-1], first_txs, fees=5000 * 50)
        second_txs = [signed_tx([(OutPoint(tx.tx_id, 0), KEYS[2])], [(KEYS[3], 10 * self.each - 10_000)])
                      for tx in first_txs]
        second = make_block(first, second_txs, fees=5000 * 50)
        d = node.submit_blocks([first, second])
        self.assertEqual(len(offloader.held), 3)  # 250 + 250 inputs of the first block, 50 of the second
        offloader.release(2)
        self.assertNoResult(d)
        self.assertEqual(node.chain.tip.hash, first.hash)
        offloader.release()
        results, error = self.successResultOf(d)
        self.assertIsNone(error)
        self.assertEqual([r.block_hash for r in results], [first.hash, second.hash])
        self.assertEqual(node.chain.tip.hash, second.hash)

    def test_blocks_preverified_ahead_are_not_sent_again(self):
        """A block whose signatures went to the workers ahead (preverify_blocks) is submitted without a batch
        of its own: its run waits for the batches already out and is taken when they are back."""
        clock = Clock()
        clock.advance(self.chain[-1].header.timestamp + 60)
        offloader = HeldOffloader()
        node = self.held_node(clock, offloader)
        block = self.big_block(node)
        gate, gated = node_module._worth_verifying, []
        self.patch(node_module, "_worth_verifying", lambda b, params: (gated.append(b.hash), gate(b, params))[1])
        sanity, checked = rules.check_block_sanity, []
        self.patch(rules, "check_block_sanity", lambda b, params: (checked.append(b.hash), sanity(b, params))[1])
        node.preverify_blocks([block])
        self.assertEqual(len(offloader.held), 3)
        d = node.submit_blocks([block])
        self.assertEqual(len(offloader.held), 3)  # nothing sent twice
        self.assertEqual(gated, [block.hash])     # nor its gate checked again
        self.assertNoResult(d)
        offloader.release()
        results, error = self.successResultOf(d)
        self.assertIsNone(error)
        self.assertEqual(node.chain.tip.hash, block.hash)
        self.assertEqual(checked, [block.hash])  # every rule of it, once, by the chain state
        self.assertEqual(node._verifying, {})

    def test_block_not_matching_its_merkle_root_costs_no_worker_time(self):
        """A block whose transactions are not the ones its header commits to sends no batch to the workers and
        is refused by the chain state with bad-merkle-root."""
        node, offloader = self.node()
        good = self.big_block(node)
        block = make_block(self.chain[-1], good.transactions[1:-1], fees=5000 * (len(good.transactions) - 2))
        block = type(block)(block.header, good.transactions)  # the header of fewer transactions
        before, tip = offloader.jobs, node.chain.tip.hash
        failure = self.failureResultOf(node.submit_block(block, source="http://localhost:5001"))
        self.assertEqual(failure.value.code, "bad-merkle-root")
        self.assertEqual(offloader.jobs, before)
        self.assertEqual(node.chain.tip.hash, tip)

    def test_bad_signature_preverified_ahead_is_refused(self):
        """A bad signature in a block preverified ahead is still refused with its rule when it is submitted."""
        clock = Clock()
        clock.advance(self.chain[-1].header.timestamp + 60)
        offloader = HeldOffloader()
        node = self.held_node(clock, offloader)
        tip = node.chain.tip.hash
        block = self.big_block(node, tamper=True)
        node.preverify_blocks([block])
        d = node.submit_blocks([block])
        offloader.release()
        results, error = self.successResultOf(d)
        self.assertEqual(results, [])
        self.assertEqual(error.code, "bad-signature")
        self.assertEqual(node.chain.tip.hash, tip)

    def test_lost_batch_is_verified_by_the_chain_state(self):
        """A batch lost with its worker leaves its block to the chain state, which verifies and takes it."""
        clock = Clock()
        clock.advance(self.chain[-1].header.timestamp + 60)
        offloader = HeldOffloader()
        node = self.held_node(clock, offloader)
        block = self.big_block(node)
        d = node.submit_block(block)
        offloader.fail()
        self.assertEqual(self.successResultOf(d).block_hash, block.hash)
        self.assertEqual(node.chain.tip.hash, block.hash)

    def test_small_local_block_stays_inline(self):
        """A block of this machine's miner with few inputs is accepted without the offloader."""
        node, offloader = self.node()
        spend = signed_tx([(OutPoint(self.fan.tx_id, 0), KEYS[1])], [(KEYS[2], self.each - 5000)])
        block = make_block(self.chain[-1], [spend], fees=5000)
        before = offloader.jobs
        self.successResultOf(node.submit_block(block, local=True))
        self.assertEqual(offloader.jobs, before)

    def test_small_block_from_the_network_goes_to_the_workers(self):
        """A block from a peer or a client has even its one signature checked in a worker, not the reactor."""
        node, offloader = self.node()
        spend = signed_tx([(OutPoint(self.fan.tx_id, 0), KEYS[1])], [(KEYS[2], self.each - 5000)])
        block = make_block(self.chain[-1], [spend], fees=5000)
        before = offloader.jobs
        self.successResultOf(node.submit_block(block, source="http://localhost:5001"))
        self.assertEqual(offloader.jobs, before + 1)
        self.assertEqual(node.chain.tip.hash, block.hash)


class HeldOffloader(InlineOffloader):
    """Holds every job until release(), so a test can act while signatures are being verified."""

    workers = 2

    def __init__(self):
        self.held = []

    def run(self, fn, *args):
        from twisted.internet import defer
        d = defer.Deferred()
        self.held.append((d, fn, args))
        return d

    def release(self, n: int | None = None):
        """Run the first n held jobs (all when None) and fire their Deferreds."""
        n = len(self.held) if n is None else n
        held, self.held = self.held[:n], self.held[n:]
        for d, fn, args in held:
            d.callback(fn(*args))

    def fail(self):
        """Fail every held job, as a worker that died would."""
        held, self.held = self.held, []
        for d, _, _ in held:
            d.errback(RuntimeError("worker lost"))


class TransactionIntakeTests(SynchronousTestCase):
    def setUp(self):
        chain = regtest_chain(101, pay_to=KEYS[0])
        self.coin = OutPoint(chain[1].transactions[0].tx_id, 0)
        clock = Clock()
        clock.advance(chain[-1].header.timestamp + 60)
        self.offloader = HeldOffloader()
        self.node = make_node(clock, offloader=self.offloader, blocks=chain).node

    def test_signatures_are_checked_off_the_reactor(self):
        """A transaction enters the mempool only once its signature batch came back valid."""
        tx = signed_tx([(self.coin, KEYS[0])], [(KEYS[1], 50 * 10**8 - 10_000)])
        d = self.node.submit_tx(tx)
        self.assertNoResult(d)
        self.assertNotIn(tx.tx_id, self.node.mempool)
        self.offloader.release()
        self.assertEqual(self.successResultOf(d).status, "accepted")
        self.assertIn(tx.tx_id, self.node.mempool)

    def test_conflict_accepted_during_verification_wins(self):
        """Of two transactions spending one coin, the first to finish enters; the other is a double spend."""
        first = signed_tx([(self.coin, KEYS[0])], [(KEYS[1], 50 * 10**8 - 10_000)])
        second = signed_tx([(self.coin, KEYS[0])], [(KEYS[2], 50 * 10**8 - 20_000)])
        d1 = self.node.submit_tx(first)
        d2 = self.node.submit_tx(second)
        self.offloader.release()  # the first batch; the second, queued meanwhile, leaves now
        self.assertEqual(self.successResultOf(d1).status, "accepted")
        self.assertNoResult(d2)
        self.offloader.release()
        self.assertEqual(self.failureResultOf(d2, DoubleSpend).value.code, "double-spend")
        self.assertEqual(self.node.mempool.transactions(), [first])

    def test_bad_signature_is_refused_with_its_rule(self):
        """A transaction whose batch fails is refused with BadSignature and never enters the pool."""
        tx = signed_tx([(self.coin, KEYS[0])], [(KEYS[1], 50 * 10**8 - 10_000)])
        sig = bytearray(tx.inputs[0].signature)
        sig[3] ^= 1
        bad = tx.with_signatures([bytes(sig)])
        d = self.node.submit_tx(bad)
        self.offloader.release()
        self.assertEqual(self.failureResultOf(d, BadSignature).value.code, "bad-signature")
        self.assertEqual(len(self.node.mempool), 0)
