"""Timers that survive their own failures (Twisted's TimerService stops for good at the first error)."""

from twisted.application.internet import TimerService
from twisted.internet.defer import maybeDeferred
from twisted.logger import LogLevel

from ..logs import logger

log = logger("chaincore.timers")


def every(interval_s: float, fn, clock) -> TimerService:
    """A child service calling fn every interval_s seconds, logging its failures instead of stopping.

    A call that is still running when the next one is due is not started twice.
    """
    running = []

    def guarded():
        if running:
            return None
        running.append(True)
        d = maybeDeferred(fn)
        d.addErrback(lambda f: log.failure("{name} failed", f, name=getattr(fn, "__qualname__", fn),
                                           level=LogLevel.error))
        d.addBoth(lambda _: running.clear())
        return None

    timer = TimerService(interval_s, guarded)
    timer.clock = clock
    return timer
