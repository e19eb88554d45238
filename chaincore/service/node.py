"""The node: chain state, mempool and the events that tie them to the network.

`Node` is what the HTTP API, the peer-to-peer layer and the miner talk to.
A block comes in through one path, `submit_block` (or `submit_blocks` for a
catch-up batch), a transaction through `submit_tx`; each returns a Deferred,
because big signature checks run in worker processes first.  Underneath, the
chain state and mempool change synchronously in the reactor thread, metrics
and logs record it, and the listeners the wiring subscribed (relay, sync) hear
about it.  Time comes from an injected clock.
"""

import os
from collections import OrderedDict
import re

from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from ..logs import enabled as log_enabled, logger

from .. import __version__
from ..core import keys, rules
from ..core.block import Block, Header, merkle_root
from ..core.chainstate import Accepted, ChainState, NotStored, Orphan
from ..core.errors import BadSignature, Invalid, Malformed, NotFound, StoreError, Unavailable
from ..core.mempool import Mempool, TxAccepted
from ..core.params import describe_amount
from ..core.store import INVALID
from ..core.tx import make_coinbase
from .workers import SignatureBatcher

log = logger("chaincore.node")

TEMPLATE_RESERVE_BYTES = 2_000  # room left in a template for the header and the coinbase
OFFLOAD_MIN_INPUTS = 500        # below this, verifying inline costs less than the process hop
OFFLOAD_BATCH_INPUTS = 250
MAX_GATED_AHEAD = 1024          # blocks preverified ahead remembered as checked until submitted (32 bytes each)
MAX_PASSED_ON = 4               # blocks passed on before their check, kept to serve peers until checked
PEER_BLOCK_FLUSH_S = 1.0        # a block from a peer reaches disk's chain state within this long (one write)
TYPICAL_TX_BYTES = 300          # one input, a payment and change: what /fees prices as "typical"
TX_SUMMARY_S = 10               # accepted transactions are summed up in one info line per this many seconds


def parse_history_cursor(cursor: str):
    """A /history cursor: an int (the mempool arrival number rows continue below) or (height, tx_id);
    Malformed otherwise."""
    m = re.fullmatch(r"m([0-9]{1,19})|c([0-9]{1,10})\.([0-9a-f]{64})", cursor)
    if not m:
        raise Malformed(f"cursor {cursor[:80]!r} is not one this node gave out")
    if m.group(1) is not None:
        return int(m.group(1))
    return int(m.group(2)), bytes.fromhex(m.group(3))


SIG_CACHE_BYTES = 6_000_000
SIG_CACHE_ENTRY_BYTES = 170  # measured: a 32-byte tx_id (65 B) and its OrderedDict entry (105 B)


def _worth_verifying(block: Block, params) -> bool:
    """Whether a block's signatures are worth the workers' time: its header meets its proof of work and it
    holds the transactions that header commits to (so junk costs its sender a block's work).

    Only a gate: the chain state checks the block's every rule (check_block_sanity
    included) when it takes the block in, and refuses it with its rule.
    """
    try:
        rules.check_header_sanity(block.header, params)
    except Invalid:
        return False
    return bool(block.transactions) and merkle_root([tx.tx_id for tx in block.transactions]) == block.header.merkle_root


class SigCache:
    """tx_ids whose signatures verified, at most max_bytes of entries: past the bound, the oldest goes.

    Oldest first, not all at once: a catch-up adds the transactions of blocks
    verified ahead of their turn, and clearing them all would leave the chain
    state to verify thousands again in the reactor.
    """

    def __init__(self, max_bytes: int = SIG_CACHE_BYTES):
        self.bound = max_bytes // SIG_CACHE_ENTRY_BYTES
        # an OrderedDict forgets its oldest in O(1); a dict's first key is found by skipping the holes
        # its deletions left at the front, several microseconds a time at this size
        self._ids = OrderedDict()  # tx_id -> None, oldest first

    def __contains__(self, tx_id) -> bool:
        return tx_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, tx_id) -> None:
        ids = self._ids
        if tx_id not in ids:
            ids[tx_id] = None
            if len(ids) > self.bound:
                ids.popitem(last=False)

    def discard(self, tx_id) -> None:
        self._ids.pop(tx_id, None)


