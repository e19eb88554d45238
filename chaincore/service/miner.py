"""`--mine ADDRESS`: the node mines in a worker process without blocking its reactor.

The reactor builds a template, hands nonce ranges (about 0.1 s of work each)
to the node's own worker pool (the one that checks signatures), and submits a
solution through the node's accept path like any other block, so it is
relayed as usual.  Between ranges it asks core.mining whether the template
went stale (new tip, changed mempool, too old), and starts a fresh one if so.
"""

import os

from twisted.application import service
from twisted.internet import defer

from twisted.internet.task import deferLater

from ..core.block import NONCE_OFFSET, NONCE_SIZE
from ..core.errors import ChainCoreError
from ..core.mining import NonceRanges, is_stale
from ..core.pow import search_nonce
from ..logs import logger
from .workers import InlineOffloader

log = logger("chaincore.miner")

RANGE = 150_000
REGTEST_PAUSE_S = 1.0


class MinerService(service.Service):
    """Mines blocks paying `address` on top of the node's tip, in the node's worker pool (`offloader`)."""

    def __init__(self, node, reactor, address: str, offloader=None):
        self.node = node
        self.reactor = reactor
        self.address = address
        self._offloader = InlineOffloader() if offloader is None else offloader
        # as many ranges at once as workers, less one: the reactor keeps a core, signature batches a worker
        self.workers = max(1, min(self._offloader.workers, (os.cpu_count() or 2)) - 1)
        self.blocks_found = 0
        self.hashes = 0
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
            self._loop.cancel()  # the pool is the node's: the node shuts it down

    @defer.inlineCallbacks
    def _run(self):
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
                result = yield self.node.submit_block(block.with_nonce(found), local=True, mined=True)
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
        made_on = (self.node.chain.tip.hash, len(self.node.mempool))
        made_at = self.reactor.seconds()
        header = block.header.raw
        ranges = NonceRanges(NONCE_SIZE, RANGE)
        while self.running:
            taken = [r for r in (ranges.take() for _ in range(self.workers)) if r is not None]
            if not taken:
                return None  # every nonce tried: a fresh template has a new coinbase
            search = defer.gatherResults([
                self._offloader.run(search_nonce, header, NONCE_OFFSET, NONCE_SIZE, block.header.target, start, count)
                for start, count in taken], consumeErrors=True)
            # a range's own failure, not FirstError around it: a stop cancels the ranges out, and _run's
            # caller must see that CancelledError to know the miner was stopped rather than broken
            search.addErrback(lambda f: f.value.subFailure if f.check(defer.FirstError) else f)
            results = yield search
            self.hashes += sum(count for _, count in taken)
            hits = [r for r in results if r is not None]
            if hits:
                return min(hits)
            seen_now = (self.node.chain.tip.hash, len(self.node.mempool))
            if is_stale(made_on, seen_now, self.reactor.seconds() - made_at):
                return None
        return None
