"""every(): periodic calls on a Clock that survive failures and never overlap."""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chaincore.service.timers import every


class EveryTests(SynchronousTestCase):
    def test_calls_at_start_and_every_interval(self):
        """With now=True the first call is at start, then one per interval."""
        clock, calls = Clock(), []
        timer = every(5, lambda: calls.append(clock.seconds()), clock)
        timer.startService()
        clock.pump([5, 5])
        self.assertEqual(calls, [0, 5, 10])
        timer.stopService()
        clock.advance(20)
        self.assertEqual(len(calls), 3)

    def test_first_call_after_one_interval(self):
        """With now=False nothing runs until the first interval has passed."""
        clock, calls = Clock(), []
        timer = every(5, lambda: calls.append(clock.seconds()), clock, now=False)
        timer.startService()
        self.assertEqual(calls, [])
        clock.advance(5)
        self.assertEqual(calls, [5])
        timer.stopService()

    def test_failures_do_not_stop_it(self):
        """A call that raises is logged and the next one still comes."""
        clock, calls = Clock(), []

        def boom():
            calls.append(clock.seconds())
            raise RuntimeError("boom")

        timer = every(1, boom, clock)
        timer.startService()
        clock.pump([1, 1])
        self.assertEqual(len(calls), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        timer.stopService()

    def test_slow_call_is_not_started_twice(self):
        """While a call's Deferred is pending, due calls are skipped; after it fires they resume."""
        clock, pending = Clock(), []
        timer = every(1, lambda: pending.append(defer.Deferred()) or pending[-1], clock)
        timer.startService()
        clock.pump([1, 1, 1])
        self.assertEqual(len(pending), 1)
        pending[0].callback(None)
        clock.advance(1)
        self.assertEqual(len(pending), 2)
        timer.stopService()
