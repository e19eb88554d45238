"""A block passed on before it is checked against the coins (BIP 152): once its proof of work, header, shape
and merkle root hold, the node announces it and only then connects it; its peers can fetch its compact form
and transactions meanwhile; a block that then breaks a rule of the coins is not held against the peer that
relayed it, while one that breaks any other rule still is."""

from twisted.internet.task import deferLater

from chaincore.core import compact as compact_blocks
from chaincore.core.errors import BadMerkleRoot, BadSignature, MissingInput
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from chaincore.p2p.client import BytesBody
from chaincore.service.timers import after_two_turns
from tests.support.api import funded_chain
from tests.support.builders import ALICE, BOB, make_block, signed_tx
from tests.support.nodes import settled

from .test_compact_relay import payments
from .test_sync import SyncTestCase


def _turn(clock):
    """after_sends for a Clock: the block is checked when the test advances the clock."""
    return lambda: deferLater(clock, 0, lambda: None)


def _bad_signature(tx):
    """tx with its first signature's last byte changed: same shape, a signature that does not verify."""
    first = tx.inputs[0]
    signature = first.signature[:-1] + bytes([first.signature[-1] ^ 1])
    return tx.__class__(tx.version, (first.__class__(first.prev_tx_id, first.output_index, first.public_key,
                                                     signature),) + tx.inputs[1:], tx.outputs, tx.lock_time)


class EarlyRelayTests(SyncTestCase):
    def pair_checking_later(self):
        a, b = self.pair()
        a.node.after_sends = _turn(self.clock)
        return a, b

    def test_block_reaches_the_peer_before_the_sender_connects_it(self):
        """The peer has the block (compact form pushed, a missing transaction fetched from the sender, which
        serves it from the block it is still checking) while the sender has not connected it yet."""
        a, b = self.pair_checking_later()
        txs = payments(3)
        for tx in txs[:2]:
            settled(a.node.submit_tx(tx))
        self.clock.pump([0.05] * 3)
        a.relay.known.add(b.url, txs[2].tx_id)  # so the compact form goes without it and b must ask
        block = make_block(funded_chain()[-1], txs, pay_to=BOB)
        d = a.node.submit_block(block, local=True)
        self.assertNoResult(d)
        self.assertEqual(b.tip(), block.hash)
        self.assertNotEqual(a.tip(), block.hash)
        self.assertEqual([body["indexes"] for path, body in a.posted if path == "/block_txs"], [[3]])
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d).status, "accepted")
        self.assertEqual(a.tip(), block.hash)
        self.assertEqual(b.count("/announce", "POST"), 1)  # connecting it announced nothing more

    def test_without_a_peer_the_block_is_checked_at_once(self):
        """Nothing sent early, nothing to wait for: the answer comes in the same turn."""
        a, _ = self.pair_checking_later()
        a.discovery.table.forget(a.discovery.active_peers()[0])
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        self.assertEqual(settled(a.node.submit_block(block, local=True)).status, "accepted")

    def test_a_coin_rule_broken_is_not_held_against_the_relayer(self):
        """A block spending a coin that does not exist passes every early check: the sender passes it on,
        then refuses it; the peer refuses it too and leaves the sender unpunished."""
        a, b = self.pair_checking_later()
        ghost = signed_tx([(OutPoint(b"\x11" * 32, 0), ALICE)], [(BOB, 1000)])
        block = make_block(funded_chain()[-1], [ghost], pay_to=BOB)
        d = a.node.submit_block(block, local=True)
        self.assertNoResult(d)                             # a has not checked it yet
        self.assertEqual(b.count("/announce", "POST"), 1)  # but passed it on, and b refused it
        self.assertEqual(b.tip(), funded_chain()[-1].hash)
        self.assertIn(a.url, b.discovery.active_peers())
        self.clock.advance(0)
        self.failureResultOf(d, MissingInput)
        self.assertEqual(a.tip(), funded_chain()[-1].hash)

    def test_a_bad_signature_is_a_coin_rule_too(self):
        """A signature is checked with the coins: the relayer of a block with a bad one stays unpunished."""
        a, b = self.pair_checking_later()
        tx = _bad_signature(payments(1)[0])
        block = make_block(funded_chain()[-1], [tx], pay_to=BOB)
        d = a.node.submit_block(block, local=True)
        self.assertNoResult(d)
        self.assertEqual(b.count("/announce", "POST"), 1)
        self.assertEqual(b.discovery.table.get(a.url).score, 0)  # bad-signature carries points otherwise
        self.clock.advance(0)
        self.failureResultOf(d, BadSignature)

    def test_a_second_coin_rule_block_at_one_height_is_held_against_its_announcer(self):
        """An honest node passes on one block a height before checking it: a peer that announces a second block
        breaking a coin rule at the same height is penalised for it, one at the next height is excused again."""
        a, b = self.pair()
        parent = funded_chain()[-1]

        def announce(block):
            everything = range(len(block.transactions))
            form = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(block, everything),
                                                      REGTEST.max_block_size)
            return b.relay.announced(a.url, block.header, form)

        forged = [_bad_signature(tx) for tx in payments(2)]  # bad-signature: a coin rule with points
        self.assertEqual(announce(make_block(parent, [forged[0]], pay_to=BOB)), "fetching")
        self.assertEqual(b.discovery.table.get(a.url).score, 0)
        self.assertEqual(announce(make_block(parent, [forged[1]], pay_to=BOB)), "fetching")
        score = b.discovery.table.get(a.url).score
        self.assertGreater(score, 0)
        good = make_block(parent, pay_to=BOB)
        settled(b.node.submit_block(good))
        later = _bad_signature(payments(3)[2])
        self.assertEqual(announce(make_block(good, [later], pay_to=BOB)), "fetching")
        self.assertEqual(b.discovery.table.get(a.url).score, score)

    def test_any_other_rule_broken_is_held_against_the_announcer(self):
        """A block whose merkle root does not fit is never passed on by an honest node: its announcer is
        penalised as before."""
        a, b = self.pair()
        good = make_block(funded_chain()[-1], payments(2), pay_to=BOB)
        forged = make_block(funded_chain()[-1], payments(1), pay_to=BOB, mine=False)
        # the header of a block of other transactions, served as this one: solved, so only the root is wrong
        header = good.header
        bad = forged.__class__(header, forged.transactions)
        a.canned[f"/block/{header.hash.hex()}"] = lambda request: (200, bad.raw)
        # its compact form, every transaction prefilled: the root does not fit, so b asks for the whole block
        compact = compact_blocks.parse_compact_bytes(compact_blocks.compact_to_bytes(bad, range(len(bad.transactions))),
                                                     REGTEST.max_block_size)
        self.assertEqual(b.relay.announced(a.url, header, compact), "fetching")
        self.assertEqual(a.count(f"/block/{header.hash.hex()}"), 1)
        self.assertGreater(b.discovery.table.get(a.url).score, 0)
        self.assertNotEqual(b.tip(), header.hash)


