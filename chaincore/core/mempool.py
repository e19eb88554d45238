"""The mempool: valid unconfirmed transactions waiting for a block.

A transaction enters only if it is valid against the UTXO set plus the
mempool (chains of unconfirmed transactions are allowed), spends nothing
another mempool transaction spends (no replacement), and pays at least the
minimum fee rate.  The pool has a byte bound: past it, the lowest fee-rate
transactions leave first, with their descendants.  Blocks remove what they
confirm or conflict with; a reorganisation puts back what is still valid.
"""

from dataclasses import dataclass

from . import rules
from .errors import BadAmount, CoinbaseInMempool, DoubleSpend, FeeTooLow, Invalid, MempoolFull, NonFinal
from .params import NetworkParams, describe_amount
from .tx import Coin, OutPoint, Transaction

DEFAULT_MAX_BYTES = 5_000_000


@dataclass(frozen=True)
class MempoolEntry:
    tx: Transaction
    fee: int
    size: int
    sequence: int  # arrival order

    @property
    def fee_rate(self) -> float:
        return self.fee / self.size


@dataclass(frozen=True)
class TxAccepted:
    tx_id: bytes
    status: str  # "accepted" or "duplicate"
    evicted: tuple = ()


class Mempool:
    """Unconfirmed transactions, their conflicts and dependencies, ordered by fee rate for mining."""

    def __init__(self, params: NetworkParams, max_bytes: int = DEFAULT_MAX_BYTES, min_fee_rate: int | None = None,
                 sig_cache: set | None = None):
        self.params = params
        self.max_bytes = max_bytes
        self.min_fee_rate = params.min_fee_rate if min_fee_rate is None else min_fee_rate
        self.sig_cache = sig_cache if sig_cache is not None else set()
        self._entries = {}   # tx_id -> MempoolEntry
        self._spends = {}    # OutPoint -> tx_id of the mempool tx spending it
        self._bytes = 0
        self._sequence = 0
        self.removals = 0    # counts every removal: a check made before an unchanged count still holds

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
        return fee

    def _check_conflicts(self, tx: Transaction) -> None:
        for n, txin in enumerate(tx.inputs):
            other = self._spends.get(txin.outpoint)
            if other is not None:
                raise DoubleSpend(f"input {n} spends {txin.prev_tx_id.hex()}:{txin.output_index}, already spent "
                                  f"by mempool transaction {other.hex()}")

    def accept(self, tx: Transaction, get_coin, next_height: int, checked_fee: int | None = None) -> TxAccepted:
        """Add tx if valid against get_coin (the chain's UTXOs) plus the pool; raise the rule it breaks.

        checked_fee is the fee `check` found while neither the chain nor the pool lost
        anything since (same tip, same `removals`): only new conflicts can have appeared.
        """
        tx_id = tx.tx_id
        if tx_id in self._entries:
            return TxAccepted(tx_id, "duplicate")
        if checked_fee is None:
            fee = self.check(tx, get_coin, next_height)
        else:
            fee = checked_fee
            self._check_conflicts(tx)
        if tx_id not in self.sig_cache:
            rules.check_signatures(tx)
            self.sig_cache.add(tx_id)
        self._add(tx, fee)
        evicted = self._trim()
        if tx_id not in self._entries:
            # The newcomer would not stay: put back what left to make room for it, so a
            # refused transaction changes nothing (else it could flush the pool for free).
            for e in evicted:
                if e.tx.tx_id != tx_id:
                    self._insert(e)
            raise MempoolFull(f"mempool full: fee rate {fee / tx.size:.2f} per byte is too low to enter")
        return TxAccepted(tx_id, "accepted", tuple(e.tx.tx_id for e in evicted))

    def _add(self, tx: Transaction, fee: int) -> None:
        self._sequence += 1
        self._insert(MempoolEntry(tx, fee, tx.size, self._sequence))

    def _insert(self, e: MempoolEntry) -> None:
        self._entries[e.tx.tx_id] = e
        for txin in e.tx.inputs:
            self._spends[txin.outpoint] = e.tx.tx_id
        self._bytes += e.size

    def _trim(self) -> list:
        """Evict the lowest fee rates (with descendants) until the pool fits; the evicted entries."""
        evicted = []
        while self._bytes > self.max_bytes and self._entries:
            worst = min(self._entries.values(), key=lambda e: (e.fee_rate, -e.sequence))
            evicted += self._remove(worst.tx.tx_id, with_descendants=True)
        return evicted

    # -- leaving ---------------------------------------------------------------------

    def remove(self, tx_id: bytes, with_descendants: bool = True) -> list:
        """Remove a transaction (and what spends its outputs); the removed tx_ids."""
        return [e.tx.tx_id for e in self._remove(tx_id, with_descendants)]

    def _remove(self, tx_id: bytes, with_descendants: bool) -> list:
        self.removals += 1
        removed, todo = [], [tx_id]
        while todo:
            e = self._entries.pop(todo.pop(), None)
            if e is None:
                continue
            removed.append(e)
            self._bytes -= e.size
            for txin in e.tx.inputs:
                if self._spends.get(txin.outpoint) == e.tx.tx_id:
                    del self._spends[txin.outpoint]
            if with_descendants:
                for index in range(len(e.tx.outputs)):
                    child = self._spends.get(OutPoint(e.tx.tx_id, index))
                    if child is not None:
                        todo.append(child)
        return removed

    def remove_for_block(self, block) -> list:
        """Drop what a newly connected block confirms, and whatever conflicts with it; the removed tx_ids."""
        removed = []
        for tx in block.transactions:
            if tx.tx_id in self._entries:
                removed += self.remove(tx.tx_id, with_descendants=False)
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
        self._entries.clear()
        self._spends.clear()
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
        """Transactions for a block, highest fee rate first, parents before children, within max_bytes."""
        chosen, chosen_ids, used = [], set(), 0
        waiting = sorted(self._entries.values(), key=lambda e: (-e.fee_rate, e.sequence))
        progress = True
        while progress:
            progress = False
            rest = []
            for e in waiting:
                parents = {txin.prev_tx_id for txin in e.tx.inputs if txin.prev_tx_id in self._entries}
                if not parents <= chosen_ids:
                    rest.append(e)
                    continue
                if used + e.size > max_bytes:
                    continue
                chosen.append(e)
                chosen_ids.add(e.tx.tx_id)
                used += e.size
                progress = True
            waiting = rest
        return [e.tx for e in chosen]

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
