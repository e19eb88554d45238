"""The download planner: the byte window, per-peer bounds, learned sizes, deadlines, stalls and re-assignment,
and blocks nobody asked for, each driven by a task.Clock."""

from hypothesis import given, strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.core.errors import StalledDownload, UnexpectedBlock
from chaincore.p2p.download import DownloadPlanner, Wanted
from chaincore.p2p.peers import penalty_for
from tests.support.strategies import FAST

MB = 1_000_000
A, B, C = "http://a", "http://b", "http://c"


def wanted(n: int, start: int = 1, size_bytes=None) -> list:
    return [Wanted(bytes([h % 256, h // 256]) * 16, h, size_bytes) for h in range(start, start + n)]


def everyone(peer, block_hash) -> bool:
    return True


def planner(**kwargs) -> DownloadPlanner:
    """1 MB blocks, JSON on the wire (3 MB each at worst), 30 s stall timeout, 1 MB/s slowest rate."""
    kwargs.setdefault("min_rate_bytes_per_s", MB)
    return DownloadPlanner(max_block_size=MB, **kwargs)


class WindowTests(SynchronousTestCase):
    def test_window_is_bounded_in_bytes(self):
        """With nothing learned each block counts 3 MB: a 10 MB window asks for 3 blocks, whatever is wanted."""
        p = planner(window_bytes=10 * MB)
        requests = p.plan(wanted(50), [A], everyone, Clock().seconds())
        self.assertEqual([(r.peer, r.start_height, len(r.hashes), r.max_bytes) for r in requests],
                         [(A, 1, 3, 9 * MB)])

    def test_first_block_is_asked_even_when_larger_than_the_window(self):
        """The first missing block is always in the window, so a small window never wedges the catch-up."""
        p = planner(window_bytes=MB)
        self.assertEqual(len(p.plan(wanted(5), [A], everyone, 0)[0].hashes), 1)

    def test_idle_peer_takes_a_block_larger_than_its_bound(self):
        """A peer with nothing in flight is given one block even if its estimate is over the peer's bound."""
        p = planner(peer_bytes=MB)
        self.assertEqual([(r.peer, len(r.hashes)) for r in p.plan(wanted(5), [A], everyone, 0)], [(A, 1)])

    def test_declared_sizes_fill_the_window(self):
        """Blocks whose size is declared count at that size times the wire factor."""
        p = planner(window_bytes=10 * MB)
        requests = p.plan(wanted(50, size_bytes=100_000), [A], everyone, 0)
        self.assertEqual(len(requests[0].hashes), 33)

    def test_learned_sizes_widen_the_window(self):
        """After small blocks arrive the estimate is twice the largest seen, so more blocks fit."""
        clock, p = Clock(), planner(window_bytes=10 * MB)
        blocks = wanted(200)
        first = p.plan(blocks, [A], everyone, clock.seconds())[0]
        for h in first.hashes:
            self.assertIsNone(p.received(A, h, 50_000, clock.seconds()))
        second = p.plan(blocks[3:], [A], everyone, clock.seconds())
        self.assertEqual(sum(len(r.hashes) for r in second), 100)
        self.assertEqual(p.estimate(blocks[10]), 100_000)

    def test_window_stays_at_the_first_missing_block(self):
        """Blocks in flight at the window's start keep their bytes: the window does not run ahead of them."""
        p = planner(window_bytes=9 * MB)
        blocks = wanted(20)
        p.plan(blocks, [A], everyone, 0)
        self.assertEqual(p.plan(blocks, [A, B], everyone, 0), [])

    def test_peer_bound_spreads_blocks_over_peers(self):
        """Each peer carries at most its byte bound, so several peers serve one window, each a run of heights."""
        p = planner(window_bytes=12 * MB, peer_bytes=6 * MB)
        requests = p.plan(wanted(10), [A, B], everyone, 0)
        self.assertEqual([(r.peer, r.start_height, len(r.hashes)) for r in requests], [(A, 1, 2), (B, 3, 2)])
        self.assertEqual((p.peer_load(A), p.peer_load(B)), (6 * MB, 6 * MB))

    def test_only_peers_that_announced_a_block_get_it(self):
        """A block goes only to a peer whose headers cover it."""
        p = planner(window_bytes=30 * MB)
        blocks = wanted(4)
        covered = {A: {b.hash for b in blocks[:2]}, B: {b.hash for b in blocks}}
        requests = p.plan(blocks, [A, B], lambda peer, h: h in covered[peer], 0)
        self.assertEqual(p.in_flight(A) | p.in_flight(B), {b.hash for b in blocks})
        self.assertTrue(p.in_flight(A) <= covered[A])
        self.assertTrue(all(len(r.hashes) <= 100 for r in requests))

    def test_requests_are_runs_of_consecutive_heights(self):
        """A peer's blocks are asked in runs of consecutive heights, at most max_blocks_per_request each."""
        p = planner(window_bytes=100 * MB, max_blocks_per_request=4)
        requests = p.plan(wanted(10, size_bytes=1000), [A], everyone, 0)
        self.assertEqual([(r.start_height, len(r.hashes)) for r in requests], [(1, 4), (5, 4), (9, 2)])


class StallTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.p = planner(window_bytes=6 * MB)
        self.blocks = wanted(10)

    def plan(self, peers=(A, B)):
        return self.p.plan(self.blocks, list(peers), everyone, self.clock.seconds())

    def test_deadline_grows_with_bytes(self):
        """A request's deadline is 30 s plus its bytes at the slowest rate allowed (6 MB at 1 MB/s: 36 s)."""
        self.assertEqual([r.deadline for r in self.plan(peers=[A])], [36.0])

    def test_no_progress_is_a_stall_and_blocks_go_to_another_peer_at_once(self):
        """A peer that delivers nothing by its deadline is reported stalled; its blocks go to another peer at once."""
        first = self.plan(peers=[A])
        self.clock.advance(35.9)
        self.assertEqual(self.p.stalls(self.clock.seconds()), [])
        self.clock.advance(0.1)
        [stall] = self.p.stalls(self.clock.seconds())
        self.assertEqual((stall.peer, set(stall.hashes)), (A, set(first[0].hashes)))
        self.assertIsInstance(stall.error, StalledDownload)
        self.assertGreater(penalty_for(stall.error.code), 0)
        again = self.plan()
        self.assertEqual([(r.peer, r.hashes) for r in again], [(B, first[0].hashes)])

    def test_progress_moves_the_deadline(self):
        """A block delivered before the deadline moves it on: the peer is not stalled at the first deadline."""
        [request] = self.plan(peers=[A])
        self.clock.advance(30)
        self.assertIsNone(self.p.received(A, request.hashes[0], 900_000, self.clock.seconds()))
        self.clock.advance(6)
        self.assertEqual(self.p.stalls(self.clock.seconds()), [])
        self.clock.advance(27)
        self.assertEqual([s.peer for s in self.p.stalls(self.clock.seconds())], [A])

    def test_stalled_peer_is_left_out_until_allowed(self):
        """A stalled peer gets no new blocks until allow() lets it back."""
        self.plan(peers=[A])
        self.clock.advance(36)
        self.p.stalls(self.clock.seconds())
        self.assertEqual(self.plan(peers=[A]), [])
        self.p.allow(A)
        self.assertEqual([r.peer for r in self.plan(peers=[A])], [A])

    def test_short_answer_frees_the_rest(self):
        """When a peer answers with fewer blocks than asked, the rest are free for the next plan, to anyone."""
        [request] = self.plan(peers=[A])
        self.p.received(A, request.hashes[0], 900_000, self.clock.seconds())
        self.assertEqual(self.p.answered(request), request.hashes[1:])
        self.assertEqual(self.p.in_flight(), set())

    def test_unreachable_peer_frees_its_blocks(self):
        """A peer that fails (not a stall) is left out and its blocks re-assigned, without misbehaviour."""
        [request] = self.plan(peers=[A])
        self.assertEqual(set(self.p.failed(A)), set(request.hashes))
        self.assertEqual([r.peer for r in self.plan()], [B])

    def test_too_large_answer_forgets_learned_sizes(self):
        """An answer over its byte cap makes the planner assume the worst size again."""
        [request] = self.plan(peers=[A])
        self.p.received(A, request.hashes[0], 10_000, self.clock.seconds())
        self.assertEqual(self.p.estimate(self.blocks[5]), 20_000)
        self.p.too_large(request)
        self.assertEqual(self.p.estimate(self.blocks[5]), 3 * MB)


class UnexpectedBlockTests(SynchronousTestCase):
    def test_block_not_asked_for(self):
        """A block we asked nobody for is UnexpectedBlock, a penalty."""
        p = planner()
        err = p.received(A, b"\x01" * 32, 1000, 0)
        self.assertIsInstance(err, UnexpectedBlock)
        self.assertGreater(penalty_for(err.code), 0)

    def test_block_asked_of_another_peer(self):
        """A block asked of one peer but delivered by another is UnexpectedBlock, and stays in flight."""
        p = planner()
        [request] = p.plan(wanted(1), [A], everyone, 0)
        self.assertIsInstance(p.received(B, request.hashes[0], 1000, 0), UnexpectedBlock)
        self.assertEqual(p.in_flight(A), {request.hashes[0]})


class PlannerPropertyTests(SynchronousTestCase):
    @FAST
    @given(st.lists(st.tuples(st.sampled_from(["plan", "deliver", "stall", "fail", "short"]),
                              st.integers(0, 2), st.integers(0, 40)), max_size=40),
           st.lists(st.integers(1_000, 3 * MB), min_size=30, max_size=30))
    def test_bounds_hold_whatever_happens(self, events, sizes):
        """Through any run of plans, deliveries, stalls and failures: no block is asked of two peers, only
        announced blocks go to a peer, a peer holds one block or fits its bound, and the window fits its bound."""
        peers = [A, B, C]
        blocks = [Wanted(bytes([h]) * 32, h, size) for h, size in zip(range(1, 31), sizes)]
        covered = {A: {b.hash for b in blocks[:20]}, B: {b.hash for b in blocks}, C: {b.hash for b in blocks[10:]}}
        p = planner(window_bytes=12 * MB, peer_bytes=4 * MB)
        now, requests = 0.0, []
        for kind, who, n in events:
            peer = peers[who]
            now += n
            if kind == "plan":
                requests += p.plan(blocks, peers, lambda q, h: h in covered[q], now)
            elif kind == "deliver" and p.in_flight(peer):
                block_hash = sorted(p.in_flight(peer))[0]
                self.assertIsNone(p.received(peer, block_hash, 1000, now))
                blocks = [b for b in blocks if b.hash != block_hash]
            elif kind == "stall":
                for stall in p.stalls(now):
                    self.assertTrue(stall.hashes)
            elif kind == "fail":
                p.failed(peer)
            elif kind == "short" and requests:
                p.answered(requests.pop(0))
            owners = [peer for peer in peers for _ in p.in_flight(peer)]
            self.assertEqual(len(owners), len(p.in_flight()))
            for q in peers:
                self.assertTrue(p.in_flight(q) <= covered[q])
                self.assertTrue(len(p.in_flight(q)) <= 1 or p.peer_load(q) <= 4 * MB)
            in_flight_bytes = sum(p.peer_load(q) for q in peers)
            self.assertTrue(len(p.in_flight()) <= 1 or in_flight_bytes <= 12 * MB)
