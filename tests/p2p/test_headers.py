"""The header tree: each batch connects to the locator we sent and header to header, each header meets its
proof of work and expected target, misbehaviour comes back as a value, and the tree is bounded in bytes."""

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.chainstate import ChainState
from chaincore.core.errors import (
    BadProofOfWork, BadTarget, DuplicateHeaders, RepeatedHeaders, TimeWarp, UnbackedChainwork, UnconnectedHeaders,
)
from chaincore.core.params import MAIN, REGTEST
from chaincore.core.store import MemoryStore
from chaincore.p2p.headers import NODE_BYTES, HeaderTree
from chaincore.p2p.peers import penalty_for
from tests.support.builders import make_block, regtest_chain

NOW = REGTEST.genesis.header.timestamp + 1_000_000
OURS = regtest_chain(5)                                  # what our node holds
THEIRS = regtest_chain(12, extra=b"theirs")              # a heavier branch forked at genesis
PEER = "http://peer"


def answer(chain: list, locator: list, limit: int = 2000) -> list:
    """What an honest peer whose main chain is `chain` answers to /headers: what follows the first hash it knows."""
    index = {b.hash: n for n, b in enumerate(chain)}
    start = next((index[h] for h in locator if h in index), 0)
    return [b.header for b in chain[start + 1:start + 1 + limit]]


def new_tree(blocks=OURS[1:], params=REGTEST, **bounds) -> HeaderTree:
    chain = ChainState(MemoryStore(), params)
    for block in blocks:
        chain.accept_block(block, NOW)
    return HeaderTree(params, chain, **bounds)


class BatchTests(SynchronousTestCase):
    def test_valid_batch_is_kept_with_its_work(self):
        """An honest answer is kept: every header added, the peer's best is its tip, and it beats our tip."""
        tree = new_tree()
        report = tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        self.assertIsNone(report.misbehaviour)
        self.assertEqual(report.added, 12)
        self.assertEqual(report.best.hash, THEIRS[-1].hash)
        self.assertEqual(tree.best().hash, THEIRS[-1].hash)
        self.assertGreater(tree.best().chainwork, tree.entry(OURS[-1].hash).chainwork)

    def test_deep_fork_is_followed_batch_after_batch(self):
        """A fork longer than one answer moves on: the next locator starts at what the peer sent, not our tip."""
        tree = new_tree()
        first = tree.receive(PEER, answer(THEIRS, tree.ask(PEER), limit=4), NOW, batch_limit=4)
        self.assertTrue(first.more)
        self.assertEqual(tree.best().hash, OURS[-1].hash)  # 4 headers do not outweigh our 5 blocks
        locator = tree.ask(PEER)
        self.assertEqual(locator[0], THEIRS[4].hash)
        for _ in range(2):
            report = tree.receive(PEER, answer(THEIRS, locator, limit=4), NOW, batch_limit=4)
            self.assertIsNone(report.misbehaviour)
            locator = tree.ask(PEER)
        self.assertEqual(tree.best().hash, THEIRS[-1].hash)
        self.assertEqual(tree.locator()[-1], REGTEST.genesis_hash)

    def test_headers_not_following_the_locator(self):
        """A first header whose parent is none of the locator's hashes is UnconnectedHeaders."""
        tree = new_tree()
        tree.ask(PEER)
        report = tree.receive(PEER, [b.header for b in THEIRS[3:6]], NOW)
        self.assertIsInstance(report.misbehaviour, UnconnectedHeaders)
        self.assertEqual((report.added, len(tree)), (0, 0))

    def test_headers_not_linked_to_each_other(self):
        """A batch broken in the middle keeps the headers before the break and reports UnconnectedHeaders."""
        tree = new_tree()
        headers = answer(THEIRS, tree.ask(PEER))
        report = tree.receive(PEER, headers[:3] + headers[4:], NOW)
        self.assertIsInstance(report.misbehaviour, UnconnectedHeaders)
        self.assertEqual(report.added, 3)

    def test_unsolicited_headers(self):
        """Headers sent without a request outstanding are UnconnectedHeaders."""
        tree = new_tree()
        report = tree.receive(PEER, [THEIRS[1].header], NOW)
        self.assertIsInstance(report.misbehaviour, UnconnectedHeaders)

    def test_duplicate_header_in_one_answer(self):
        """The same header twice in one answer is DuplicateHeaders."""
        tree = new_tree()
        headers = answer(THEIRS, tree.ask(PEER))
        report = tree.receive(PEER, headers[:2] + headers[1:2], NOW)
        self.assertIsInstance(report.misbehaviour, DuplicateHeaders)

    def test_repeated_answer(self):
        """Sending again only headers it sent before, though our locator named them, is RepeatedHeaders."""
        tree = new_tree()
        headers = answer(THEIRS, tree.ask(PEER))
        tree.receive(PEER, headers, NOW)
        tree.ask(PEER)
        report = tree.receive(PEER, headers, NOW)
        self.assertIsInstance(report.misbehaviour, RepeatedHeaders)

    def test_claimed_chainwork_not_backed(self):
        """A last answer whose headers add up to less than the claimed chainwork is UnbackedChainwork."""
        tree = new_tree()
        honest = tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW,
                              claimed_chainwork=tree.entry(OURS[-1].hash).chainwork)
        self.assertIsNone(honest.misbehaviour)
        liar = "http://liar"
        report = tree.receive(liar, answer(THEIRS, tree.ask(liar)), NOW, claimed_chainwork=10 ** 30)
        self.assertIsInstance(report.misbehaviour, UnbackedChainwork)
        empty = tree.receive(liar, [], NOW, claimed_chainwork=10 ** 30)  # no request outstanding: nothing backs it
        self.assertIsNone(empty.misbehaviour)
        tree.ask(liar)
        self.assertIsInstance(tree.receive(liar, [], NOW, claimed_chainwork=10 ** 30).misbehaviour,
                              UnbackedChainwork)

    def test_empty_answer_backed_by_earlier_headers(self):
        """A peer with nothing new after its earlier headers backs a claim equal to their work."""
        tree = new_tree()
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        claimed = tree.peer_best(PEER).chainwork
        self.assertIsNone(tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW,
                                       claimed_chainwork=claimed).misbehaviour)
        tree.ask(PEER)
        self.assertIsInstance(tree.receive(PEER, [], NOW, claimed_chainwork=claimed + 1).misbehaviour,
                              UnbackedChainwork)

    def test_bad_proof_of_work(self):
        """A header that does not meet its own target is reported with BadProofOfWork."""
        tree = new_tree()
        headers = answer(THEIRS, tree.ask(PEER))
        bad = next(h for h in (headers[0].with_nonce(n) for n in range(100)) if not h.has_valid_pow)
        report = tree.receive(PEER, [bad], NOW)
        self.assertIsInstance(report.misbehaviour, BadProofOfWork)
        self.assertEqual(len(tree), 0)

    def test_wrong_target(self):
        """A header with a target other than the one its ancestors imply is reported with BadTarget."""
        tree = new_tree()
        tree.ask(PEER)
        easy = make_block(OURS[0], target=REGTEST.pow_limit >> 1, extra=b"t")
        report = tree.receive(PEER, [easy.header], NOW)
        self.assertIsInstance(report.misbehaviour, BadTarget)

    def test_misbehaviour_codes_earn_penalties(self):
        """Every misbehaviour the tree reports has a code that peers.PENALTIES punishes."""
        for error in (UnconnectedHeaders, DuplicateHeaders, RepeatedHeaders, UnbackedChainwork, BadProofOfWork):
            self.assertGreater(penalty_for(error.code), 0, error.code)


