"""Client budgets as pure bookkeeping: token buckets per address and class, and connection caps."""

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.budgets import (
    LOOPBACK, PEER, STRANGER, ConnectionTable, Rate, TokenBuckets, classify_host,
)
from tests.support.strategies import FAST

RATES = {LOOPBACK: Rate(burst=10, per_s=5), PEER: Rate(burst=4, per_s=2), STRANGER: Rate(burst=2, per_s=1)}


class ClassifyTests(SynchronousTestCase):

    def test_classes(self):
        """Loopback addresses (IPv4, IPv6, mapped) and UNIX sockets are the operator; listed peers are peers."""
        for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "unix"):
            self.assertEqual(classify_host(host), LOOPBACK)
        self.assertEqual(classify_host("198.18.0.7", peer_hosts={"198.18.0.7"}), PEER)
        for host in ("198.18.0.7", "::ffff:10.0.0.1", "2001:db8::1", "not-an-ip"):
            self.assertEqual(classify_host(host), STRANGER)


class TokenBucketTests(SynchronousTestCase):

    def test_burst_then_refusal_with_retry_after(self):
        """A stranger spends its burst, then is refused with the seconds until one token is back."""
        buckets = TokenBuckets(RATES)
        self.assertTrue(all(buckets.take("198.18.0.1", STRANGER, 100.0).allowed for _ in range(2)))
        denied = buckets.take("198.18.0.1", STRANGER, 100.0)
        self.assertEqual((denied.allowed, denied.retry_after_s, denied.retry_after_header), (False, 1.0, "1"))
        self.assertFalse(buckets.take("198.18.0.1", STRANGER, 100.9).allowed)
        self.assertTrue(buckets.take("198.18.0.1", STRANGER, 101.9).allowed)
        self.assertEqual(buckets.refusals, 2)

    def test_costly_requests_wait_longer(self):
        """A request costing 3 tokens on an empty peer bucket waits 1.5 s at 2 tokens a second."""
        buckets = TokenBuckets(RATES)
        self.assertTrue(buckets.take("198.18.0.2", PEER, 0.0, cost=4).allowed)
        self.assertEqual(buckets.take("198.18.0.2", PEER, 0.0, cost=3).retry_after_s, 1.5)

    def test_classes_do_not_share(self):
        """A stranger's empty bucket leaves the operator's and a peer's from the same table untouched."""
        buckets = TokenBuckets(RATES)
        while buckets.take("198.18.0.3", STRANGER, 0.0).allowed:
            pass
        self.assertTrue(buckets.take("127.0.0.1", LOOPBACK, 0.0, cost=10).allowed)
        self.assertTrue(buckets.take("198.18.0.4", PEER, 0.0, cost=4).allowed)

    def test_table_is_bounded_and_keeps_other_classes(self):
        """Past max_addresses the least recently seen stranger is forgotten; operator buckets stay."""
        buckets = TokenBuckets(RATES, max_addresses=3)
        buckets.take("127.0.0.1", LOOPBACK, 0.0, cost=10)
        for n in range(50):
            buckets.take(f"198.18.1.{n}", STRANGER, 0.0)
        self.assertEqual(len(buckets), 4)
        self.assertFalse(buckets.take("127.0.0.1", LOOPBACK, 0.0).allowed)

    def test_clock_stepping_back_refills_nothing(self):
        """A clock that goes backwards neither refills nor breaks the bucket."""
        buckets = TokenBuckets(RATES)
        buckets.take("198.18.0.5", STRANGER, 50.0, cost=2)
        self.assertFalse(buckets.take("198.18.0.5", STRANGER, 10.0).allowed)
        self.assertTrue(buckets.take("198.18.0.5", STRANGER, 51.0).allowed)

    @FAST
    @given(st.lists(st.tuples(st.floats(0, 5), st.floats(0.1, 3)), max_size=60))
    def test_never_more_than_burst_plus_refill(self, steps):
        """Over any run, what is allowed costs at most the burst plus the refill over the elapsed time."""
        buckets, now, spent = TokenBuckets(RATES), 0.0, 0.0
        for wait, cost in steps:
            now += wait
            decision = buckets.take("198.18.0.6", PEER, now, cost)
            if decision.allowed:
                spent += min(cost, RATES[PEER].burst)
            else:
                self.assertGreater(decision.retry_after_s, 0)
        self.assertLessEqual(spent, RATES[PEER].burst + RATES[PEER].per_s * now + 1e-9)


class ConnectionTableTests(SynchronousTestCase):

    def test_per_address_cap(self):
        """An address gets at most its class's number of connections; closing one makes room."""
        table = ConnectionTable(max_total=100, per_address={LOOPBACK: 5, PEER: 3, STRANGER: 2}, reserved=10)
        self.assertIsNone(table.open("198.18.0.1", STRANGER))
        self.assertIsNone(table.open("198.18.0.1", STRANGER))
        refusal = table.open("198.18.0.1", STRANGER)
        self.assertEqual((refusal.reason, refusal.limit), ("per-address", 2))
        self.assertIsNone(table.open("198.18.0.2", STRANGER))
        table.close("198.18.0.1", STRANGER)
        self.assertIsNone(table.open("198.18.0.1", STRANGER))
        self.assertEqual((table.count("198.18.0.1"), table.total), (2, 3))

    def test_strangers_leave_room_for_the_operator_and_peers(self):
        """Strangers fill the total only up to the reserve; the operator and a peer still get in, then it is full."""
        table = ConnectionTable(max_total=6, per_address={LOOPBACK: 5, PEER: 5, STRANGER: 1}, reserved=2)
        for n in range(4):
            self.assertIsNone(table.open(f"198.18.0.{n}", STRANGER))
        self.assertEqual(table.open("198.18.0.9", STRANGER).reason, "total")
        self.assertIsNone(table.open("127.0.0.1", LOOPBACK))
        self.assertIsNone(table.open("198.18.5.5", PEER))
        self.assertEqual(table.open("127.0.0.1", LOOPBACK).reason, "total")
        table.close("198.18.0.0", STRANGER)
        self.assertIsNone(table.open("198.18.0.9", STRANGER))

    def test_closed_addresses_are_forgotten(self):
        """An address with no open connection takes no memory."""
        table = ConnectionTable()
        for n in range(100):
            table.open(f"198.18.2.{n}", STRANGER)
            table.close(f"198.18.2.{n}", STRANGER)
        self.assertEqual((table.total, len(table)), (0, 0))