class EarlyPassRulesTests(SyncTestCase):
    """Which blocks the node hands to its early listeners, and when."""

    def setUp(self):
        super().setUp()
        self.a, self.b = self.pair()
        self.heard = []
        self.a.node.early_block_listeners.insert(0, lambda block, source: self.heard.append(block.hash))

    def test_a_child_of_the_tip_is_passed_on_before_it_is_connected(self):
        seen_tip = []
        self.a.node.early_block_listeners.insert(0, lambda block, source: seen_tip.append(self.a.tip()))
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        settled(self.a.node.submit_block(block, local=True))
        self.assertEqual(self.heard, [block.hash])
        self.assertEqual(seen_tip, [funded_chain()[-1].hash])

    def test_once_a_height(self):
        """A sibling at a height already passed on waits for its check (a stream of siblings is not relayed
        unchecked)."""
        parent = funded_chain()[-1]
        first = make_block(parent, payments(1), pay_to=BOB)
        settled(self.a.node.submit_block(first, local=True))
        self.assertEqual(self.heard, [first.hash])
        child = make_block(first, pay_to=BOB)
        sibling = make_block(parent, payments(2), pay_to=ALICE)
        settled(self.a.node.submit_block(sibling, local=True))
        settled(self.a.node.submit_block(child, local=True))
        self.assertEqual(self.heard, [first.hash, child.hash])

    def test_not_during_a_catch_up_nor_off_the_tip_nor_when_broken(self):
        parent = funded_chain()[-1]
        self.a.node.syncing = True
        settled(self.a.node.submit_block(make_block(parent, payments(1), pay_to=BOB), local=True))
        self.a.node.syncing = False
        off_tip = make_block(funded_chain()[-2], pay_to=ALICE)  # a sibling of the tip's parent
        settled(self.a.node.submit_block(off_tip, local=True))
        tip = self.a.node.block(self.a.node.chain.tip.hash)
        good = make_block(tip, payments(2)[1:], pay_to=BOB)
        broken = good.__class__(good.header, good.transactions[:1])  # solved, but its root is another's
        self.failureResultOf(self.a.node.submit_block(broken, local=True), BadMerkleRoot)
        self.assertEqual(self.heard, [])

    def test_catch_up_runs_are_not_passed_on(self):
        block = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        settled(self.a.node.submit_blocks([block], source=self.b.url, requested=True))
        self.assertEqual(self.heard, [])
        self.assertEqual(self.a.tip(), block.hash)


class PlumbingTests(SyncTestCase):
    def test_after_two_turns_waits_for_the_clock(self):
        d = after_two_turns(self.clock)
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertIsNone(self.successResultOf(d))

    def test_bytes_body_is_written_at_once(self):
        written = []

        class Consumer:
            write = written.append

        body = BytesBody(b"abc")
        self.assertEqual(body.length, 3)
        self.assertIsNone(self.successResultOf(body.startProducing(Consumer())))
        self.assertEqual(written, [b"abc"])
        self.assertRaises(TypeError, BytesBody, "text")

    def test_precheck_memo_does_not_let_another_block_skip_its_checks(self):
        """precheck remembers the block object it passed; an equal-looking but broken block is still checked."""
        a, _ = self.pair()
        chain = a.node.chain
        good = make_block(funded_chain()[-1], payments(1), pay_to=BOB)
        self.assertTrue(chain.precheck(good, int(self.clock.seconds())))
        broken = good.__class__(good.header, good.transactions[:1])
        self.assertFalse(chain.precheck(broken, int(self.clock.seconds())))
        self.assertRaises(BadMerkleRoot, chain.accept_block, broken, int(self.clock.seconds()))
        self.assertFalse(chain.precheck(make_block(funded_chain()[-2], pay_to=ALICE), int(self.clock.seconds())))
