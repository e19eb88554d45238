"""CPU work off the reactor thread: worker processes (threads give no speed-up under the GIL).

`ProcessOffloader.run(fn, *args)` returns a Deferred that fires in the
reactor thread; `InlineOffloader` runs fn at once, for tests and for work too
small to be worth a process hop.  Workers are lean: they are forked from a
forkserver that imported only the consensus core, the functions they run
live in the core (`rules.verify_batch`, `rules.verify_groups`, `pow`), their
initializer in `workerproc` (standard library only), and the node's main
script (twistd) is not re-run in them, so no Twisted, web or TLS module is
ever imported in a worker.  The pool mines and checks a catch-up's blocks.  The
signatures of network transactions, and of blocks submitted one at a time,
take a lighter road: batches of many requests (`ProcessOffloader.verify_groups`,
`SignatureBatcher`) or of a block's transactions (`verify_tx_bytes`), one
buffer each, written to `SignatureWorkers` processes through pipes the
reactor watches, with no thread or pickling in the node.
"""

import contextlib
import os
import struct
import sys
import types
from collections import deque

from twisted.internet import defer, protocol
from twisted.internet.error import ProcessDone
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

from ..core import keys, rules
from ..core.errors import Malformed
from ..logs import logger
from .workerproc import exit_with_parent

log = logger("chaincore.workers")

WORKER_PRELOAD = ["chaincore.core.rules"]  # what the forkserver imports once, for every worker it forks


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

    def verify_groups(self, groups) -> defer.Deferred:
        """rules.verify_groups(groups) through the buffers a signature worker reads and answers."""
        return self.run(rules.verify_encoded, rules.encode_groups(groups)).addCallback(rules.decode_answer)

    def verify_tx_bytes(self, raw_txs) -> defer.Deferred:
        """rules.verify_tx_bytes(raw_txs) through the buffers a signature worker reads and answers."""
        return self.run(rules.verify_encoded, rules.encode_txs(raw_txs)).addCallback(rules.decode_index)

    def shutdown(self):
        return defer.succeed(None)


def worker_context():
    """The multiprocessing context workers start in: forkserver (a fresh interpreter that imported only
    WORKER_PRELOAD forks each worker; the reactor's state is never forked), else spawn."""
    import multiprocessing  # here: a node that never needs the pool never loads it (about 1 MB)

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(WORKER_PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


_CHAINCORE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def starting_workers():
    """While workers start, show multiprocessing an empty __main__ and this chaincore first on sys.path.

    A spawned or forkserver-forked worker re-runs the parent's main script
    (`twistd`: twisted.scripts.twistd and the application machinery, about
    10 MB a worker) so that functions defined in it can be unpickled; workers
    only ever run functions of the core, so there is nothing to re-run.  And
    a worker takes the parent's sys.path (the forkserver of Python 3.11 only
    its environment), whose relative entries it resolves from its own
    directory: this chaincore's root first makes it import the node's code.
    """
    main, path, python_path = sys.modules["__main__"], list(sys.path), os.environ.get("PYTHONPATH")
    sys.modules["__main__"] = types.ModuleType("__main__")
    sys.path.insert(0, _CHAINCORE_ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_CHAINCORE_ROOT, python_path) if p)
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        sys.path[:] = path
        if python_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = python_path


class ProcessOffloader:
    """A lazily started pool of worker processes, started through worker_context().

    Workers start when work first arrives and end by themselves if the node
    dies.  fn must be a function of a module the worker can import without
    Twisted (the core's): workers import it when they unpickle it.
    """

    def __init__(self, reactor, workers: int | None = None):
        self.reactor = reactor
        self.workers = workers or os.cpu_count() or 1
        self._executor = None
        # one fewer than workers: the reactor keeps a core (SignatureBatcher sends no more batches at once)
        self._signatures = SignatureWorkers(reactor, max(1, self.workers - 1))

    def verify_groups(self, groups) -> defer.Deferred:
        """rules.verify_groups(groups) in a signature worker (SignatureWorkers): a Deferred of [bool]."""
        return self._signatures.verify_groups(groups)

    def verify_tx_bytes(self, raw_txs) -> defer.Deferred:
        """rules.verify_tx_bytes(raw_txs) in a signature worker (SignatureWorkers): a Deferred of the index of the
        first transaction with a bad signature or undecodable bytes, or -1."""
        return self._signatures.verify_tx_bytes(raw_txs)

    def run(self, fn, *args) -> defer.Deferred:
        if self._executor is None:
            from concurrent.futures import ProcessPoolExecutor  # (as in worker_context)
            self._executor = ProcessPoolExecutor(self.workers, mp_context=worker_context(),
                                                 initializer=exit_with_parent, initargs=(os.getpid(),))
        with starting_workers():  # the pool starts a worker inside submit when none is idle
            return defer_to_executor(self.reactor, self._executor, fn, *args)

    def shutdown(self) -> defer.Deferred:
        executor, self._executor = self._executor, None
        signatures = self._signatures.shutdown()
        if executor is None:
            return signatures
        # twistd ends by re-raising SIGTERM, so atexit never runs: wait for the workers here
        pool = deferToThread(executor.shutdown, wait=True, cancel_futures=True)
        return defer.gatherResults([signatures, pool]).addCallback(lambda _: None)


class WorkerLost(Exception):
    """A signature worker ended (or answered nonsense) with batches unanswered."""


_LENGTH = struct.Struct(">I")


