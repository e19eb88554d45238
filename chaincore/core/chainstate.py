"""The chain state: a tree of known blocks, the most-work valid branch active, its UTXO set.

Blocks enter through `accept_block(block, now)`.  A block whose parent is
unknown waits in an orphan pool bounded in bytes per source and in total.
Nothing of a branch is written before its work could beat the tip: a block
nobody asked for whose branch has less work than the tip is checked, then
answered NotStored (a header-first sync passes requested=True for the blocks
it fetched on a heavier header chain); the gate is on with refuse_low_work.
Every stored block gets a BlockEntry with its cumulative work; whenever a
branch has more work than the active tip, the chain state disconnects back
to the fork point (using undo data) and connects the new branch block by
block, each step one atomic store update.
A block that breaks a rule while connecting is marked invalid with all its
descendants, and the chain state settles on the most-work valid branch it
knows (CONTRACT 4).  The chain state never calls outward: it returns what
changed (connected and disconnected blocks) for the mempool and relay.
"""

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

from . import rules
from .block import Block, Header, block_work
from .errors import Invalid, InvalidAncestor
from .keys import payload_of
from .params import NetworkParams
from .rules import ParentInfo
from .store import DATA_STORED, FULLY_VALID, INVALID, BlockEntry, ChainUpdate
from .tx import OutPoint, new_outpoint

MAX_ORPHANS = 256
MAX_ORPHAN_BYTES = 32_000_000
MAX_ORPHAN_BYTES_PER_SOURCE = 16_000_000  # one source cannot push every other one's orphans out
MAX_HEADERS = 2000
MAX_NOT_STORED = 1024  # hashes of low-work blocks refused lately: a repeat is answered without checks
ENTRY_CACHE_BYTES = 8_000_000  # block entries kept in memory, in bytes: it does not grow with the chain
ENTRY_BYTES = 720  # measured: a BlockEntry read from SQLite, its hashes and integers, and its cache link


@dataclass
class Accepted:
    """The block is stored; main_chain says whether it is on the active chain now."""

    block_hash: bytes
    height: int
    main_chain: bool
    connected: list = field(default_factory=list)     # [Block] newly on the main chain, in order
    disconnected: list = field(default_factory=list)  # [Block] taken off it, tip first
    status: str = "accepted"


@dataclass
class Duplicate:
    block_hash: bytes
    status: str = "duplicate"


@dataclass
class Orphan:
    """The block's parent is unknown; it waits in the orphan pool for `missing`."""

    block_hash: bytes
    missing: bytes
    status: str = "orphan"


@dataclass
class NotStored:
    """Nobody asked for the block and its branch has less work than the tip: it was checked, not written.

    Not a rule broken (a late block of a lost race is honest), so no penalty;
    never "accepted" either (CONTRACT 7).
    """

    block_hash: bytes
    reason: str
    status: str = "not-stored"


@dataclass(frozen=True)
class _OrphanBlock:
    block: Block
    source: str | None
    requested: bool


