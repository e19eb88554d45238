"""Timers that survive their own failures (Twisted's TimerService stops for good at the first error)."""

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel

from ..logs import logger

log = logger("chaincore.timers")


class Every(Service):
    """A child service calling fn every interval_s seconds, logging its failures instead of stopping.

    A call still running when the next one is due is skipped, not started twice.  With
    now=False the first call comes after one interval (when startup has just done the work).
    """

    def __init__(self, interval_s: float, fn, clock, now: bool = True):
        self.interval_s, self.fn, self.clock, self.now = interval_s, fn, clock, now
        self._busy = False
        self._loop = None

    def startService(self):
        super().startService()
        self._loop = LoopingCall(self._call)
        self._loop.clock = self.clock
        self._loop.start(self.interval_s, now=self.now)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _call(self):
        if self._busy:
            return
        self._busy = True
        d = maybeDeferred(self.fn)
        d.addErrback(lambda f: log.failure("{name} failed", f, name=getattr(self.fn, "__qualname__", self.fn),
                                           level=LogLevel.error))
        d.addBoth(self._done)

    def _done(self, _):
        self._busy = False


def every(interval_s: float, fn, clock, now: bool = True) -> Every:
    """An Every service: fn every interval_s seconds on clock, surviving its own failures."""
    return Every(interval_s, fn, clock, now)


def after_two_turns(clock) -> Deferred:
    """A Deferred that fires two reactor turns from now: after the reactor has written to its sockets what was
    written to its transports this turn (a turn runs its timed calls, a request's body among them, before it
    polls and writes)."""
    d = Deferred()
    clock.callLater(0, clock.callLater, 0, d.callback, None)
    return d