def easy_main():
    """main's rules (retarget every 30 blocks, time warp) over a target easy enough to mine in tests."""
    for nonce in range(100):
        params = replace(MAIN, pow_limit=(1 << 252) - 1, genesis_nonce=nonce)
        if params.genesis.header.has_valid_pow:
            return params
    raise AssertionError("no genesis nonce")


EASY_MAIN = easy_main()


def main_chain(n: int, spacing_s: int = 20, start=None, last_offset_s: int = 0) -> list:
    """n blocks of EASY_MAIN on start, every spacing_s seconds, each with the target the rules expect."""
    blocks = [start or EASY_MAIN.genesis]
    stamps = [blocks[0].header.timestamp]
    target = blocks[0].header.target
    for _ in range(n):
        height = blocks[-1].height + 1
        if EASY_MAIN.is_retarget_height(height):
            first = stamps[height - EASY_MAIN.retarget_interval]
            target = EASY_MAIN.next_target(height, target, first, stamps[-1])
        blocks.append(make_block(blocks[-1], params=EASY_MAIN, target=target,
                                 timestamp=stamps[-1] + spacing_s))
        stamps.append(blocks[-1].header.timestamp)
    return blocks


class RetargetTests(SynchronousTestCase):
    def setUp(self):
        self.chain = main_chain(31)

    def test_tree_follows_main_retarget(self):
        """Headers across a retarget height, their ancestors partly stored and partly in the tree, are accepted."""
        tree = new_tree(self.chain[1:20], params=EASY_MAIN)
        report = tree.receive(PEER, answer(self.chain, tree.ask(PEER)), NOW)
        self.assertIsNone(report.misbehaviour)
        self.assertNotEqual(self.chain[30].header.target, self.chain[29].header.target)
        self.assertEqual(tree.best().hash, self.chain[31].hash)

    def test_tree_refuses_a_wrong_retarget(self):
        """A header at a retarget height that keeps the old target is reported with BadTarget."""
        tree = new_tree(self.chain[1:20], params=EASY_MAIN)
        stale = make_block(self.chain[29], params=EASY_MAIN, target=self.chain[29].header.target)
        report = tree.receive(PEER, answer(self.chain[:30], tree.ask(PEER)) + [stale.header], NOW)
        self.assertIsInstance(report.misbehaviour, BadTarget)
        self.assertEqual(report.added, 10)

    def test_tree_refuses_a_time_warp(self):
        """A window's first header dated more than 600 s before the last of the previous window is TimeWarp."""
        slow = main_chain(29, spacing_s=200)  # the median lags 1,000 s: only the time-warp rule is in the way
        tree = new_tree(slow[1:20], params=EASY_MAIN)
        parent = slow[29]
        warped = make_block(parent, params=EASY_MAIN, target=EASY_MAIN.pow_limit,
                            timestamp=parent.header.timestamp - 601)
        report = tree.receive(PEER, answer(slow, tree.ask(PEER)) + [warped.header], NOW)
        self.assertIsInstance(report.misbehaviour, TimeWarp)
        tree.ask(PEER)
        allowed = make_block(parent, params=EASY_MAIN, target=EASY_MAIN.pow_limit,
                             timestamp=parent.header.timestamp - 600)
        self.assertIsNone(tree.receive(PEER, [allowed.header], NOW).misbehaviour)