class ChainState:
    """The block tree, the active chain and the UTXO set, kept in a ChainStore."""

    def __init__(self, store, params: NetworkParams, verify=rules.verify_batch,
                 cache_entries: int = ENTRY_CACHE_BYTES // ENTRY_BYTES,
                 sig_cache=frozenset(), max_orphan_bytes: int = MAX_ORPHAN_BYTES,
                 max_orphan_bytes_per_source: int = MAX_ORPHAN_BYTES_PER_SOURCE, refuse_low_work: bool = False):
        self.store = store
        self.params = params
        self.verify = verify
        self.sig_cache = sig_cache  # tx_ids whose signatures were already verified (the mempool's)
        self._entries = OrderedDict()
        self._cache_entries = cache_entries
        self._orphans = OrderedDict()   # hash -> _OrphanBlock, oldest first
        self._orphans_by_parent = {}    # parent hash -> set of hashes
        self._orphan_bytes = 0
        self._orphan_bytes_by_source = {}  # source -> bytes of its orphans
        self._max_orphan_bytes, self._max_orphan_bytes_per_source = max_orphan_bytes, max_orphan_bytes_per_source
        # Off until every caller says which blocks it requested (a catch-up that does not would
        # refuse the first blocks of a deep fork and never reorganise).
        self.refuse_low_work = refuse_low_work
        self._not_stored = OrderedDict()   # hash -> None: low-work blocks refused lately
        self._invalid_reasons = {}      # hash -> the error that made it invalid (this run only)
        self._prechecked = None         # the last block precheck passed: accept_block need not check its shape again
        if store.tip() is None:
            self._write_genesis()
        self._tip = self.entry(store.tip())
        if self._tip is None:
            raise Invalid("the store names a tip it does not hold")
        self.connect_stored()

    def connect_stored(self) -> Accepted | None:
        """Connect the most-work branch of stored blocks if it beats the tip; what changed, or None.

        A store that holds writes in memory (CachedStore) loses the connections
        made since its last flush in a crash or a failed write, while the blocks
        themselves are on disk: this makes them the active chain again.  A flush
        can land part-way through a switch of branches, on a block that only ties
        the chain the switch failed back to: the tip then ties the best stored
        entry, which is the first seen of that work, so the chain state goes back
        to it (ties keep the first-seen chain, CONTRACT 4).
        """
        best = next(iter(self.store.best_entries(1)), None)
        if best is None or best.hash == self._tip.hash or best.chainwork < self._tip.chainwork:
            return None
        result = Accepted(best.hash, best.height, False)
        if best.chainwork == self._tip.chainwork:
            self._switch_to(best, result)
        self._activate_best_chain(result)
        result.main_chain = self.is_main(best.hash)
        return result

    # -- reading -------------------------------------------------------------------

    @property
    def tip(self) -> BlockEntry:
        return self._tip

    @property
    def height(self) -> int:
        return self._tip.height

    def entry(self, block_hash: bytes) -> BlockEntry | None:
        e = self._entries.get(block_hash)
        if e is not None:
            self._entries.move_to_end(block_hash)
            return e
        e = self.store.get_entry(block_hash)
        if e is not None:
            self._remember(e)
        return e

    def _remember(self, e: BlockEntry) -> None:
        self._entries[e.hash] = e
        self._entries.move_to_end(e.hash)
        while len(self._entries) > self._cache_entries:
            self._entries.popitem(last=False)

    def block(self, block_hash: bytes) -> Block | None:
        raw = self.store.get_block(block_hash)
        return Block.decode(raw) if raw is not None else None

    def main_hash(self, height: int) -> bytes | None:
        if height < 0 or height > self._tip.height:
            return None
        return self.store.main_hash(height)

    def main_hashes(self, start: int, limit: int) -> list:
        """The main chain's hashes from height start, at most limit of them, in one store read."""
        stop = min(start + limit, self._tip.height + 1)
        start = max(start, 0)
        return self.store.main_hashes(start, stop - start) if stop > start else []

    def is_main(self, block_hash: bytes) -> bool:
        e = self.entry(block_hash)
        return e is not None and self.store.main_hash(e.height) == block_hash

    def main_blocks(self, start: int, limit: int) -> list:
        """Main-chain blocks from height start, at most limit of them."""
        out = []
        for height in range(max(start, 0), min(start + limit, self._tip.height + 1)):
            out.append(self.block(self.store.main_hash(height)))
        return out

    def locator(self) -> list:
        """Hashes of the main chain, dense near the tip and sparse further back, ending at genesis."""
        hashes, height, step = [], self._tip.height, 1
        while height > 0:
            hashes.append(self.store.main_hash(height))
            if len(hashes) >= 10:
                step *= 2
            height -= step
        hashes.append(self.store.main_hash(0))
        return hashes

    def fork_point(self, locator) -> int:
        """The height of the first locator hash on our main chain (0, genesis, if none is)."""
        for block_hash in locator:
            e = self.entry(block_hash)
            if e is not None and e.height <= self._tip.height and self.store.main_hash(e.height) == block_hash:
                return e.height
        return 0

    def headers_after(self, locator, limit: int = MAX_HEADERS) -> list:
        """Main-chain headers after the first locator hash we know (fork-point discovery)."""
        start = self.fork_point(locator) + 1
        out = []
        for height in range(start, min(start + min(limit, MAX_HEADERS), self._tip.height + 1)):
            out.append(Header.decode(self.entry(self.store.main_hash(height)).header))
        return out

    def transaction(self, tx_id: bytes):
        """(tx, block_hash, height, confirmations) for a main-chain transaction, or None."""
        loc = self.store.tx_location(tx_id)
        if loc is None:
            return None
        block_hash, height, position = loc
        block = self.block(block_hash)
        return block.transactions[position], block_hash, height, self._tip.height - height + 1

    def get_coin(self, outpoint: OutPoint):
        return self.store.get_coin(outpoint)

    def coins_of(self, payload: bytes) -> list:
        return self.store.coins_of(payload)

    def orphan_count(self) -> int:
        return len(self._orphans)

    def has_block(self, block_hash: bytes) -> bool:
        return block_hash in self._orphans or self.entry(block_hash) is not None

    def next_target(self, parent: BlockEntry) -> int:
        """The target a child of parent must carry."""
        return expected_target(parent, self._ancestor, self.params)

    def _ancestor(self, e: BlockEntry, height: int) -> BlockEntry:
        if self.store.main_hash(e.height) == e.hash:
            return self.entry(self.store.main_hash(height))
        while e.height > height:
            e = self.entry(e.parent)
        return e

    def earliest_timestamp(self, parent: BlockEntry) -> int:
        """The earliest timestamp a child of parent may carry (median time past, time warp)."""
        return rules.earliest_timestamp(self.parent_info(parent), self.params)

    def parent_info(self, parent: BlockEntry) -> ParentInfo:
        return ParentInfo(parent.hash, parent.height, parent.median_time_past, self.next_target(parent),
                          parent.timestamp)

    # -- writing -------------------------------------------------------------------------

    def _apply(self, update: ChainUpdate) -> None:
        """Write one update; if the store fails, reload memory from it before the error goes on.

        A store fault (disk full) is never a rule broken: it propagates as it is,
        not as Invalid, so no block is marked invalid for it.  Inside a batch the
        store may have lost earlier updates too, hence the reload, not a local undo.
        """
        try:
            self.store.apply(update)
        except BaseException:
            self.reload()
            raise

    def reload(self) -> None:
        """Forget cached entries and read the tip again from the store: memory agrees with disk."""
        self._entries.clear()
        try:
            tip = self.entry(self.store.tip())
        except Exception:
            return  # the store cannot be read either; the caller sees the original error
        if tip is not None:
            self._tip = tip

    @contextmanager
    def batch(self):
        """Group writes in one store transaction when the store can; memory is reloaded if the batch fails."""
        batch = getattr(self.store, "batch", None)
        if batch is None:
            yield self
            return
        try:
            with batch():
                yield self
        except BaseException:
            self.reload()
            raise

    # -- accepting blocks ------------------------------------------------------------

    def precheck(self, block: Block, now: int) -> bool:
        """Whether block is a new child of the tip that meets every rule but those of the coins (proof of work,
        header, shape, merkle root, sizes): the point at which it may be relayed before its transactions are
        checked against the coins (BIP 152; rules.COIN_RULES).  Never raises: a block that fails says False,
        and accept_block then refuses it with its rule.
        """
        block_hash = block.hash
        if block.header.previous_hash != self._tip.hash or self.entry(block_hash) is not None \
                or block_hash in self._orphans:
            return False
        try:
            rules.check_block_sanity(block, self.params)
            rules.check_header_context(block.header, self.parent_info(self._tip), self.params, now)
        except Invalid:
            return False
        self._prechecked = block
        return True

    def accept_block(self, block: Block, now: int, *, requested: bool = False, source: str | None = None):
        """Take a block: Accepted, Duplicate, Orphan or NotStored, or raise the rule it breaks.

        requested says the caller asked for this block because its header chain
        has more work than the tip: such a block is stored whatever its own work.
        source (a peer URL, or None) bounds the orphans each sender can park here.
        """
        block_hash = block.hash
        known = self.entry(block_hash)
        if known is not None:
            if known.status == INVALID:
                raise self._invalid_reasons.get(block_hash) or InvalidAncestor(
                    f"block {block_hash.hex()} is known to be invalid")
            if known.chainwork > self._tip.chainwork:
                # stored, but its connection was lost with writes held in memory (a failed flush)
                result = self.connect_stored()
                if result is not None and self.is_main(block_hash):
                    return Accepted(block_hash, known.height, True, result.connected, result.disconnected)
            return Duplicate(block_hash)
        if block_hash in self._orphans:
            return Orphan(block_hash, self._orphan_root(block.header.previous_hash))
        requested = requested or not self.refuse_low_work
        if not requested and block_hash in self._not_stored:
            return NotStored(block_hash, "its branch has less work than the tip")
        if block is not self._prechecked:  # the very object precheck passed: its shape is checked already
            rules.check_block_sanity(block, self.params)
        self._prechecked = None
        parent = self.entry(block.header.previous_hash)
        if parent is None:
            self._add_orphan(block, source, requested)
            if block_hash not in self._orphans:
                return NotStored(block_hash, f"the orphan pool holds too much from {source or 'this source'}")
            return Orphan(block_hash, self._orphan_root(block.header.previous_hash))
        if parent.hash == self._tip.hash and block_hash not in self._orphans_by_parent:
            return self._extend_tip(block, now)
        if parent.status == INVALID:
            raise InvalidAncestor(f"parent {parent.hash.hex()} is invalid")
        rules.check_header_context(block.header, self.parent_info(parent), self.params, now)
        if not requested and self._branch_work(block, parent) < self._tip.chainwork:
            self._refuse_low_work(block_hash)
            return NotStored(block_hash, "its branch has less work than the tip")
        result = Accepted(block_hash, block.height, False)
        self._store_block(block, parent, now)
        pending = [block_hash]
        while pending:  # orphans waiting for this block can be stored now
            child_of = pending.pop()
            for orphan_hash in sorted(self._orphans_by_parent.pop(child_of, ())):
                orphan = self._pop_orphan(orphan_hash)
                parent_entry = self.entry(child_of)
                if not orphan.requested and self._branch_work(orphan.block, parent_entry) < self._tip.chainwork:
                    self._refuse_low_work(orphan_hash)
                    self._drop_orphan_descendants(orphan_hash)
                    continue
                try:
                    self._store_block(orphan.block, parent_entry, now)
                except Invalid:
                    self._drop_orphan_descendants(orphan_hash)
                    continue
                pending.append(orphan_hash)
        self._activate_best_chain(result)
        entry = self.entry(block_hash)
        if entry.status == INVALID:
            raise self._invalid_reasons.get(block_hash) or InvalidAncestor(
                f"block {block_hash.hex()} descends from an invalid block")
        result.main_chain = self.is_main(block_hash)
        return result

    def _branch_work(self, block: Block, parent: BlockEntry) -> int:
        """The most chainwork of block or of any orphan waiting on it: the work its branch could reach."""
        best = own = parent.chainwork + block_work(block.header.target)
        todo = [(block.hash, own)]
        while todo:
            block_hash, work = todo.pop()
            for child in self._orphans_by_parent.get(block_hash, ()):
                child_work = work + block_work(self._orphans[child].block.header.target)
                best = max(best, child_work)
                todo.append((child, child_work))
        return best

    def _refuse_low_work(self, block_hash: bytes) -> None:
        self._not_stored[block_hash] = None
        while len(self._not_stored) > MAX_NOT_STORED:
            self._not_stored.popitem(last=False)

    def _drop_orphan_descendants(self, block_hash: bytes) -> None:
        todo = [block_hash]
        while todo:
            for child in sorted(self._orphans_by_parent.pop(todo.pop(), ())):
                self._pop_orphan(child)
                todo.append(child)

    def _extend_tip(self, block: Block, now: int) -> Accepted:
        """The common case, a child of the tip: check, connect and store it in one atomic update."""
        rules.check_header_context(block.header, self.parent_info(self._tip), self.params, now)
        entry = self._entry_for(block.header, self._tip, FULLY_VALID)
        try:
            self._connect(block, entry, store_block=True)
        except Invalid as err:
            self._apply(ChainUpdate(entries=[entry.with_status(INVALID)], blocks=[(entry.hash, block.raw)]))
            self._remember(entry.with_status(INVALID))
            self._invalid_reasons[entry.hash] = err
            raise
        return Accepted(block.hash, block.height, True, connected=[block])

    def _store_block(self, block: Block, parent: BlockEntry, now: int) -> BlockEntry:
        if parent.status == INVALID:
            raise InvalidAncestor(f"parent {parent.hash.hex()} is invalid")
        rules.check_header_context(block.header, self.parent_info(parent), self.params, now)
        entry = self._entry_for(block.header, parent, DATA_STORED)
        self._apply(ChainUpdate(entries=[entry], blocks=[(entry.hash, block.raw)]))
        self._remember(entry)
        return entry

    def _entry_for(self, header: Header, parent: BlockEntry | None, status: int) -> BlockEntry:
        return entry_for(header, parent, self.entry, self.params, status)

    # -- orphans ---------------------------------------------------------------------

    def _add_orphan(self, block: Block, source: str | None, requested: bool) -> None:
        """Park block until its parent comes; over a bound, drop the oldest of the source with most bytes."""
        self._orphans[block.hash] = _OrphanBlock(block, source, requested)
        self._orphans_by_parent.setdefault(block.header.previous_hash, set()).add(block.hash)
        self._orphan_bytes += block.size
        self._orphan_bytes_by_source[source] = self._orphan_bytes_by_source.get(source, 0) + block.size
        while self._orphan_bytes_by_source.get(source, 0) > self._max_orphan_bytes_per_source:
            self._pop_orphan(next(h for h, o in self._orphans.items() if o.source == source))
        while len(self._orphans) > MAX_ORPHANS or self._orphan_bytes > self._max_orphan_bytes:
            heaviest = max(self._orphan_bytes_by_source, key=self._orphan_bytes_by_source.get)
            self._pop_orphan(next(h for h, o in self._orphans.items() if o.source == heaviest))

    def orphan_bytes(self, source: str | None = None) -> int:
        """Bytes of the orphan pool, or of the orphans source sent."""
        return self._orphan_bytes if source is None else self._orphan_bytes_by_source.get(source, 0)

    def _pop_orphan(self, block_hash: bytes) -> _OrphanBlock:
        orphan = self._orphans.pop(block_hash)
        block = orphan.block
        self._orphan_bytes -= block.size
        left = self._orphan_bytes_by_source[orphan.source] - block.size
        if left:
            self._orphan_bytes_by_source[orphan.source] = left
        else:
            del self._orphan_bytes_by_source[orphan.source]
        siblings = self._orphans_by_parent.get(block.header.previous_hash)
        if siblings is not None:
            siblings.discard(block_hash)
            if not siblings:
                del self._orphans_by_parent[block.header.previous_hash]
        return orphan

    def _orphan_root(self, parent_hash: bytes) -> bytes:
        """The first missing ancestor: follow orphan parents down to one we do not hold."""
        seen = 0
        while parent_hash in self._orphans and seen <= MAX_ORPHANS:
            parent_hash = self._orphans[parent_hash].block.header.previous_hash
            seen += 1
        return parent_hash

    # -- choosing and switching the active chain -----------------------------------

    def _activate_best_chain(self, result: Accepted) -> None:
        start = self._tip
        while True:
            best = next(iter(self.store.best_entries(1)), None)
            if best is None or best.chainwork <= self._tip.chainwork:
                break
            self._switch_to(best, result)
        if self._tip.hash != start.hash and self._tip.chainwork == start.chainwork:
            # A heavier branch failed part-way and what is left of it only ties the
            # chain we started on: ties keep the first-seen chain (CONTRACT 4).
            self._switch_to(self.entry(start.hash), result)

    def _switch_to(self, target: BlockEntry, result: Accepted) -> None:
        """Make target the tip, or stop at the first block of its branch that breaks a rule (marked invalid)."""
        path = []
        e = target
        while not self.is_main(e.hash):
            path.append(e)
            e = self.entry(e.parent)
        fork = e
        while self._tip.hash != fork.hash:
            block = self._disconnect_tip()
            # result describes the net change: undoing a block this call connected cancels it
            if result.connected:
                undone = result.connected.pop()
                assert undone.hash == block.hash  # connected is a stack on top of the starting chain
            else:
                result.disconnected.append(block)
        for e in reversed(path):
            block = self.block(e.hash)
            try:
                self._connect(block, e)
            except Invalid as err:
                self._mark_invalid(e, err)
                return
            if not result.connected and result.disconnected and result.disconnected[-1].hash == block.hash:
                result.disconnected.pop()
            else:
                result.connected.append(block)

    def _connect(self, block: Block, entry: BlockEntry, store_block: bool = False) -> None:
        get_coins = getattr(self.store, "get_coins", None)
        if get_coins is not None:  # every coin the block spends, in one read (the cache answers most)
            get_coin = get_coins([new_outpoint((txin.prev_tx_id, txin.output_index))
                                  for tx in block.transactions[1:] for txin in tx.inputs]).get
        else:
            get_coin = self.store.get_coin
        verified = self.sig_cache
        if entry.status == FULLY_VALID and not store_block:
            # connected once before (a branch switched back, or a connection lost with the writes held
            # in memory): its signatures verified then, and a signature depends on its transaction alone
            verified = _AllVerified()
        delta = rules.connect_block(block, get_coin, self.params, self.verify, verified)
        height = block.height
        update = ChainUpdate(
            entries=[entry.with_status(FULLY_VALID)] if entry.status != FULLY_VALID or store_block else [],
            blocks=[(block.hash, block.raw)] if store_block else [],
            coins_removed=[op for op, _ in delta.spent],
            coins_added=delta.created,
            undo_put=[(block.hash, delta.spent)],
            main_added=[(height, block.hash)],
            txs_added=[(tx.tx_id, block.hash, height, n) for n, tx in enumerate(block.transactions)],
            history_added=history_rows(block, delta.spent),
            tip=block.hash,
        )
        self._apply(update)
        if update.entries:
            self._remember(update.entries[0])
        self._tip = self.entry(block.hash)

    def _disconnect_tip(self) -> Block:
        tip = self._tip
        block = self.block(tip.hash)
        undo = self.store.get_undo(tip.hash)
        spent_here = {txin.outpoint for tx in block.transactions[1:] for txin in tx.inputs}
        created = [OutPoint(tx.tx_id, i) for tx in block.transactions for i in range(len(tx.outputs))
                   if OutPoint(tx.tx_id, i) not in spent_here]
        update = ChainUpdate(
            coins_removed=created,
            coins_added=list(undo),
            undo_deleted=[tip.hash],
            main_removed=[tip.height],
            txs_removed=[tx.tx_id for tx in block.transactions],
            history_removed=list(_history(block)),
            tip=tip.parent,
        )
        self._apply(update)
        self._tip = self.entry(tip.parent)
        return block

    def _mark_invalid(self, entry: BlockEntry, err: Invalid) -> None:
        self._invalid_reasons[entry.hash] = err
        marked, todo = [], [entry]
        while todo:
            e = todo.pop()
            marked.append(e.with_status(INVALID))
            for child in self.store.children(e.hash):
                child_entry = self.entry(child)
                if child_entry.status != INVALID:
                    self._invalid_reasons.setdefault(child, InvalidAncestor(
                        f"block descends from invalid block {entry.hash.hex()}: {err}"))
                    todo.append(child_entry)
        self._apply(ChainUpdate(entries=marked))
        for e in marked:
            self._remember(e)

    def _write_genesis(self) -> None:
        genesis = self.params.genesis
        entry = self._entry_for(genesis.header, None, FULLY_VALID)
        self._apply(ChainUpdate(
            entries=[entry], blocks=[(entry.hash, genesis.raw)], undo_put=[(entry.hash, [])],
            main_added=[(0, entry.hash)],
            txs_added=[(genesis.transactions[0].tx_id, entry.hash, 0, 0)],
            tip=entry.hash,
        ))