class Node:
    """One ChainCore node's state and its rules for taking in blocks and transactions."""

    def __init__(self, store, params, clock, *, advertise_url: str, metrics=None, verify=None,
                 mempool_bytes: int = 5_000_000, offloader=None):
        self.params = params
        self.offloader = offloader  # runs big signature batches in worker processes
        self.clock = clock
        self.store = store
        self.advertise_url = advertise_url
        self.metrics = metrics
        self.sig_cache = SigCache()
        # one cache of verified (key, sighash, signature) checks for the mempool, the workers and the blocks
        self.check_cache = rules.SignatureCache()
        self.recent_rejects = rules.RecentRejects()  # transactions refused at this tip, by tx_id or body digest
        self._verifying = {}  # tx_id -> the worker batch verifying it (blocks preverified ahead of their turn)
        self._gated_ahead = set()  # hashes of blocks preverified ahead that passed _worth_verifying
        self._verify = verify if verify is not None else rules.verify_batch
        # no signature of a request is verified in the reactor, however few: a flood of small transactions
        # would otherwise spend the reactor's time (the workers take it, batched across requests)
        self.signatures = None if offloader is None else SignatureBatcher(offloader, self.check_cache,
                                                                          on_hits=self._cache_hits)
        # the work gate is on: every caller says which blocks it requested (a catch-up on a heavier
        # header chain), so a branch that could not beat the tip is never written
        self.chain = ChainState(store, params, sig_cache=self.sig_cache, verify=self._verify_cached,
                                refuse_low_work=True)
        self._tx_window = (int(clock.seconds()), 0)  # (start, transactions accepted since) of the log summary
        self.store_failing = False  # a store write failed (disk full) and none has worked since
        self.mempool = Mempool(params, max_bytes=mempool_bytes, sig_cache=self.sig_cache,
                               check_cache=self.check_cache)
        node_id = store.get_meta("node_id")
        if node_id is None:
            node_id = os.urandom(16).hex()
            store.set_meta("node_id", node_id)
        self.node_id = node_id
        self.syncing = False
        # Listeners are subscribed by the wiring (service/wiring.py), never by themselves.
        self.block_listeners = []  # f(block, source) for each block newly stored (relay passes on tips only)
        # f(block, source) -> whether it sent anything, for a new child of the tip that passed every rule but
        # the coins' (ChainState.precheck), before those are checked: relay passes it on at once (BIP 152)
        self.early_block_listeners = []
        # () -> a Deferred that fires once what listeners just sent is written to the sockets (the reactor runs
        # its timed calls before it writes, so two turns); None: blocks are checked at once (tests' fakes)
        self.after_sends = None
        self._early_height = -1    # the height last passed on before its check: once a height, as BIP 152
        self._passed_on = OrderedDict()  # hash -> a block passed on early and not yet taken or refused
        self._flush_call = None    # the pending write of relayed blocks' chain state (_flush_soon)
        self.tx_listeners = []     # f(tx, source) for each transaction newly in the mempool
        self.orphan_listeners = []  # f(missing_hash, source) when a block's ancestors are missing
        self.reorg_listeners = []  # f(disconnected, connected) when the main chain switches branches
        self.mining_to = None      # the address --mine pays, shown on the explorer
        self._fee_estimate = None  # (what it was computed for, the answer): see fee_estimate
        self._coins = {}  # {(tip hash, payload): [(OutPoint, Coin)]}: see coins_of
        self._balance = None  # ((payload, wallet_state()), answer): see balance

    def now(self) -> int:
        return int(self.clock.seconds())

    def _verify_cached(self, checks) -> int:
        """The chain state's verifier: each distinct check verified once while the cache holds it."""
        checks = list(checks)
        verified = []

        def verify(pending):
            verified.append(len(pending))
            return self._verify(pending)

        bad = rules.verify_cached(checks, self.check_cache, verify)
        self._cache_hits(len(checks) - sum(verified))
        return bad

    def _cache_hits(self, n: int) -> None:
        if n > 0 and self.metrics is not None:
            self.metrics.refused("signature-cache", str(n))

    # -- blocks ----------------------------------------------------------------------

    def submit_block(self, block: Block, source: str | None = None, local: bool = False,
                     mined: bool = False) -> defer.Deferred:
        """Take a block from a peer, a miner or a client: fires with Accepted, Duplicate, Orphan or NotStored
        (nobody asked for it and its branch has less work than the tip), or fails with the Invalid rule it
        breaks (or a Fault of the node: StoreError when the store cannot write).

        `mined` marks a block this node's own miner found (--mine); `local` one
        that a miner on this machine submitted.  Both only change the log line.
        """
        d = self._submit([block], source, local, mined, False)

        def single(outcome):
            results, error = outcome
            if error is not None:
                raise error
            return results[0]

        return d.addCallback(single)

    def submit_blocks(self, blocks: list, source: str | None = None, requested: bool = False) -> defer.Deferred:
        """Take a run of blocks (a catch-up batch) in one store batch: fires with (results of the blocks
        taken, the Invalid error that stopped the run or None).  The blocks before an invalid one stay.

        requested says a catch-up asked source for them on a header chain with more
        work than our tip: they are stored even before their branch outweighs it.
        A store fault fails the Deferred with StoreError; memory then equals disk.
        """
        return self._submit(list(blocks), source, False, False, requested)

    def _submit(self, blocks: list, source, local: bool, mined: bool, requested: bool = False) -> defer.Deferred:
        """The one accept path of blocks: send big blocks' signatures to the workers, then accept the
        blocks in order, each run of blocks as soon as the signatures of all of them are back.

        The workers verify later blocks while the reactor connects earlier ones.
        Fires with (results of the blocks taken, the Invalid error that stopped
        the run or None).
        """
        single = len(blocks) == 1 and not requested  # relay, clients and miners: not a catch-up
        early = single and self._pass_on_early(blocks[0], source)
        ready = self._preverify(blocks, inline_ok=local or mined, single=single)
        if early and self.after_sends is not None:
            # the block goes out before it is checked against the coins: let the reactor write it first
            ready[0] = defer.DeferredList([ready[0], self.after_sends()])
        results, done = [], defer.Deferred()
        state = {"next": 0}

        def finish(outcome):
            # advance refers to itself through state: a cycle holding every block of the run, which only
            # the cyclic collector would free (late, during a catch-up): break it before firing
            state.clear()
            blocks.clear()
            ready.clear()
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)

        def advance(_=None):
            if done.called or not state:
                return
            start = state["next"]
            end = start
            while end < len(blocks) and ready[end].called:
                end += 1
            if end > start:
                state["next"] = end
                try:
                    taken, error = self._accept_run(blocks[start:end], source, local, mined, requested)
                except BaseException:
                    finish(Failure())
                    return
                results.extend(taken)
                if error is not None:
                    finish((results, error))
                    return
            if state["next"] == len(blocks):
                finish((results, None))
            else:
                ready[state["next"]].addBoth(state["advance"])

        state["advance"] = advance
        advance()
        return done

    def _pass_on_early(self, block: Block, source) -> bool:
        """Hand a new child of the tip to the early listeners once it meets every rule but the coins' (not
        during a catch-up; once a height, so a stream of siblings is not passed on); whether any sent it."""
        if not self.early_block_listeners or self.syncing or block.height <= self._early_height:
            return False
        if not self.chain.precheck(block, self.now()):
            return False
        self._early_height = block.height
        self._passed_on[block.hash] = block  # its peers ask for its compact form and transactions meanwhile
        while len(self._passed_on) > MAX_PASSED_ON:
            self._passed_on.popitem(last=False)
        sent = False
        for listener in list(self.early_block_listeners):
            sent = bool(listener(block, source)) or sent
        return sent

    def _accept_run(self, blocks: list, source, local: bool, mined: bool, requested: bool) -> tuple:
        """Accept blocks in order in one store batch: (results, the Invalid error that stopped them or None)."""
        results, stopped, revived = [], None, None
        try:
            with self.chain.batch():  # reloads the chain state from the store if the batch is lost
                if self.store_failing:
                    # connections lost with a failed write: the stored blocks become the active chain again
                    revived = self.chain.connect_stored()
                for block in blocks:
                    try:
                        results.append(self._accept_block(block, source, local, mined, requested))
                    except Invalid as err:
                        stopped = err
                        break
                if not requested and (source is None or self.store_failing):
                    # what miners and clients bring is on disk when its answer goes out (and anything while
                    # the store has been failing: only a write says it writes again); a catch-up's runs are
                    # held in memory up to the store's bound and flushed when it ends
                    self._flush_store()
                elif not requested:
                    # a relayed block's is written within PEER_BLOCK_FLUSH_S, after the moment every peer
                    # spends checking it (its bytes are stored already: a crash connects it again)
                    self._flush_soon()
        except StoreError as err:
            self._store_failed(err)
            raise
        if stopped is not None:
            return results, stopped
        if self.store_failing and (revived is not None or any(isinstance(r, Accepted) for r in results)):
            self.store_failing = False
            log.info("the store writes again: taking blocks, tip {tip} at height {height}",
                     tip=self.chain.tip.hash.hex()[:16], height=self.chain.height)
        return results, None

    def _store_failed(self, err: StoreError) -> None:
        if not self.store_failing:  # one line per outage, not one per refused block
            self.store_failing = True
            log.error("the store cannot write ({err}): refusing new blocks with 503 until it can; "
                      "tip stays {tip} at height {height}", err=err, tip=self.chain.tip.hash.hex()[:16],
                      height=self.chain.height)
        self._count("block", "rejected", err.code)

    def _flush_store(self) -> None:
        flush = getattr(self.store, "flush", None)
        if flush is not None:
            flush()

    def stop(self) -> None:
        """Cancel the pending write of relayed blocks' chain state (the node is stopping: closing the
        store writes it)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()

    def _flush_soon(self) -> None:
        if self._flush_call is None or not self._flush_call.active():
            self._flush_call = self.clock.callLater(PEER_BLOCK_FLUSH_S, self.flush_chain)

    def flush_chain(self) -> bool:
        """Write the chain state the store holds in memory (a catch-up's connections) to disk; whether it
        worked.  A failed write is logged and counted like a failed block: the node then stands at its
        last flushed tip, memory equal to disk, and connects the stored blocks beyond it again later."""
        try:
            self._flush_store()
        except StoreError as err:
            self.chain.reload()
            self._store_failed(err)
            return False
        return True

    def _accept_block(self, block: Block, source: str | None, local: bool, mined: bool = False,
                      requested: bool = False):
        """Hand one block to the chain state, then update the mempool, metrics, logs and listeners."""
        try:
            result = self.chain.accept_block(block, self.now(), requested=requested, source=source)
        except Invalid as err:
            self._passed_on.pop(block.hash, None)
            self._count("block", "rejected", err.code)
            log.info("block {hash} at height {height} rejected: {reason}",
                     hash=block.hash.hex()[:16], height=block.height, reason=err)
            raise
        self._passed_on.pop(block.hash, None)
        if isinstance(result, Accepted):
            self._count("block", "accepted")
            if result.disconnected:
                dropped = self.mempool.reorganise(result.disconnected, result.connected,
                                                  self.chain.get_coin, self.chain.height + 1)
                log.info("reorganisation: {n_off} blocks off, {n_on} on, tip {tip} at {height}; "
                         "{dropped} mempool transactions dropped",
                         n_off=len(result.disconnected), n_on=len(result.connected),
                         tip=self.chain.tip.hash.hex()[:16], height=self.chain.height, dropped=len(dropped))
                returned = [tx for b in reversed(result.disconnected) for tx in b.transactions[1:]
                            if tx.tx_id in self.mempool]
                for listener in list(self.reorg_listeners):
                    listener(result.disconnected, result.connected)
                for tx in returned:  # back in the mempool: news to peers that only saw the block
                    for listener in list(self.tx_listeners):
                        listener(tx, None)
            else:
                for connected in result.connected:
                    self.mempool.remove_for_block(connected)
            self._log_block(block, result, source, local, mined, requested)
            for listener in list(self.block_listeners):
                listener(block, source)
        elif isinstance(result, NotStored):
            self._count("block", "not-stored")
            log.debug("block {hash} at height {height} not stored: {reason}",
                      hash=block.hash.hex()[:16], height=block.height, reason=result.reason)
        elif isinstance(result, Orphan):
            self._count("block", "orphan")
            for listener in list(self.orphan_listeners):
                listener(result.missing, source)
        return result

    def _log_block(self, block: Block, result, source, local: bool, mined: bool, requested: bool = False) -> None:
        """One line per block taken in, with the verb saying where it came from (a catch-up sums its up)."""
        short, height = block.hash.hex()[:16], block.height
        n = len(block.transactions)
        txs = f"{n} transaction{'s' if n != 1 else ''}"
        if not result.main_chain:
            (log.debug if requested else log.info)("stored side-chain block {hash} at height {height} (tip stays at {tip})",
                     hash=short, height=height, tip=self.chain.height)
        elif mined:
            log.info("mined block {hash} at height {height} ({txs})", hash=short, height=height, txs=txs)
        elif local:
            log.info("accepted block {hash} at height {height} from a local miner ({txs})",
                     hash=short, height=height, txs=txs)
        elif source:  # during catch-up the sync layer sums blocks up instead
            (log.debug if self.syncing else log.info)("block {hash} at height {height} from {peer} ({txs})",
                                                      hash=short, height=height, peer=source, txs=txs)
        elif not self.syncing:
            log.info("accepted block {hash} at height {height} ({txs})", hash=short, height=height, txs=txs)

    def preverify_blocks(self, blocks) -> None:
        """Send the signatures of blocks that will be submitted soon to the workers now (a catch-up does
        this for the run after the one being connected), so the workers verify while the reactor connects.

        Nothing is decided here: the blocks are taken in by submit_blocks, whose
        own preverify waits for these batches rather than sending them again.
        """
        self._preverify(list(blocks), ahead=True)

    def _preverify(self, blocks, inline_ok: bool = False, ahead: bool = False, single: bool = False) -> list:
        """Send the not yet verified signatures of blocks that pass their cheap checks to the worker
        processes, in batches; for each block, a Deferred that fires (with None) once its batches are back.

        Transactions whose batch verified go into the signature cache, so the
        chain state skips them; a bad signature, or a batch lost with its
        worker, is left for the chain state to find and report with its rule.
        A block from this machine's miner (`inline_ok`) with few inputs is not
        worth the process hop: it is left to the chain state, and its Deferred
        has fired already; anything that came over the network goes to the workers.

        A block submitted on its own (`single`: relay, clients, miners) goes to
        the pipe signature workers (`offloader.verify_tx_bytes`): no executor to
        start, no thread or pickling in the node.  A catch-up's runs keep the
        process pool (`offloader.run`), whose throughput joining nodes rely on.
        """
        ready = [defer.succeed(None) for _ in blocks]
        if self.offloader is None:
            return ready
        pending = []  # (index of the block, transaction)
        waits = {}    # block index -> the jobs holding its transactions
        for n, block in enumerate(blocks):
            if self.chain.has_block(block.hash):
                continue
            if block.hash in self._gated_ahead:
                self._gated_ahead.discard(block.hash)  # checked when it was preverified ahead
            else:
                if not _worth_verifying(block, self.params):
                    break  # the chain state refuses it with its rule; the blocks after it are not taken
                if ahead:
                    if len(self._gated_ahead) >= MAX_GATED_AHEAD:  # blocks preverified and never submitted
                        self._gated_ahead.clear()
                    self._gated_ahead.add(block.hash)
            for tx in block.transactions[1:]:
                if tx.tx_id in self.sig_cache:
                    continue
                job = self._verifying.get(tx.tx_id)
                if job is not None:  # out already (preverified ahead): waited for, not sent again
                    jobs = waits.setdefault(n, [])
                    if not jobs or jobs[-1] is not job:
                        jobs.append(job)
                else:
                    pending.append((n, tx))
        n_inputs = sum(len(tx.inputs) for _, tx in pending)
        if n_inputs == 0 or (inline_ok and n_inputs < OFFLOAD_MIN_INPUTS):
            pending = []
        # batches of about OFFLOAD_BATCH_INPUTS inputs, in block order, a batch may span blocks
        chunks, chunk, size = [], [], 0
        for item in pending:
            chunk.append(item)
            size += len(item[1].inputs)
            if size >= OFFLOAD_BATCH_INPUTS:
                chunks.append(chunk)
                chunk, size = [], 0
        if chunk:
            chunks.append(chunk)
        for ch in chunks:
            # The workers get the transactions' bytes and build the checks themselves: a block's checks
            # are new (a transaction seen in the mempool is in sig_cache, skipped above), and building
            # them here (sighashes, check-cache keys) cost the reactor more than the bytes cost to send.
            txs = [tx for _, tx in ch]
            raw_txs = [tx.raw for tx in txs]
            if single:
                job = self.offloader.verify_tx_bytes(raw_txs)
            else:
                job = self.offloader.run(rules.verify_tx_bytes, raw_txs)
            for tx in txs:
                self._verifying[tx.tx_id] = job
            job.addBoth(self._verified, txs)
            for n in {n for n, _ in ch}:
                waits.setdefault(n, []).append(job)
        for n, jobs in waits.items():
            ready[n] = defer.gatherResults(jobs).addCallback(lambda _: None)
        return ready

    def _verified(self, bad, txs) -> None:
        """One worker batch is back: its transactions before the first bad one (all if none) are verified."""
        for tx in txs:
            self._verifying.pop(tx.tx_id, None)
        if isinstance(bad, Failure):
            log.warn("a signature batch failed in a worker ({error}); the chain state verifies it",
                     error=bad.getErrorMessage())
            return None
        for tx in txs if bad < 0 else txs[:bad]:
            self.sig_cache.add(tx.tx_id)
        return None

    # -- transactions ----------------------------------------------------------------

    def refused_recently(self, key: bytes) -> Invalid | None:
        """The refusal of a transaction (by tx_id, or the digest of the body it came in) refused at this tip,
        or None; a hit is counted, so a repeat costs a lookup and nothing else."""
        refusal = self.recent_rejects.refusal(key, self.chain.tip.hash)
        if refusal is not None:
            if self.metrics is not None:
                self.metrics.refused("recent-reject")
            self._count("tx", "rejected", refusal.code)
        return refusal

    def _rejected(self, tx, err: Invalid, body_digest: bytes | None = None) -> None:
        """Remember, count and log one refusal of tx (every Invalid refusal passes here)."""
        tip = self.chain.tip.hash
        self.recent_rejects.add(tx.tx_id, err, tip)
        if body_digest is not None:
            self.recent_rejects.add(body_digest, err, tip)
        self._count("tx", "rejected", err.code)
        log.debug("transaction {tx_id} rejected: {reason}", tx_id=tx.tx_id.hex()[:16], reason=err)

    def submit_tx(self, tx, source: str | None = None, body_digest: bytes | None = None) -> defer.Deferred:
        """Take a transaction into the mempool: fires with TxAccepted ("accepted" or "duplicate"), or fails
        with the Invalid rule it breaks.

        Every cheap rule is checked first, so an invalid transaction costs no
        signature work; the signatures are then verified in worker processes
        (batched with other requests), and a transaction whose signatures fail
        is refused with BadSignature, and never checked again in the reactor.
        A transaction refused at this tip (rules.RecentRejects, by tx_id or by
        `body_digest`, the SHA-256 of the body it came in) is refused again at
        once, without any check.
        """
        refusal = self.refused_recently(tx.tx_id)
        if refusal is not None:
            return defer.fail(refusal)
        if self.signatures is None or tx.tx_id in self.sig_cache or tx.tx_id in self.mempool:
            return defer.maybeDeferred(self._accept_tx, tx, source, None, body_digest)
        try:
            fee = self.mempool.check(tx, self.chain.get_coin, self.chain.height + 1)
        except Invalid:  # refused with logs and metrics, and remembered
            return defer.maybeDeferred(self._accept_tx, tx, source, None, body_digest)
        checked_against = (self.chain.tip.hash, self.mempool.removals)

        def verified(ok):
            if not ok:
                err = BadSignature("a signature of the transaction does not verify")
                self._rejected(tx, err, body_digest)
                raise err
            self.sig_cache.add(tx.tx_id)
            unchanged = ok and checked_against == (self.chain.tip.hash, self.mempool.removals)
            return self._accept_tx(tx, source, checked_fee=fee if unchanged else None)

        return self.signatures.verify(rules.signature_checks(tx)).addCallback(verified)

    def _accept_tx(self, tx, source: str | None = None, checked_fee: int | None = None,
                   body_digest: bytes | None = None):
        """Hand one transaction to the mempool, then update metrics, logs and listeners."""
        # A transaction checked against the coins at this very tip (checked_fee) spends unspent coins, so it
        # cannot be in the main chain already: the store is asked only for the others.
        if tx.tx_id in self.mempool or (checked_fee is None and self.store.tx_location(tx.tx_id) is not None):
            return TxAccepted(tx.tx_id, "duplicate")
        try:
            result = self.mempool.accept(tx, self.chain.get_coin, self.chain.height + 1, checked_fee)
        except Invalid as err:
            self._rejected(tx, err, body_digest)
            raise
        self._count("tx", "accepted")
        self._log_accepted(tx, source)
        for listener in list(self.tx_listeners):
            listener(tx, source)
        return result

    def _log_accepted(self, tx, source: str | None) -> None:
        """One debug line per accepted transaction; at info, one line per TX_SUMMARY_S seconds with their number.

        A busy node would otherwise spend more on writing its log than on
        checking the transaction.  The summary is written by the first
        acceptance after the period: a node that stops taking transactions
        writes it with the next one.
        """
        if log_enabled(log.namespace, LogLevel.debug):
            log.debug("transaction {tx_id} accepted{origin}: {value} to {n} output(s), fee {fee}",
                      tx_id=tx.tx_id.hex()[:16], origin=f" from {source}" if source else "",
                      value=describe_amount(tx.output_total), n=len(tx.outputs),
                      fee=describe_amount(self.mempool.entry(tx.tx_id).fee) if tx.tx_id in self.mempool else "?")
        start, n = self._tx_window
        now = int(self.clock.seconds())
        n += 1
        if now - start >= TX_SUMMARY_S:
            size = len(self.mempool)
            log.info("{n} transaction{s} accepted in the last {seconds} s; the mempool holds {size} transaction{ps}",
                     n=n, s="" if n == 1 else "s", seconds=now - start, size=size, ps="" if size == 1 else "s")
            start, n = now, 0
        self._tx_window = (start, n)

    def _count(self, kind: str, outcome: str, reason: str = "") -> None:
        if self.metrics is not None:
            self.metrics.count(kind, outcome, reason)

    # -- queries -----------------------------------------------------------------------

    def status(self) -> dict:
        """The node's side of /status; the API adds what the peer directory knows (peer_count)."""
        tip = self.chain.tip
        return {
            "node_id": self.node_id,
            "version": __version__,
            "network": self.params.name,
            "genesis_hash": self.params.genesis_hash.hex(),
            "height": tip.height,
            "blockchain_length": tip.height + 1,
            "tip_hash": tip.hash.hex(),
            "chainwork": f"{tip.chainwork:064x}",
            "target": f"{self.chain.next_target(tip):064x}",
            "mempool_size": len(self.mempool),
            "mempool_bytes": self.mempool.total_bytes,
            "coinbase_maturity": self.params.coinbase_maturity,
            "block_reward": self.params.block_reward(tip.height + 1),
            "url": self.advertise_url,
            "syncing": self.syncing,
            "median_time_past": tip.median_time_past,
            "orphans": self.chain.orphan_count(),
        }

    def block(self, block_hash: bytes) -> Block:
        block = self.chain.block(block_hash)
        if block is None:
            raise NotFound(f"no block {block_hash.hex()}")
        return block

    def block_for_relay(self, block_hash: bytes) -> Block:
        """A stored block, or one passed on to peers before its check against the coins and still being
        checked (they ask for its compact form and transactions meanwhile); NotFound if neither, or if the
        block is known to break a rule (stored when its connection failed: no peer is handed it again)."""
        block = self._passed_on.get(block_hash)
        if block is not None:
            return block
        entry = self.chain.entry(block_hash)
        if entry is not None and entry.status == INVALID:
            raise NotFound(f"block {block_hash.hex()} breaks a rule")
        return self.block(block_hash)

    def block_bytes(self, block_hash: bytes) -> bytes:
        """The canonical bytes of a stored block, as stored (nothing decoded); NotFound if unknown."""
        raw = self.store.get_block(block_hash)
        if raw is None:
            raise NotFound(f"no block {block_hash.hex()}")
        return raw

    def main_block_bytes(self, start: int, limit: int) -> list:
        """The canonical bytes of main-chain blocks from height start, at most limit of them, as stored."""
        return list(self.iter_main_block_bytes(start, limit))

    def iter_main_block_bytes(self, start: int, limit: int):
        """main_block_bytes read one block at a time, so a caller that stops early reads no more."""
        chain = self.chain
        for height in range(max(start, 0), min(start + limit, chain.height + 1)):
            yield self.store.get_block(chain.main_hash(height))

    def transaction(self, tx_id: bytes) -> dict:
        """A transaction from the chain or the mempool, with its confirmations (0 in the mempool)."""
        found = self.chain.transaction(tx_id)
        if found is not None:
            tx, block_hash, height, confirmations = found
            return {"tx": tx, "block_hash": block_hash, "height": height, "confirmations": confirmations}
        tx = self.mempool.get(tx_id)
        if tx is not None:
            return {"tx": tx, "block_hash": None, "height": None, "confirmations": 0}
        raise NotFound(f"no transaction {tx_id.hex()} in the chain or the mempool")

    COINS_KEPT = 8  # addresses whose coins coins_of keeps at one tip

    def wallet_state(self) -> tuple:
        """What the wallet answers (/balance, /utxos) depend on: the tip and the mempool's contents.
        Equal tuples mean equal answers (a mempool that lost and gained a transaction counts a removal)."""
        return (self.chain.tip.hash, len(self.mempool), self.mempool.total_bytes, self.mempool.removals)

    def coins_of(self, payload: bytes) -> list:
        """[(OutPoint, Coin)] paying payload at the tip, from the store's address index.  The lists of the
        last few addresses asked are kept until the tip changes (coins change only with it): an address
        of thousands of coins asked again and again (/utxos, /balance, its explorer page) is read once."""
        self.flush_chain()  # the store's address index holds only what is written (a failure goes back to disk's tip)
        tip = self.chain.tip.hash
        key = (tip, payload)
        coins = self._coins.get(key)
        if coins is None:
            if any(k[0] != tip for k in self._coins):
                self._coins.clear()
            while len(self._coins) >= self.COINS_KEPT:
                del self._coins[next(iter(self._coins))]
            coins = self._coins[key] = self.chain.coins_of(payload)
        return coins

    def balance(self, address: str) -> dict:
        """What address owns, in base units (CONTRACT 7): `spendable` is confirmed, mature and not
        spent by a mempool transaction; `immature` is confirmed coinbase outputs still maturing."""
        payload = keys.address_payload(address)
        key = (payload, self.wallet_state())
        if self._balance is not None and self._balance[0] == key:
            return dict(self._balance[1])
        coins = self.coins_of(payload)
        confirmed = sum(coin.amount for _, coin in coins)
        next_height = self.chain.height + 1
        immature = sum(coin.amount for _, coin in coins if not rules.is_mature(coin, next_height, self.params))
        spendable = sum(coin.amount for op, coin in coins
                        if rules.is_mature(coin, next_height, self.params) and self.mempool.spender(op) is None)
        delta = self.mempool.unconfirmed_delta(payload, self.chain.get_coin)
        answer = {"address": address, "balance": confirmed + delta, "confirmed": confirmed, "unconfirmed": delta,
                  "spendable": spendable, "immature": immature}
        self._balance = (key, answer)  # the last one asked: an explorer page asked again costs nothing
        return dict(answer)

    def utxos(self, address: str) -> list:
        return [self.utxo_row(op, coin) for op, coin in self.utxo_coins(address)]

    def utxo_coins(self, address: str) -> list:
        """[(OutPoint, Coin)] address owns, from the store's address index; utxo_row renders each."""
        return list(self.coins_of(keys.address_payload(address)))

    def utxo_row(self, op, coin) -> dict:
        """One row of /utxos (CONTRACT 7)."""
        return {"tx_id": op.tx_id.hex(), "output_index": op.index, "amount": coin.amount, "height": coin.height,
                "coinbase": coin.is_coinbase, "mature": rules.is_mature(coin, self.chain.height + 1, self.params),
                "spent_in_mempool": self.mempool.spender(op) is not None}

    def history(self, address: str, limit: int = 500) -> list:
        """The first `limit` rows of history_page (kept for callers that want no paging)."""
        return self.history_page(address, limit)[0]

    def history_page(self, address: str, limit: int = 50, cursor: str | None = None) -> tuple:
        """(rows, next cursor or None): the address's transactions, newest first (CONTRACT 7).

        Mempool transactions come first, newest first (cursor `m<n>`: those that
        arrived before arrival number n, so one that leaves between two pages
        moves no other out of them), then the main chain by height down, then
        tx_id (cursor `c<height>.<tx_id hex>`: rows after that one).  Nothing is
        cut silently: `next` is None only on the last page.
        """
        payload = keys.address_payload(address)
        after = None
        below = None  # the arrival number mempool rows continue below (None: from the newest)
        if cursor:
            after = parse_history_cursor(cursor)
            if isinstance(after, int):
                below, after = after, None
        rows = []
        if after is None:
            pending = [t.tx_id for t in reversed(self.mempool.transactions())
                       if any(o.recipient == payload for o in t.outputs)
                       or any(keys.payload_of(i.public_key) == payload for i in t.inputs)]
            if below is not None:
                pending = [tx_id for tx_id in pending if self.mempool.entry(tx_id).sequence < below]
            for tx_id in pending[:limit]:
                rows.append(self._history_row(tx_id, payload))
            if len(pending) > limit:
                return rows, f"m{self.mempool.entry(pending[limit - 1]).sequence}"
        self.flush_chain()  # as coins_of: the history index holds only what is written
        chain_rows = self.store.history_rows(payload, limit - len(rows) + 1, after)
        more = len(chain_rows) > limit - len(rows)
        chain_rows = chain_rows[:limit - len(rows)]
        tip_height = self.chain.height
        for tx_id, height, _position, amount_delta, coinbase in chain_rows:
            # everything a chain row shows is in the history index: no block is read
            rows.append({"tx_id": tx_id.hex(), "height": height, "confirmations": tip_height - height + 1,
                         "amount_delta": amount_delta, "coinbase": coinbase})
        if more:
            if not chain_rows:  # the page filled with mempool rows exactly; the chain starts the next one
                return rows, f"m{self.mempool.entry(pending[-1]).sequence}"
            return rows, f"c{chain_rows[-1][1]}.{chain_rows[-1][0].hex()}"
        return rows, None

    def _history_row(self, tx_id: bytes, payload: bytes) -> dict:
        """The /history row of a mempool transaction (the coins it spends are unspent or in the mempool)."""
        tx = self.mempool.get(tx_id)
        received = sum(o.amount for o in tx.outputs if o.recipient == payload)
        sent = 0
        for txin in tx.inputs:
            if txin.is_null or keys.payload_of(txin.public_key) != payload:
                continue
            coin = self.chain.get_coin(txin.outpoint)
            if coin is not None:
                sent += coin.amount
            else:
                sent += self.transaction(txin.prev_tx_id)["tx"].outputs[txin.output_index].amount
        return {"tx_id": tx_id.hex(), "height": None, "confirmations": 0,
                "amount_delta": received - sent, "coinbase": tx.is_coinbase}

    def fee_estimate(self, recent_blocks: int = 6) -> dict:
        """The fee rate (units per byte) a transaction should pay to be mined soon (CONTRACT 7).

        The floor is the relay minimum.  When the mempool holds more than a
        block, the rate is the lowest one that still makes the next block; when
        recent blocks were nearly full, at least the median rate they paid.
        Mempool rates are package rates (mempool.packages), as templates choose.
        The answer is kept until the tip or the mempool changes: the explorer's
        home page asks for it on every render, and the recent blocks' rate
        would otherwise decode those blocks each time.
        """
        key = (recent_blocks, self.chain.tip.hash, len(self.mempool), self.mempool.total_bytes,
               self.mempool.removals)
        if self._fee_estimate is not None and self._fee_estimate[0] == key:
            return dict(self._fee_estimate[1])
        floor = self.mempool.min_fee_rate
        capacity = self.params.max_block_size - TEMPLATE_RESERVE_BYTES
        mempool_rate = floor
        if self.mempool.total_bytes > capacity:
            # the rate of each package chosen (a cheap parent rides on the child that pays for it)
            rates = [self.mempool.fees_of(package) / sum(tx.size for tx in package)
                     for package in self.mempool.packages(capacity)]
            if rates:
                mempool_rate = int(min(rates)) + 1
        paid = []
        tip = self.chain.height
        for block in self.chain.main_blocks(max(1, tip - recent_blocks + 1), recent_blocks):
            body = sum(tx.size for tx in block.transactions[1:])
            if body and block.size >= capacity * 0.9:
                fees = block.transactions[0].output_total - self.params.block_reward(block.height)
                paid.append(max(0, fees) // body)
        recent_rate = sorted(paid)[len(paid) // 2] if paid else floor
        rate = max(floor, mempool_rate, recent_rate)
        answer = {"fee_rate": rate, "min_fee_rate": floor, "mempool_rate": mempool_rate,
                  "recent_blocks_rate": recent_rate, "mempool_size": len(self.mempool),
                  "mempool_bytes": self.mempool.total_bytes, "block_capacity_bytes": capacity,
                  "typical_tx_bytes": TYPICAL_TX_BYTES, "typical_fee": rate * TYPICAL_TX_BYTES}
        self._fee_estimate = (key, answer)
        return dict(answer)

    # -- mining ------------------------------------------------------------------------

    def block_template(self, address: str) -> Block:
        """An unsolved block on the tip: coinbase paying address, mempool transactions by fee rate."""
        if self.syncing:
            raise Unavailable("the node is catching up with its peers; try again shortly")
        payload = keys.address_payload(address)
        tip = self.chain.tip
        height = tip.height + 1
        txs = self.mempool.select(self.params.max_block_size - TEMPLATE_RESERVE_BYTES)
        fees = self.mempool.fees_of(txs)
        coinbase = make_coinbase(height, [(payload, self.params.block_reward(height) + fees)], os.urandom(8))
        all_txs = (coinbase,) + tuple(txs)
        # the earliest timestamp the rules allow (median time past, and main's time-warp rule)
        header = Header(1, height, tip.hash, merkle_root([t.tx_id for t in all_txs]),
                        max(self.now(), self.chain.earliest_timestamp(tip)), self.chain.next_target(tip), 0)
        return Block(header, all_txs)
