"""The mempool: valid unconfirmed transactions waiting for a block.

A transaction enters only if it is valid against the UTXO set plus the
mempool (chains of unconfirmed transactions are allowed, within Bitcoin
Core's ancestor and descendant limits of 25 transactions and 101 kB), spends
nothing another mempool transaction spends (no replacement), and pays at
least the minimum fee rate.  The pool has a byte bound: past it, the lowest
fee-rate transactions leave first, with their descendants.  Blocks remove
what they confirm or conflict with; a reorganisation puts back what is still
valid.

Shape: the chain limits bound every ancestor or descendant walk, so a
transaction's ancestors are walked rather than stored; eviction pops a heap
keyed by fee rate (stale items skipped, the heap rebuilt when they
outnumber the live ones); templates are chosen by ancestor fee rate as in
Bitcoin Core, with a heap of packages updated as their ancestors are chosen.
"""

import heapq
from dataclasses import dataclass

from . import rules
from .errors import (
    AncestorsTooLarge, BadAmount, CoinbaseInMempool, DescendantsTooLarge, DoubleSpend, FeeTooLow, Invalid,
    MempoolFull, NonFinal, TooManyAncestors, TooManyDescendants,
)
from .params import NetworkParams, describe_amount
from .tx import Coin, OutPoint, Transaction

DEFAULT_MAX_BYTES = 5_000_000
MAX_ANCESTORS = 25               # Bitcoin Core's -limitancestorcount, the transaction included
MAX_ANCESTOR_BYTES = 101_000     # -limitancestorsize (101 kvB)
MAX_DESCENDANTS = 25             # -limitdescendantcount
MAX_DESCENDANT_BYTES = 101_000   # -limitdescendantsize


def rate_key(fee: int, size: int) -> int:
    """An integer that orders fee rates exactly: sizes stay far below 2**32, so two different
    rates differ by more than 2**-64 and their scaled floors never tie."""
    return (fee << 64) // size


@dataclass(frozen=True)
class MempoolEntry:
    tx: Transaction
    fee: int
    size: int
    sequence: int  # arrival order: a parent always arrives before its children

    @property
    def fee_rate(self) -> float:
        return self.fee / self.size


@dataclass(frozen=True)
class TxAccepted:
    tx_id: bytes
    status: str  # "accepted" or "duplicate"
    evicted: tuple = ()


@dataclass(frozen=True)
class ChainLimits:
    """How long and how big a chain of unconfirmed transactions may grow (counts include the tx itself)."""

    ancestors: int = MAX_ANCESTORS
    ancestor_bytes: int = MAX_ANCESTOR_BYTES
    descendants: int = MAX_DESCENDANTS
    descendant_bytes: int = MAX_DESCENDANT_BYTES


