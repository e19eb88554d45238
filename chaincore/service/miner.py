"""`--mine ADDRESS`: the node mines in a worker process without blocking its reactor.

The reactor builds a template, hands nonce ranges (about 0.1 s of work each)
to a process pool, and submits a solution through the node like any other
block, so it is relayed as usual.  Between ranges it checks whether the tip or
the mempool moved, and starts a fresh template when they did.
"""

import os

from twisted.application import service
from twisted.internet import defer

from ..core.block import NONCE_OFFSET, NONCE_SIZE
from ..core.errors import ChainCoreError
from ..core.pow import search_nonce
from ..logs import logger
from .workers import ProcessOffloader

log = logger("chaincore.miner")

RANGE = 150_000
TEMPLATE_MAX_AGE_S = 30
REGTEST_PAUSE_S = 1.0


class MinerService(service.Service):
    """Mines blocks paying `address` on top of the node's tip, in `workers` processes."""

    def __init__(self, node, reactor, address: str, workers: int | None = None):
        self.node = node
        self.reactor = reactor
        self.address = address
        self.workers = workers or max(1, (os.cpu_count() or 2) - 1)  # leave a core for the reactor
        self.blocks_found = 0
        self.hashes = 0
        self._offloader = ProcessOffloader(reactor, self.workers)
        self._loop = None

    def startService(self):
        super().startService()
        log.info("mining to {address} with {n} worker process(es)", address=self.address, n=self.workers)
        self._loop = self._run()
        self._loop.addErrback(lambda f: None if f.check(defer.CancelledError) else
                              log.failure("miner stopped", f))

    def stopService(self):
        super().stopService()
        if self._loop is not None:
            self._loop.cancel()
        return self._offloader.shutdown()

    @defer.inlineCallbacks
    def _run(self):
        from twisted.internet.task import deferLater
        while self.running:
            if self.node.syncing:
                yield deferLater(self.reactor, 1, lambda: None)
                continue
            try:
                block = self.node.block_template(self.address)
            except ChainCoreError as e:
                log.warn("cannot build a template: {e}", e=e)
                yield deferLater(self.reactor, 5, lambda: None)
                continue
            found = yield self._search(block)
            if found is None:
                continue
            try:
                result = self.node.accept_block(block.with_nonce(found), local=True, mined=True)
            except ChainCoreError as e:
                log.warn("own block refused: {e}", e=e)
                continue
            if getattr(result, "main_chain", False):
                self.blocks_found += 1
            if not self.node.params.retarget:
                # regtest's target is trivial: pace the miner so a chain grows at a readable speed
                yield deferLater(self.reactor, REGTEST_PAUSE_S, lambda: None)

    @defer.inlineCallbacks
    def _search(self, block):
        """A nonce solving block's header, or None once the template went stale."""
        tip, mempool_size = self.node.chain.tip.hash, len(self.node.mempool)
        started = self.reactor.seconds()
        header = block.header.raw
        start = 0
        while self.running:
            ranges = [(start + i * RANGE) for i in range(self.workers)]
            start += RANGE * self.workers
            results = yield defer.gatherResults([
                self._offloader.run(search_nonce, header, NONCE_OFFSET, NONCE_SIZE, block.header.target, s, RANGE)
                for s in ranges])
            self.hashes += RANGE * self.workers
            hits = [r for r in results if r is not None]
            if hits:
                return min(hits)
            stale = (self.node.chain.tip.hash != tip or len(self.node.mempool) != mempool_size
                     or self.reactor.seconds() - started > TEMPLATE_MAX_AGE_S)
            if stale:
                return None
        return None
