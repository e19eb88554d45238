"""CPU work off the reactor thread: worker processes (threads give no speed-up under the GIL).

`ProcessOffloader.run(fn, *args)` returns a Deferred that fires in the
reactor thread; `InlineOffloader` runs fn at once, for tests and for work too
small to be worth a process hop.
"""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure


def defer_to_executor(reactor, executor, fn, *args) -> defer.Deferred:
    """Run fn(*args) in executor; the Deferred fires in the reactor thread (never in the executor's)."""
    fut = executor.submit(fn, *args)
    d = defer.Deferred(lambda _: fut.cancel())

    def transfer(f):
        if d.called:
            return
        try:
            result = f.result()
        except BaseException:
            d.errback(Failure())
        else:
            d.callback(result)

    fut.add_done_callback(lambda f: reactor.callFromThread(transfer, f))
    return d


class InlineOffloader:
    """Runs work at once in the calling thread."""

    workers = 1

    def run(self, fn, *args) -> defer.Deferred:
        return defer.maybeDeferred(fn, *args)

    def shutdown(self):
        return defer.succeed(None)


class ProcessOffloader:
    """A lazily started pool of worker processes (forkserver, so the reactor's state is never forked)."""

    def __init__(self, reactor, workers: int | None = None):
        self.reactor = reactor
        self.workers = workers or os.cpu_count() or 1
        self._executor = None

    def run(self, fn, *args) -> defer.Deferred:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers,
                                                 mp_context=multiprocessing.get_context("forkserver"))
        return defer_to_executor(self.reactor, self._executor, fn, *args)

    def shutdown(self) -> defer.Deferred:
        executor, self._executor = self._executor, None
        if executor is None:
            return defer.succeed(None)
        # twistd ends by re-raising SIGTERM, so atexit never runs: wait for the workers here
        return deferToThread(executor.shutdown, wait=True, cancel_futures=True)