class _AllVerified:
    """A `verified` set holding every tx_id (connect_block then checks no signature)."""

    def __contains__(self, tx_id) -> bool:
        return True


def expected_target(parent: BlockEntry, ancestor, params: NetworkParams) -> int:
    """The target a child of parent must carry; ancestor(entry, height) finds entry's ancestor at height."""
    height = parent.height + 1
    if not params.is_retarget_height(height):
        return params.next_target(height, parent.target, 0, 0)
    first = ancestor(parent, height - params.retarget_interval)
    return params.next_target(height, parent.target, first.timestamp, parent.timestamp)


def entry_for(header: Header, parent: BlockEntry | None, get, params: NetworkParams, status: int) -> BlockEntry:
    """The BlockEntry of header on parent: chainwork and median time past, from the ancestors get(hash) finds."""
    stamps, e = [header.timestamp], parent
    while e is not None and len(stamps) < params.median_time_span:
        stamps.append(e.timestamp)
        e = get(e.parent) if e.height > 0 else None
    stamps.sort()
    chainwork = (parent.chainwork if parent else 0) + block_work(header.target)
    return BlockEntry(header.hash, header.previous_hash, header.height, header.raw, chainwork,
                      status, header.timestamp, header.target, stamps[len(stamps) // 2])


def history_rows(block: Block, spent) -> list:
    """The history index rows of a main-chain block (ChainUpdate.history_added), sorted.

    spent is the [(OutPoint, Coin)] the block spent from earlier blocks (its
    undo data); coins made and spent inside the block are read from the block.
    Per (address, transaction): amount_delta is what the transaction paid the
    address minus the coins it spent that the address signed for.
    """
    # A coin's recipient is the payload of the key that spent it (connect_block checked it), so the
    # spender's address is read from the coin rather than hashed from the key again.
    coins = {op: (coin.amount, coin.recipient) for op, coin in spent}
    rows = []
    height = block.height
    for position, tx in enumerate(block.transactions):
        delta = {}
        tx_id = tx.tx_id
        for out in tx.outputs:
            delta[out.recipient] = delta.get(out.recipient, 0) + out.amount
        if not tx.is_coinbase:
            for txin in tx.inputs:
                amount, p = coins[(txin.prev_tx_id, txin.output_index)]
                delta[p] = delta.get(p, 0) - amount
        for index, out in enumerate(tx.outputs):
            coins[new_outpoint((tx_id, index))] = (out.amount, out.recipient)
        rows.extend((p, tx_id, height, position, d, tx.is_coinbase) for p, d in delta.items())
    rows.sort()
    return rows


def _history(block: Block):
    """(address payload, tx_id) pairs: every address a block's transactions pay or spend from."""
    seen = set()
    for tx in block.transactions:
        for out in tx.outputs:
            seen.add((out.recipient, tx.tx_id))
        if not tx.is_coinbase:
            for txin in tx.inputs:
                seen.add((payload_of(txin.public_key), tx.tx_id))
    return sorted(seen)
