"""CPU work off the reactor thread: worker processes (threads give no speed-up under the GIL).

`ProcessOffloader.run(fn, *args)` returns a Deferred that fires in the
reactor thread; `InlineOffloader` runs fn at once, for tests and for work too
small to be worth a process hop.
"""

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from ..core.rules import verify_groups


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


def exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> None:
    """Worker initializer: end this worker soon after the node that started it is gone.

    A pool's workers block on a pipe that other workers also hold, so they
    would outlive a node killed with SIGKILL (keeping its stdout open, too).
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ProcessOffloader:
    """A lazily started pool of worker processes, children of the node.

    They are started with `spawn` (a fresh interpreter: the reactor's state is
    never forked) and end by themselves if the node dies.
    """

    def __init__(self, reactor, workers: int | None = None):
        self.reactor = reactor
        self.workers = workers or os.cpu_count() or 1
        self._executor = None

    def run(self, fn, *args) -> defer.Deferred:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=exit_with_parent, initargs=(os.getpid(),))
        return defer_to_executor(self.reactor, self._executor, fn, *args)

    def shutdown(self) -> defer.Deferred:
        executor, self._executor = self._executor, None
        if executor is None:
            return defer.succeed(None)
        # twistd ends by re-raising SIGTERM, so atexit never runs: wait for the workers here
        return deferToThread(executor.shutdown, wait=True, cancel_futures=True)


class SignatureBatcher:
    """Verifies the signatures of many requests together, in the offloader's worker processes.

    Each `verify(checks)` joins the next batch.  A batch leaves as soon as a
    worker is free, so under light load a transaction is checked at once and
    under heavy load the checks of many requests travel together (one process
    hop for many signatures), while the reactor goes on serving requests.
    """

    def __init__(self, offloader, cache=None, max_batch: int = 256, max_in_flight: int | None = None,
                 on_hits=None):
        self.offloader = offloader
        self.cache = cache        # a rules.SignatureCache: checks it holds (or repeated ones) are not sent
        self.on_hits = on_hits    # f(n) for the checks the cache spared
        self.max_batch = max_batch
        # one batch fewer than workers: the reactor keeps a core, and batches grow while one is out
        self.max_in_flight = max_in_flight or max(1, offloader.workers - 1)
        self._queue = []       # [(checks, Deferred)]
        self._in_flight = 0

    def verify(self, checks) -> defer.Deferred:
        """A Deferred firing True if every check verifies, False otherwise."""
        checks = list(checks)
        if self.cache is not None:
            fresh = self.cache.pending(checks)
            if self.on_hits is not None and len(fresh) < len(checks):
                self.on_hits(len(checks) - len(fresh))
            checks = fresh
            if not checks:
                return defer.succeed(True)
        d = defer.Deferred()
        if self.cache is not None:
            d.addCallback(self._remember, checks)
        self._queue.append((checks, d))
        self._pump()
        return d

    def _remember(self, ok: bool, checks) -> bool:
        if ok:
            self.cache.record(checks, -1)
        return ok

    def _pump(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self._in_flight += 1
            job = self.offloader.run(verify_groups, [checks for checks, _ in batch])
            job.addBoth(self._done, batch)

    def _done(self, result, batch) -> None:
        self._in_flight -= 1
        if isinstance(result, Failure):
            for _, d in batch:
                d.errback(result)
        else:
            for (_, d), ok in zip(batch, result):
                d.callback(ok)
        self._pump()