class _SignatureWorker(protocol.ProcessProtocol):
    """One `python -m chaincore.service.workerproc` process: batches go in on its stdin, answers come back
    on its stdout, in order, each a length-prefixed buffer (a request of rules.encode_groups or
    rules.encode_txs; its answer, read with the decoder it was sent with)."""

    def __init__(self, lost):
        self._lost = lost        # f(self) once no batch should go to it any more (it may be called twice)
        self.pending = deque()   # (Deferred, decoder of its answer) of the batches sent, oldest first
        self._buffer = b""
        self.ended = defer.Deferred()

    def send(self, buf: bytes, decode) -> defer.Deferred:
        """Write a request buffer; the Deferred fires with decode(its answer), or fails with WorkerLost."""
        d = defer.Deferred()
        self.pending.append((d, decode))
        self.transport.writeSequence([_LENGTH.pack(len(buf)), buf])
        return d

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 4:
            (n,) = _LENGTH.unpack_from(self._buffer, 0)
            if len(self._buffer) < 4 + n:
                return
            answer, self._buffer = self._buffer[4:4 + n], self._buffer[4 + n:]
            if not self.pending:
                self._broken("an answer nobody asked for")
                return
            d, decode = self.pending.popleft()
            try:
                results = decode(answer)
            except Malformed as err:
                d.errback(WorkerLost(f"signature worker answered nonsense: {err}"))
                self._broken(str(err))
                return
            d.callback(results)

    def _broken(self, why: str) -> None:
        log.warn("a signature worker answered out of turn ({why}); it is stopped", why=why)
        self._buffer = b""
        self._lost(self)  # no new batch goes to it; what it holds fails when it has ended
        self.transport.signalProcess("KILL")

    def stop(self) -> None:
        """Close the worker's stdin: it answers what it holds, then exits."""
        self.transport.closeStdin()

    def processEnded(self, reason) -> None:
        self._lost(self)
        if not reason.check(ProcessDone):
            log.warn("a signature worker ended ({reason}) with {n} batch(es) unanswered; the next batch starts "
                     "another", reason=reason.value, n=len(self.pending))
        pending, self.pending = self.pending, deque()
        for d, _ in pending:
            d.errback(WorkerLost(f"signature worker ended: {reason.value}"))
        self.ended.callback(None)


class SignatureWorkers:
    """Worker processes that verify batches of signature groups, or of a block's transactions, for the reactor,
    without threads.

    A ProcessPoolExecutor hands each job to threads in the node process (a
    manager thread, a queue feeder) that pickle it, write it and wake the
    reactor back up, and every hop contends with the reactor for the GIL: for
    a small transaction that cost more node CPU than everything else it needs.
    Here a batch is one buffer written to a pipe the reactor watches, and the
    answer is a bitmap read from another.  Workers start when the first batch
    comes (with the node's signature backend), and end when their stdin closes,
    which the node's death does too.
    """

    def __init__(self, reactor, workers: int = 1):
        self.reactor = reactor
        self.workers = workers
        self._running = []

    def verify_groups(self, groups) -> defer.Deferred:
        """For each group of (public_key, sighash, signature) checks whether all of them verify: a Deferred of [bool]."""
        return self._worker().send(rules.encode_groups(groups), rules.decode_answer).addCallback(
            self._check_count, len(groups))

    def verify_tx_bytes(self, raw_txs) -> defer.Deferred:
        """rules.verify_tx_bytes(raw_txs): a Deferred of the index of the first transaction with a bad signature or
        undecodable bytes, or -1."""
        raw_txs = list(raw_txs)
        return self._worker().send(rules.encode_txs(raw_txs), rules.decode_index).addCallback(
            self._check_index, len(raw_txs))

    def _worker(self) -> "_SignatureWorker":
        """The least busy worker, or a new one while some are busy and there is room for more."""
        worker = min(self._running, key=lambda w: len(w.pending), default=None)
        if worker is None or (worker.pending and len(self._running) < self.workers):
            worker = self._start()
        return worker

    @staticmethod
    def _check_index(index: int, n: int) -> int:
        if index >= n:
            raise WorkerLost(f"signature worker named transaction {index} of {n}")
        return index

    @staticmethod
    def _check_count(results: list, n: int) -> list:
        if len(results) != n:
            raise WorkerLost(f"signature worker answered {len(results)} groups of {n}")
        return results

    def _forget(self, worker) -> None:
        if worker in self._running:
            self._running.remove(worker)

    def _start(self) -> _SignatureWorker:
        worker = _SignatureWorker(self._forget)
        env = dict(os.environ)
        if keys.loaded_backend_name() is not None:  # the node's choice, else the worker makes the same one
            env[keys.CRYPTO_ENV] = keys.loaded_backend_name()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_CHAINCORE_ROOT, env.get("PYTHONPATH")) if p)
        self.reactor.spawnProcess(worker, sys.executable, [sys.executable, "-m", "chaincore.service.workerproc"],
                                  env=env, childFDs={0: "w", 1: "r", 2: 2})
        self._running.append(worker)
        return worker

    def shutdown(self) -> defer.Deferred:
        """Close every worker's stdin; fires once they all ended."""
        running = list(self._running)
        for worker in running:
            worker.stop()
        return defer.gatherResults([w.ended for w in running]).addCallback(lambda _: None)


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
            fresh, keys = self.cache.pending_keyed(checks)
            if self.on_hits is not None and len(fresh) < len(checks):
                self.on_hits(len(checks) - len(fresh))
            checks = fresh
            if not checks:
                return defer.succeed(True)
        d = defer.Deferred()
        if self.cache is not None:
            d.addCallback(self._remember, keys)
        self._queue.append((checks, d))
        self._pump()
        return d

    def _remember(self, ok: bool, keys) -> bool:
        if ok:
            self.cache.remember(keys)
        return ok

    def _pump(self) -> None:
        while self._queue and self._in_flight < self.max_in_flight:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self._in_flight += 1
            job = self.offloader.verify_groups([checks for checks, _ in batch])
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