class Mempool:
    """Unconfirmed transactions, their conflicts and dependencies, ordered by fee rate for mining."""

    def __init__(self, params: NetworkParams, max_bytes: int = DEFAULT_MAX_BYTES, min_fee_rate: int | None = None,
                 sig_cache: set | None = None, limits: ChainLimits = ChainLimits(),
                 check_cache: rules.SignatureCache | None = None):
        self.params = params
        self.max_bytes = max_bytes
        self.min_fee_rate = params.min_fee_rate if min_fee_rate is None else min_fee_rate
        self.sig_cache = sig_cache if sig_cache is not None else set()
        self.limits = limits
        self.check_cache = check_cache  # verified (key, signature, sighash) checks, shared with the chain
        self._entries = {}    # tx_id -> MempoolEntry
        self._spends = {}     # OutPoint -> tx_id of the mempool tx spending it
        self._parents = {}    # tx_id -> set of in-pool tx_ids it spends from
        self._children = {}   # tx_id -> set of in-pool tx_ids spending from it
        self._descendants = {}  # tx_id -> [count, bytes] of it and its in-pool descendants
        self._by_rate = []    # eviction heap of (rate_key, -sequence, tx_id); stale items skipped
        self._bytes = 0
        self._sequence = 0
        self.removals = 0     # counts every removal: a check made before an unchanged count still holds
        self.steps = 0        # elementary steps (walk visits, heap operations): a measure of work for tests

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._entries

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def get(self, tx_id: bytes) -> Transaction | None:
        e = self._entries.get(tx_id)
        return e.tx if e else None

    def entry(self, tx_id: bytes) -> MempoolEntry | None:
        return self._entries.get(tx_id)

    def transactions(self) -> list:
        """Every transaction, in arrival order (parents before children)."""
        return [e.tx for e in sorted(self._entries.values(), key=lambda e: e.sequence)]

    def spender(self, outpoint: OutPoint) -> bytes | None:
        return self._spends.get(outpoint)

    def coin(self, outpoint: OutPoint, height: int) -> Coin | None:
        """An output of a mempool transaction, as a coin at height, unless a mempool tx spends it."""
        e = self._entries.get(outpoint.tx_id)
        if e is None or outpoint.index >= len(e.tx.outputs) or outpoint in self._spends:
            return None
        out = e.tx.outputs[outpoint.index]
        return Coin(out.amount, out.recipient, height, False)

    def ancestors(self, tx_id: bytes) -> set:
        """The in-pool ancestors of a pool transaction, itself excluded."""
        return self._walk(self._parents.get(tx_id, ()), self._parents)

    def descendants(self, tx_id: bytes) -> set:
        """The in-pool descendants of a pool transaction, itself excluded."""
        return self._walk(self._children.get(tx_id, ()), self._children)

    def descendant_totals(self, tx_id: bytes) -> tuple:
        """(count, bytes) of a pool transaction and its in-pool descendants: what the descendant limits measure."""
        count, nbytes = self._descendants[tx_id]
        return count, nbytes

    def _walk(self, start, links, stop: int | None = None) -> set:
        """Everything reachable from start through links; stops early once past `stop` transactions."""
        seen, todo = set(start), list(start)
        while todo:
            self.steps += 1
            if stop is not None and len(seen) > stop:
                break
            for nxt in links[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    # -- entering ------------------------------------------------------------------

    def check(self, tx: Transaction, get_coin, next_height: int) -> int:
        """Every rule for entering the pool except the signatures (the costly part); the fee.

        Callers may verify the signatures elsewhere (worker processes) once this passed.
        """
        if tx.is_coinbase:
            raise CoinbaseInMempool("a coinbase is only valid in a block")
        rules.check_tx_sanity(tx, self.params)
        for n, out in enumerate(tx.outputs):
            if out.amount == 0:
                raise BadAmount(f"output {n} pays nothing: zero-value outputs are not relayed")
        if not rules.is_final(tx, next_height):
            raise NonFinal(f"transaction is locked until after height {tx.lock_time}")
        self._check_conflicts(tx)

        def lookup(outpoint):
            coin = get_coin(outpoint)
            return coin if coin is not None else self.coin(outpoint, next_height)

        fee = rules.check_tx_inputs(tx, lookup, next_height, self.params)
        if fee < self.min_fee_rate * tx.size:
            raise FeeTooLow(f"fee {describe_amount(fee)} is below the minimum of "
                            f"{describe_amount(self.min_fee_rate * tx.size)} "
                            f"({self.min_fee_rate} unit per byte for {tx.size} bytes)")
        self._check_limits(tx)
        return fee

    def _check_conflicts(self, tx: Transaction) -> None:
        for n, txin in enumerate(tx.inputs):
            other = self._spends.get(txin.outpoint)
            if other is not None:
                raise DoubleSpend(f"input {n} spends {txin.prev_tx_id.hex()}:{txin.output_index}, already spent "
                                  f"by mempool transaction {other.hex()}")

    def _in_pool_parents(self, tx: Transaction) -> set:
        return {txin.prev_tx_id for txin in tx.inputs if txin.prev_tx_id in self._entries}

    def _check_limits(self, tx: Transaction) -> None:
        """Refuse tx if it would have too many or too big ancestors, or give one of them too many or
        too big descendants.  The walk stops past the limit, so a long chain costs no more than a short one."""
        limits, size = self.limits, tx.size
        ancestors = self._walk(self._in_pool_parents(tx), self._parents, stop=limits.ancestors - 1)
        if len(ancestors) + 1 > limits.ancestors:
            raise TooManyAncestors(f"transaction would have more than {limits.ancestors - 1} unconfirmed "
                                   f"ancestors")
        ancestor_bytes = size + sum(self._entries[a].size for a in ancestors)
        if ancestor_bytes > limits.ancestor_bytes:
            raise AncestorsTooLarge(f"transaction and its unconfirmed ancestors would take {ancestor_bytes} "
                                    f"bytes, over {limits.ancestor_bytes}")
        for a in ancestors:
            count, nbytes = self._descendants[a]
            if count + 1 > limits.descendants:
                raise TooManyDescendants(f"unconfirmed ancestor {a.hex()} already has {count - 1} descendants, "
                                         f"the most allowed is {limits.descendants - 1}")
            if nbytes + size > limits.descendant_bytes:
                raise DescendantsTooLarge(f"unconfirmed ancestor {a.hex()} and its descendants would take "
                                          f"{nbytes + size} bytes, over {limits.descendant_bytes}")

    def accept(self, tx: Transaction, get_coin, next_height: int, checked_fee: int | None = None) -> TxAccepted:
        """Add tx if valid against get_coin (the chain's UTXOs) plus the pool; raise the rule it breaks.

        checked_fee is the fee `check` found while neither the chain nor the pool lost
        anything since (same tip, same `removals`): only new conflicts, or chains grown
        past their limits by newcomers, can have appeared.
        """
        tx_id = tx.tx_id
        if tx_id in self._entries:
            return TxAccepted(tx_id, "duplicate")
        if checked_fee is None:
            fee = self.check(tx, get_coin, next_height)
        else:
            fee = checked_fee
            self._check_conflicts(tx)
            self._check_limits(tx)
        if self._bytes + tx.size > self.max_bytes and self._by_rate:
            self._refuse_if_cheapest(tx, fee)
        if tx_id not in self.sig_cache:
            rules.check_signatures(tx, self.check_cache)
            self.sig_cache.add(tx_id)
        self._add(tx, fee)
        evicted = self._trim()
        if tx_id not in self._entries:
            # The newcomer would not stay: put back what left to make room for it, so a
            # refused transaction changes nothing (else it could flush the pool for free).
            for e in sorted(evicted, key=lambda e: e.sequence):  # parents before children
                if e.tx.tx_id != tx_id:
                    self._insert(e)
            raise MempoolFull(f"mempool full: fee rate {fee / tx.size:.2f} per byte is too low to enter")
        return TxAccepted(tx_id, "accepted", tuple(e.tx.tx_id for e in evicted))

    def _refuse_if_cheapest(self, tx: Transaction, fee: int) -> None:
        """In a full pool, a newcomer at or below the lowest fee rate would be the first to leave:
        refuse it before its signatures cost anything."""
        worst = self._peek_worst()
        if worst is not None and rate_key(fee, tx.size) <= rate_key(worst.fee, worst.size):
            raise MempoolFull(f"mempool full: fee rate {fee / tx.size:.2f} per byte is too low to enter")

    def _add(self, tx: Transaction, fee: int) -> None:
        self._sequence += 1
        self._insert(MempoolEntry(tx, fee, tx.size, self._sequence))

    def _insert(self, e: MempoolEntry) -> None:
        """Link an entry whose in-pool parents are present and which has no in-pool children yet."""
        tx_id = e.tx.tx_id
        self._entries[tx_id] = e
        for txin in e.tx.inputs:
            self._spends[txin.outpoint] = tx_id
        parents = self._in_pool_parents(e.tx)
        self._parents[tx_id] = parents
        self._children[tx_id] = set()
        for p in parents:
            self._children[p].add(tx_id)
        self._descendants[tx_id] = [1, e.size]
        for a in self._walk(parents, self._parents):
            counts = self._descendants[a]
            counts[0] += 1
            counts[1] += e.size
        self._bytes += e.size
        self.steps += 1
        heapq.heappush(self._by_rate, (rate_key(e.fee, e.size), -e.sequence, tx_id))

    def _peek_worst(self) -> MempoolEntry | None:
        """The entry evicted first (lowest fee rate, newest among equals), dropping stale heap items."""
        heap = self._by_rate
        while heap:
            _, neg_sequence, tx_id = heap[0]
            e = self._entries.get(tx_id)
            if e is not None and e.sequence == -neg_sequence:
                return e
            self.steps += 1
            heapq.heappop(heap)
        return None

    def _trim(self) -> list:
        """Evict the lowest fee rates (with descendants) until the pool fits; the evicted entries."""
        evicted = []
        while self._bytes > self.max_bytes:
            worst = self._peek_worst()
            if worst is None:
                break
            evicted += self._remove(worst.tx.tx_id, with_descendants=True)
        return evicted

    # -- leaving ---------------------------------------------------------------------

    def remove(self, tx_id: bytes, with_descendants: bool = True) -> list:
        """Remove a transaction (and what spends its outputs); the removed tx_ids."""
        return [e.tx.tx_id for e in self._remove(tx_id, with_descendants)]

    def _remove(self, tx_id: bytes, with_descendants: bool) -> list:
        return self._remove_all([tx_id], with_descendants)

    def _remove_all(self, tx_ids, with_descendants: bool) -> list:
        """Remove tx_ids (those in the pool; with their descendants if asked) in one pass: the entries
        removed, in arrival order."""
        self.removals += 1
        doomed = {t for t in tx_ids if t in self._entries}
        if not doomed:
            return []
        if with_descendants:
            for t in list(doomed):
                doomed |= self._walk(self._children[t], self._children)
        removed = []
        for t in doomed:
            e = self._entries[t]
            for a in self._walk(self._parents[t], self._parents) - doomed:
                counts = self._descendants[a]
                counts[0] -= 1
                counts[1] -= e.size
        for t in doomed:
            e = self._entries.pop(t)
            removed.append(e)
            self._bytes -= e.size
            for txin in e.tx.inputs:
                if self._spends.get(txin.outpoint) == t:
                    del self._spends[txin.outpoint]
            for p in self._parents.pop(t):
                if p not in doomed:
                    self._children[p].discard(t)
            for c in self._children.pop(t):
                if c not in doomed:
                    self._parents[c].discard(t)
            del self._descendants[t]
        if len(self._by_rate) > 2 * len(self._entries) + 64:
            self._by_rate = [item for item in self._by_rate if item[2] in self._entries
                             and self._entries[item[2]].sequence == -item[1]]
            self.steps += len(self._by_rate)
            heapq.heapify(self._by_rate)
        removed.sort(key=lambda e: e.sequence)
        return removed

    def remove_for_block(self, block) -> list:
        """Drop what a newly connected block confirms, and whatever conflicts with it; the removed tx_ids.
        The confirmed ones go in one pass (their parents in the pool are confirmed with them)."""
        removed = [e.tx.tx_id for e in self._remove_all([tx.tx_id for tx in block.transactions], False)]
        for tx in block.transactions[1:]:
            for txin in tx.inputs:
                other = self._spends.get(txin.outpoint)
                if other is not None:
                    removed += self.remove(other, with_descendants=True)
        return removed

    def reorganise(self, disconnected, connected, get_coin, next_height: int) -> list:
        """After a chain switch: re-admit what is still valid, oldest first; the tx_ids that were dropped.

        disconnected are the blocks taken off (tip first), connected those put on.
        The pool is rebuilt from the disconnected blocks' transactions followed by
        the pool's own, so nothing invalid on the new chain stays.
        """
        candidates = [tx for block in reversed(disconnected) for tx in block.transactions[1:]]
        candidates += self.transactions()
        confirmed = {tx.tx_id for block in connected for tx in block.transactions}
        before = set(self._entries)
        self.removals += 1
        for table in (self._entries, self._spends, self._parents, self._children, self._descendants):
            table.clear()
        self._by_rate = []
        self._bytes = 0
        for tx in candidates:
            if tx.tx_id in confirmed:
                continue
            try:
                self.accept(tx, get_coin, next_height)
            except Invalid:
                continue
        return sorted(before - set(self._entries))

    # -- mining and queries -------------------------------------------------------------

    def select(self, max_bytes: int) -> list:
        """Transactions for a block within max_bytes, by ancestor fee rate, parents before children."""
        return [tx for package in self.packages(max_bytes) for tx in package]

    def packages(self, max_bytes: int) -> list:
        """A block's transactions as the packages chosen in turn (Bitcoin Core's ancestor-feerate mining).

        Each step takes the transaction whose not yet chosen ancestors, with it, pay the
        highest fee rate and fit in what is left, and chooses them together (in arrival
        order, so parents first); its descendants' package rates are then updated.
        """
        package = {}     # tx_id -> [fee, bytes] of itself and its not yet chosen ancestors
        heap = []
        for t, e in self._entries.items():
            fee, nbytes = e.fee, e.size
            if self._parents[t]:
                for a in self.ancestors(t):
                    fee += self._entries[a].fee
                    nbytes += self._entries[a].size
            package[t] = [fee, nbytes]
            heap.append((-rate_key(fee, nbytes), e.sequence, t))
        heapq.heapify(heap)
        smallest = min((e.size for e in self._entries.values()), default=0)
        chosen, packages, used = set(), [], 0
        while heap and max_bytes - used >= smallest:
            neg_key, _, t = heapq.heappop(heap)
            self.steps += 1
            if t in chosen or -neg_key != rate_key(*package[t]):
                continue  # chosen already, or an item from before its package shrank
            fee, nbytes = package[t]
            if used + nbytes > max_bytes:
                continue  # pushed again if its package shrinks
            members = sorted((self._entries[a] for a in self.ancestors(t) | {t} if a not in chosen),
                             key=lambda e: e.sequence)
            chosen.update(e.tx.tx_id for e in members)
            used += nbytes
            packages.append(tuple(e.tx for e in members))
            touched = set()
            for e in members:
                for d in self.descendants(e.tx.tx_id):
                    if d not in chosen:
                        package[d][0] -= e.fee
                        package[d][1] -= e.size
                        touched.add(d)
            for d in touched:
                self.steps += 1
                heapq.heappush(heap, (-rate_key(*package[d]), self._entries[d].sequence, d))
        return packages

    def fees_of(self, txs) -> int:
        return sum(self._entries[tx.tx_id].fee for tx in txs)

    def unconfirmed_delta(self, payload: bytes, get_coin) -> int:
        """How much the pool adds to (or, negative, takes from) what payload owns."""
        delta = 0
        for e in self._entries.values():
            delta += sum(o.amount for o in e.tx.outputs if o.recipient == payload)
            for txin in e.tx.inputs:
                coin = get_coin(txin.outpoint) or self._output(txin.outpoint)
                if coin is not None and coin.recipient == payload:
                    delta -= coin.amount
        return delta

    def _output(self, outpoint: OutPoint):
        e = self._entries.get(outpoint.tx_id)
        if e is None or outpoint.index >= len(e.tx.outputs):
            return None
        return e.tx.outputs[outpoint.index]