class BoundTests(SynchronousTestCase):
    def test_peer_bound_stops_a_batch_without_penalty(self):
        """Past its byte bound a peer's batch stops (full), with no misbehaviour; the headers before stay."""
        tree = new_tree(max_bytes_per_peer=3 * NODE_BYTES)
        report = tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        self.assertTrue(report.full)
        self.assertIsNone(report.misbehaviour)
        self.assertEqual((report.added, tree.peer_bytes(PEER)), (3, 3 * NODE_BYTES))

    def test_total_bound_holds_across_peers(self):
        """The tree never holds more than its total byte bound, whoever sends."""
        tree = new_tree(max_bytes=5 * NODE_BYTES)
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        other = regtest_chain(8, extra=b"other")
        report = tree.receive("http://other", answer(other, tree.ask("http://other")), NOW)
        self.assertTrue(report.full)
        self.assertLessEqual(tree.bytes, 5 * NODE_BYTES)

    def test_prune_drops_headers_whose_blocks_are_stored(self):
        """Once the chain state stores blocks, their headers leave the tree."""
        tree = new_tree()
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        for block in THEIRS[1:4]:
            tree._chain.accept_block(block, NOW, requested=True)
        self.assertEqual(tree.prune(), 3)
        self.assertEqual(len(tree), 9)
        self.assertEqual(tree.best().hash, THEIRS[-1].hash)

    def test_forget_peer_keeps_what_others_lead_to(self):
        """Forgetting a peer drops the headers only it led to and keeps those on another peer's best chain."""
        tree = new_tree()
        tree.receive("http://other", answer(THEIRS[:7], tree.ask("http://other")), NOW)
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        self.assertEqual(tree.forget_peer(PEER), 6)
        self.assertEqual(tree.best().hash, THEIRS[6].hash)
        self.assertTrue(tree.serves("http://other", THEIRS[6].hash))
        self.assertFalse(tree.serves("http://other", THEIRS[7].hash))


class ServesTests(SynchronousTestCase):
    def test_serves_follows_the_peers_branch(self):
        """A peer serves the blocks of the branch it announced, and stops once it announced another."""
        tree = new_tree()
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        self.assertTrue(tree.serves(PEER, THEIRS[3].hash))
        other = regtest_chain(14, extra=b"other")
        self.assertFalse(tree.serves(PEER, other[3].hash))
        tree.ask(PEER)
        tree.receive(PEER, [b.header for b in other[1:]], NOW)  # the peer switched: its answer follows genesis
        self.assertTrue(tree.serves(PEER, other[3].hash))
        self.assertFalse(tree.serves(PEER, THEIRS[3].hash))
        tree._chain.accept_block(other[1], NOW)
        tree.prune()
        self.assertTrue(tree.serves(PEER, other[2].hash))

    def test_new_peer_on_the_best_chain_is_learned(self):
        """A peer asked for the first time gets a locator one back from the best header, so it answers at least
        that header (no misbehaviour) and is known to serve the whole best chain."""
        tree = new_tree()
        tree.receive(PEER, answer(THEIRS, tree.ask(PEER)), NOW)
        locator = tree.ask("http://b")
        self.assertEqual(locator[0], THEIRS[-2].hash)
        report = tree.receive("http://b", answer(THEIRS, locator), NOW)
        self.assertIsNone(report.misbehaviour)
        self.assertEqual(report.best.hash, THEIRS[-1].hash)
        self.assertTrue(tree.serves("http://b", THEIRS[1].hash))
