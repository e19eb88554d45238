"""The consensus rules of CONTRACT 4, in stages named by what they need.

- check_tx_sanity / check_block_sanity: the object alone.
- check_header_sanity: a header alone (version, target range, proof of work).
- check_header_context: the parent (height, link, target, median time, time warp, clock).
- check_tx_inputs / connect_block: the coins being spent.
Each rule raises its own error class from errors.py.  Signatures are checked
last and in one batch, through a `verify_batch` function the caller may
replace (the node hands big batches to worker processes).  SignatureCache
and RecentRejects bound the cost of repeats: an identical check is verified
once, and a refused transaction is not checked again until the tip moves.
"""

import bisect
import hashlib
import mmap
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass

from . import keys, wire
from .block import Block, Header, merkle_root
from .errors import (
    BadAddress,
    BadCoinbase, BadCoinbaseHeight, BadCoinbaseValue, BadHeight, BadMerkleRoot, BadPrevious,
    BadProofOfWork, BadSignature, BadTarget, BadVersion, BlockTooLarge, DoubleSpend, DuplicateInput,
    DuplicateTx, ExtraCoinbase, ImmatureCoinbase, InsufficientFunds, MissingInput, NoCoinbase,
    NoInputs, NonFinal, NoOutputs, NullPrevout, OutputTooLarge, TimeTooNew, TimeTooOld, TimeWarp, TxTooLarge,
    WrongKey, BadAmount, BlockRuleError, Invalid, Malformed,
)
from .params import NetworkParams, describe_amount
from .tx import (MAX_COINBASE_DATA, MIN_COINBASE_DATA, NULL_INDEX, NULL_TXID, Coin, OutPoint, Transaction, TxOut,
                 new_outpoint)

_ADDRESS_VERSION, PUBKEY_SIZE, SIGNATURE_SIZE = keys.ADDRESS_VERSION, keys.PUBKEY_SIZE, keys.SIGNATURE_SIZE

TX_VERSION = 1
BLOCK_VERSION = 1


def check_tx_sanity(tx: Transaction, params: NetworkParams) -> None:
    """Rules a transaction must meet on its own, whatever the chain holds."""
    if tx.version != TX_VERSION:
        raise BadVersion(f"transaction version {tx.version} is not {TX_VERSION}")
    inputs, outputs = tx.inputs, tx.outputs
    if not inputs:
        raise NoInputs("transaction has no inputs")
    if not outputs:
        raise NoOutputs("transaction has no outputs")
    if len(tx.raw) > params.max_block_size:
        raise TxTooLarge(f"transaction of {tx.size} bytes is over the block size limit")
    total, max_money = 0, params.max_money
    for n, out in enumerate(outputs):
        amount = out.amount
        if not isinstance(amount, int) or amount < 0:
            # zero is valid (a coinbase once the reward has halved to nothing); the mempool refuses it
            raise BadAmount(f"output {n} amount must be a non-negative integer")
        if amount > max_money:
            raise OutputTooLarge(f"output {n} amount {describe_amount(amount)} is over the money supply")
        if out.recipient[0] != _ADDRESS_VERSION:
            raise BadAddress(f"output {n} pays an address of unknown version {out.recipient[0]}")
        total += amount
        if total > max_money:
            raise OutputTooLarge("outputs add up to more than the money supply")
    if tx.is_coinbase:
        data = inputs[0].signature
        if not MIN_COINBASE_DATA <= len(data) <= MAX_COINBASE_DATA:
            raise BadCoinbase(f"coinbase data must be {MIN_COINBASE_DATA}-{MAX_COINBASE_DATA} bytes")
        if inputs[0].public_key:
            raise BadCoinbase("coinbase input carries a public key")
        return
    if len(inputs) == 1:  # most transactions: no set needed to find a duplicate
        txin = inputs[0]
        if len(txin.public_key) == PUBKEY_SIZE and len(txin.signature) == SIGNATURE_SIZE \
                and txin.output_index != NULL_INDEX:
            return  # _check_input_sanity passes: the checks it would make, cheaply
        _check_input_sanity(0, txin)
        return
    seen = set()
    for n, txin in enumerate(inputs):
        outpoint = (txin.prev_tx_id, txin.output_index)
        if outpoint in seen:  # (a null outpoint never gets here twice: its first appearance is refused)
            raise DuplicateInput(f"input {n} spends {txin.prev_tx_id.hex()}:{txin.output_index} twice")
        seen.add(outpoint)
        _check_input_sanity(n, txin)


def _check_input_sanity(n: int, txin) -> None:
    if txin.output_index == NULL_INDEX and txin.prev_tx_id == NULL_TXID:
        raise NullPrevout(f"input {n} spends the null outpoint outside a coinbase")
    if len(txin.public_key) != PUBKEY_SIZE:
        raise Malformed(f"input {n} public key must be {PUBKEY_SIZE} bytes")
    if len(txin.signature) != SIGNATURE_SIZE:
        raise BadSignature(f"input {n} signature must be {SIGNATURE_SIZE} bytes")


def is_final(tx: Transaction, height: int) -> bool:
    """A transaction may enter the block at height when its lock_time is 0 or a lower height."""
    return tx.lock_time == 0 or tx.lock_time < height


def check_header_sanity(header: Header, params: NetworkParams) -> None:
    """Rules a header must meet on its own: version, a target within the network limit, proof of work."""
    if header.version != BLOCK_VERSION:
        raise BadVersion(f"block version {header.version} is not {BLOCK_VERSION}")
    if not 0 < header.target <= params.pow_limit:
        raise BadTarget(f"target {header.target:064x} is easier than the network limit")
    if not header.has_valid_pow:
        raise BadProofOfWork(f"hash {header.hash.hex()} is above target {header.target:064x}")


def check_block_sanity(block: Block, params: NetworkParams) -> None:
    """Rules a block must meet on its own: proof of work, shape, merkle root, size, coinbase."""
    header = block.header
    check_header_sanity(header, params)
    if not block.transactions:
        raise NoCoinbase("block has no transactions")
    if block.size > params.max_block_size:
        raise BlockTooLarge(f"block of {block.size} bytes is over {params.max_block_size}")
    coinbase = block.transactions[0]
    if not coinbase.is_coinbase:
        raise NoCoinbase("the first transaction is not a coinbase")
    transactions = block.transactions
    for tx in transactions[1:]:
        # a null input anywhere else makes a coinbase out of place (is_coinbase is one null input alone)
        for txin in tx.inputs:
            if txin.output_index == NULL_INDEX and txin.prev_tx_id == NULL_TXID:
                raise ExtraCoinbase("a block has exactly one coinbase, first")
    if coinbase.coinbase_height != header.height:
        raise BadCoinbaseHeight(f"coinbase commits to height {coinbase.coinbase_height}, block is {header.height}")
    tx_ids = [tx.tx_id for tx in transactions]
    if len(set(tx_ids)) != len(tx_ids):
        raise DuplicateTx("block holds the same transaction twice")
    if merkle_root(tx_ids) != header.merkle_root:
        raise BadMerkleRoot("merkle root does not match the transactions")
    check_tx_sanity(coinbase, params)
    spent = set()
    add, height = spent.add, header.height
    for tx in transactions[1:]:
        check_tx_sanity(tx, params)
        for txin in tx.inputs:
            outpoint = (txin.prev_tx_id, txin.output_index)
            if outpoint in spent:
                raise DoubleSpend(f"{txin.prev_tx_id.hex()}:{txin.output_index} is spent twice in the block")
            add(outpoint)
        if tx.lock_time and tx.lock_time >= height:  # not is_final
            raise NonFinal(f"transaction {tx.tx_id.hex()} is locked until after height {tx.lock_time}")


@dataclass(frozen=True)
class ParentInfo:
    """What the context rules need to know of a block's parent."""

    hash: bytes
    height: int
    median_time_past: int
    expected_target: int  # the target the child must carry
    timestamp: int        # the parent's own timestamp (the time-warp rule)


def check_header_context(header: Header, parent: ParentInfo, params: NetworkParams, now: int) -> None:
    """Rules that need the parent: link, height, target, median time past, time warp, and the clock."""
    if header.previous_hash != parent.hash:
        raise BadPrevious("block does not link to its parent")
    if header.height != parent.height + 1:
        raise BadHeight(f"block height {header.height} is not parent height + 1 ({parent.height + 1})")
    if header.target != parent.expected_target:
        raise BadTarget(f"target {header.target:064x}, expected {parent.expected_target:064x}")
    if header.timestamp <= parent.median_time_past:
        raise TimeTooOld(f"timestamp {header.timestamp} is not above the median of the last "
                         f"{params.median_time_span} blocks ({parent.median_time_past})")
    if params.is_retarget_height(header.height) and header.timestamp < parent.timestamp - params.max_timewarp_s:
        # BIP 94: without it, a miner dates each window's last block ahead and the next window's
        # first back again, and the retarget sees windows far longer than they took.
        raise TimeWarp(f"timestamp {header.timestamp} of the first block of a retarget window is more than "
                       f"{params.max_timewarp_s} s before its parent's ({parent.timestamp})")
    if header.timestamp > now + params.max_future_s:
        raise TimeTooNew(f"timestamp {header.timestamp} is more than {params.max_future_s} s ahead of {now}")


def earliest_timestamp(parent: ParentInfo, params: NetworkParams) -> int:
    """The earliest timestamp check_header_context lets a child of parent carry.

    A block template must use at least this (with the clock): at a window's
    start, a parent dated ahead by up to 2 h would otherwise make a template
    dated by the clock alone break the time-warp rule.
    """
    earliest = parent.median_time_past + 1
    if params.is_retarget_height(parent.height + 1):
        earliest = max(earliest, parent.timestamp - params.max_timewarp_s)
    return earliest


def is_mature(coin: Coin, height: int, params: NetworkParams) -> bool:
    """Whether coin may be spent in the block at height: a coinbase needs coinbase_maturity blocks."""
    return not coin.is_coinbase or height - coin.height >= params.coinbase_maturity


def check_tx_inputs(tx: Transaction, get_coin, height: int, params: NetworkParams) -> int:
    """Check a non-coinbase transaction against the coins it spends; return its fee.

    get_coin(outpoint) returns the unspent Coin or None.  The coins must exist, be
    mature (coinbase_maturity blocks deep at `height`), belong to the keys given,
    and cover the outputs.  Signatures are checked separately (signature_checks).
    """
    total_in = 0
    for n, txin in enumerate(tx.inputs):
        coin = get_coin(txin.outpoint)
        if coin is None:
            raise MissingInput(f"input {n} spends {txin.prev_tx_id.hex()}:{txin.output_index}, "
                               "which is unknown or already spent")
        if not is_mature(coin, height, params):
            raise ImmatureCoinbase(f"input {n} spends a coinbase of height {coin.height}, which matures at "
                                   f"height {coin.height + params.coinbase_maturity}")
        if keys.payload_of(txin.public_key) != coin.recipient:
            raise WrongKey(f"input {n} public key does not own {coin_address(coin)}")
        total_in += coin.amount
    total_out = tx.output_total
    if total_out > total_in:
        raise InsufficientFunds(f"outputs ({describe_amount(total_out)}) are worth more than inputs "
                                f"({describe_amount(total_in)})")
    return total_in - total_out


def coin_address(coin: Coin) -> str:
    return TxOut(coin.amount, coin.recipient).address


def signature_checks(tx: Transaction) -> list:
    """The (public_key, sighash, signature) triples that must all verify for tx."""
    if tx.is_coinbase:
        return []
    sighash = tx.sighash
    return [(i.public_key, sighash, i.signature) for i in tx.inputs]


def verify_batch(checks) -> int:
    """Verify (public_key, sighash, signature) triples; the index of the first bad one, or -1."""
    return keys.verify_batch(checks)


def verify_tx_bytes(raw_txs) -> int:
    """Verify every signature of transactions given as their canonical bytes; the index of the first
    transaction with a bad one (or bytes that do not decode), or -1.

    What a signature worker runs for a block's transactions: the worker decodes
    them and builds their signature hashes itself, so the reactor sends bytes it
    holds already instead of building (key, sighash, signature) checks.
    """
    checks, firsts, undecodable = [], [], -1
    for n, raw in enumerate(raw_txs):
        try:
            tx = Transaction.decode(raw)
        except Invalid:
            undecodable = n
            break
        firsts.append(len(checks))
        checks += signature_checks(tx)
    bad = verify_batch(checks) if checks else -1  # one call for the lot: the backend's per-call cost once
    if bad >= 0:
        return bisect.bisect_right(firsts, bad) - 1
    return undecodable


def verify_groups(groups) -> list:
    """For each group of (public_key, sighash, signature) checks, whether all of them verify.

    What a signature worker runs for a batch of requests; it lives here, beside
    verify_batch, so that a worker process unpickling it imports only the core.
    """
    return [verify_batch(checks) < 0 for checks in groups]


# What the node writes to a signature worker's pipe is one buffer of one of two kinds, told apart by its
# first byte (both ends are the same ChainCore: the node starts its workers from its own install):
# - KIND_GROUPS, a batch of requests' checks: a u32 group count, then per group a u32 check count and per
#   check three u16-length-prefixed fields (public key, sighash, signature).  The answer is a u32 group
#   count and a bitmap, bit i (LSB first) set when group i verified.
# - KIND_TXS, a block's transactions: a u32 count, then per transaction a u32 length and its canonical
#   bytes, checked with verify_tx_bytes.  The answer is verify_tx_bytes's index as a signed 32-bit integer.
KIND_GROUPS = 1
KIND_TXS = 2
_KIND_GROUPS, _KIND_TXS = bytes((KIND_GROUPS,)), bytes((KIND_TXS,))
_COUNT = struct.Struct(">I")
_LENGTHS = struct.Struct(">HHH")
_INDEX = struct.Struct(">i")


def encode_groups(groups) -> bytes:
    """Groups of (public_key, sighash, signature) checks as one buffer for verify_encoded."""
    count, lengths = _COUNT.pack, _LENGTHS.pack
    parts = [_KIND_GROUPS, count(len(groups))]
    append = parts.append
    for checks in groups:
        append(count(len(checks)))
        for public_key, sighash, signature in checks:
            append(lengths(len(public_key), len(sighash), len(signature)))
            append(public_key)
            append(sighash)
            append(signature)
    return b"".join(parts)


def _check_kind(buf: bytes, kind: int, what: str) -> None:
    if not buf:
        raise Malformed(f"{what} is empty")
    if buf[0] != kind:
        raise Malformed(f"{what} is of kind {buf[0]}, not {kind}")


def decode_groups(buf: bytes) -> list:
    """The groups encode_groups wrote; Malformed for a buffer it could not have written."""
    _check_kind(buf, KIND_GROUPS, "signature batch")
    try:
        (n,), pos, groups = _COUNT.unpack_from(buf, 1), 5, []
        for _ in range(n):
            (m,) = _COUNT.unpack_from(buf, pos)
            pos += 4
            checks = []
            for _ in range(m):
                a, b, c = _LENGTHS.unpack_from(buf, pos)
                pos += 6
                if pos + a + b + c > len(buf):
                    raise Malformed(f"signature batch cut short: a check runs {pos + a + b + c - len(buf)} "
                                    f"bytes past its end")
                sighash = buf[pos + a:pos + a + b]
                if checks and sighash == checks[-1][1]:
                    sighash = checks[-1][1]  # one object per transaction, as signature_checks gives it
                checks.append((buf[pos:pos + a], sighash, buf[pos + a + b:pos + a + b + c]))
                pos += a + b + c
            groups.append(checks)
    except struct.error as err:
        raise Malformed(f"signature batch cut short: {err}") from None
    if pos != len(buf):
        raise Malformed(f"signature batch has {len(buf) - pos} bytes past its end")
    return groups


def encode_txs(raw_txs) -> bytes:
    """Transactions' canonical bytes as one buffer for verify_encoded (which runs verify_tx_bytes on them): the
    kind byte, then the bytes as a framed list (wire.frame_list)."""
    return _KIND_TXS + wire.frame_list(raw_txs)


def decode_txs(buf: bytes) -> list:
    """The transactions' bytes encode_txs wrote; Malformed for a buffer it could not have written."""
    _check_kind(buf, KIND_TXS, "transaction batch")
    return wire.read_list(buf[1:], len(buf), len(buf))


def verify_encoded(buf: bytes) -> bytes:
    """What a signature worker answers a buffer with, by its kind: verify_groups over an encode_groups
    buffer (encode_answer), verify_tx_bytes over an encode_txs one (encode_index); Malformed for others."""
    kind = buf[:1]
    if kind == _KIND_TXS:
        return encode_index(verify_tx_bytes(decode_txs(buf)))
    if kind == _KIND_GROUPS:
        return encode_answer(verify_groups(decode_groups(buf)))
    raise Malformed(f"signature worker request of unknown kind {kind.hex() or 'none (empty)'}")


def encode_answer(results) -> bytes:
    """[bool] as a u32 count and a bitmap, bit i (least significant first) set when results[i] is True."""
    bits = sum(1 << i for i, ok in enumerate(results) if ok)
    return _COUNT.pack(len(results)) + bits.to_bytes((len(results) + 7) // 8, "little")


def decode_answer(buf: bytes) -> list:
    """The [bool] encode_answer wrote; Malformed for a buffer of the wrong length or with bits past its count."""
    if len(buf) < 4:
        raise Malformed("signature answer cut short")
    (n,) = _COUNT.unpack_from(buf, 0)
    if len(buf) != 4 + (n + 7) // 8:
        raise Malformed(f"signature answer of {len(buf)} bytes for {n} groups")
    bits = int.from_bytes(buf[4:], "little")
    if bits >> n:
        raise Malformed(f"signature answer has bits set past its {n} groups")
    return [bool(bits >> i & 1) for i in range(n)]


def encode_index(index: int) -> bytes:
    """verify_tx_bytes's answer (the index of the first bad transaction, or -1) as a signed 32-bit integer."""
    return _INDEX.pack(index)


def decode_index(buf: bytes) -> int:
    """The index encode_index wrote; Malformed for a buffer of the wrong length or an index below -1."""
    if len(buf) != _INDEX.size:
        raise Malformed(f"transaction answer of {len(buf)} bytes, not {_INDEX.size}")
    (index,) = _INDEX.unpack(buf)
    if index < -1:
        raise Malformed(f"transaction answer names transaction {index}")
    return index


def check_signatures(tx: Transaction, cache: "SignatureCache | None" = None) -> None:
    """Raise BadSignature unless every input's signature verifies; through cache when one is given."""
    checks = signature_checks(tx)
    bad = verify_batch(checks) if cache is None else verify_cached(checks, cache)
    if bad >= 0:
        raise BadSignature(f"input {bad} signature does not verify")


class SignatureCache:
    """(public_key, sighash, signature) checks that verified, so identical checks cost one verify.

    A table of max_bytes // 32 slots, each holding the 32-byte key of one check
    (a salted SHA-256 of its three length-prefixed fields), and nothing else:
    the byte bound is exact, and no object of a dropped transaction is kept
    alive.  A key may sit in one of two slots its hash picks (Bitcoin Core's
    cuckoo cache, simplified); once both are taken, the new key overwrites one
    of them, so a full cache forgets a few old checks at a time, chosen by a
    hash nobody outside can predict (the salt), never all at once.  The table's
    memory is mapped lazily: an empty cache costs nothing resident.  Only
    successes are kept: a check that failed is not worth remembering here (the
    recently-rejected set covers repeats).
    """

    MAX_BYTES = 8_000_000
    ENTRY_BYTES = 32

    def __init__(self, max_bytes: int = MAX_BYTES, salt: bytes | None = None):
        self.max_entries = max(2, max_bytes // self.ENTRY_BYTES)
        self._salt = os.urandom(16) if salt is None else salt
        self._table = mmap.mmap(-1, self.max_entries * self.ENTRY_BYTES)  # zero pages until written
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def key(self, check) -> bytes:
        public_key, sighash, signature = check
        # the three lengths first, then the fields: no two checks give the same bytes
        return _sha256(b"".join((self._salt, _KEY_LENGTHS(len(public_key), len(sighash), len(signature)),
                                 public_key, sighash, signature))).digest()

    def _slots(self, k: bytes) -> tuple:
        n = self.max_entries
        return (int.from_bytes(k[:8], "little") % n) * 32, (int.from_bytes(k[8:16], "little") % n) * 32

    def _holds(self, k: bytes) -> bool:
        a, b = self._slots(k)
        table = self._table
        return table[a:a + 32] == k or table[b:b + 32] == k

    def __contains__(self, check) -> bool:
        return self._holds(self.key(check))

    def add(self, check) -> None:
        self._insert(self.key(check))

    def _insert(self, k: bytes) -> None:
        a, b = self._slots(k)
        table = self._table
        if table[a:a + 32] == k or table[b:b + 32] == k:
            return
        for slot in (a, b):
            if table[slot:slot + 32] == _EMPTY_SLOT:
                table[slot:slot + 32] = k
                self._count += 1
                return
        slot = a if k[16] & 1 else b  # both taken: one old check is forgotten
        table[slot:slot + 32] = k

    def pending(self, checks) -> list:
        """The distinct checks not verified yet, in order of first appearance: what is left to verify."""
        return self.pending_keyed(checks)[0]

    def pending_keyed(self, checks) -> tuple:
        """(pending(checks), their keys): remember(keys) later records them without hashing them again."""
        seen, out, keys = set(), [], []
        for check in checks:
            k = self.key(check)
            if k in seen:
                continue
            seen.add(k)
            if not self._holds(k):
                out.append(check)
                keys.append(k)
        return out, keys

    def remember(self, keys) -> None:
        """Record checks that verified, by the keys pending_keyed gave for them."""
        for k in keys:
            self._insert(k)

    def record(self, checks, bad: int) -> None:
        """Remember the checks that verify_batch(checks) == bad vouched for: all, or those before bad."""
        for check in checks if bad < 0 else checks[:bad]:
            self.add(check)


_EMPTY_SLOT = bytes(32)  # a SHA-256 of all zeros is not going to turn up
_KEY_LENGTHS = struct.Struct(">III").pack
_sha256 = hashlib.sha256


def verify_cached(checks, cache: SignatureCache, verify=verify_batch) -> int:
    """verify_batch with each distinct check verified at most once while cached; the first bad index, or -1.

    `verify` may be a worker's batch verifier; only the distinct unverified checks reach it.
    """
    checks = list(checks)
    pending = cache.pending(checks)
    bad = verify(pending) if pending else -1
    cache.record(pending, bad)
    if bad < 0:
        return -1
    # Every check before the failing one's first appearance was cached or verified before it.
    return checks.index(pending[bad])


class RecentRejects:
    """Transactions refused since the tip last changed, by tx_id, so a refusal is not paid for twice
    (Bitcoin Core's recentRejects).

    A tx_id is the hash of every byte, signatures included, so a copy with a
    bad signature never shadows the valid transaction it imitates.  Refusals
    that may stop holding without a new tip are not kept: a missing input (its
    parent may arrive next).  The set is cleared whenever the tip changes and
    is bounded (oldest out first).  Entries keep the refusal's class and
    message, so a repeat is refused the same way, cheaply.
    """

    def __init__(self, max_entries: int = 50_000):
        self.max_entries = max_entries
        self._tip = None
        self._refused = OrderedDict()  # tx_id -> (error class, message)

    def __len__(self) -> int:
        return len(self._refused)

    @staticmethod
    def remembers(error: Exception) -> bool:
        """Whether a refusal holds until the tip changes: the sender's fault, and not a missing input."""
        return isinstance(error, Invalid) and not isinstance(error, MissingInput)

    def _at(self, tip: bytes) -> None:
        if tip != self._tip:
            self._refused.clear()
            self._tip = tip

    def add(self, tx_id: bytes, error: Exception, tip: bytes) -> bool:
        """Remember that tx_id was refused with error while tip was the tip; whether it was kept."""
        self._at(tip)
        if not self.remembers(error):
            return False
        self._refused[tx_id] = (type(error), str(error)[:200])
        self._refused.move_to_end(tx_id)
        while len(self._refused) > self.max_entries:
            self._refused.popitem(last=False)
        return True

    def refusal(self, tx_id: bytes, tip: bytes) -> Invalid | None:
        """The error to refuse tx_id with again, if it was refused at this tip; else None."""
        self._at(tip)
        found = self._refused.get(tx_id)
        if found is None:
            return None
        cls, message = found
        return cls(f"{message} (refused recently)")


@dataclass
class BlockDelta:
    """What connecting a block changes: spent coins (the undo data), created coins, and fees."""

    spent: list   # [(OutPoint, Coin)] in spending order
    created: list  # [(OutPoint, Coin)]
    fees: int


# The rules only the coins can check (connect_block's).  A block may be relayed once everything else holds
# (its proof of work, header, shape and merkle root: ChainState.precheck), before its transactions are checked
# against the coins, as BIP 152 relays compact blocks; so a peer that passes on a block that breaks one of these
# is not at fault for it, and is not penalised.
COIN_RULES = (MissingInput, ImmatureCoinbase, WrongKey, InsufficientFunds, BadCoinbaseValue, BadSignature)


def block_fault(err):
    """What a peer that sent a block breaking err is charged with (a code or the error): a rule of the coins
    counts as a broken block rule.  Its own points are a transaction's, and none for a missing input, on which
    two mempools may honestly differ; a block, whose coins are its own branch's, has no such excuse."""
    return BlockRuleError.code if isinstance(err, COIN_RULES) else err


def connect_block(block: Block, get_coin, params: NetworkParams, verify=verify_batch,
                  verified=frozenset()) -> BlockDelta:
    """Apply a sane block to the coins get_coin knows; return the delta, or raise the first broken rule.

    Outputs created earlier in the block may be spent later in it.  The coinbase may
    claim at most the reward plus the fees.  `verify` checks all signatures at once;
    transactions whose tx_id is in `verified` had their signatures checked already
    (a tx_id commits to the signatures and everything they sign).
    """
    height = block.height
    created: dict = {}
    spent = []
    fees = 0
    checks = []
    owners = []  # (index of its first check, tx), to name the transaction of a bad signature

    maturity = params.coinbase_maturity
    payload_of = keys.payload_of
    get_created = created.get

    for tx in block.transactions:
        tx_id = tx.tx_id
        is_coinbase = tx.is_coinbase
        if not is_coinbase:
            # check_tx_inputs, inlined (same rules, same order, same errors): this loop is the hot path of
            # block validation.  Every input is looked up before any is spent, as there.
            coins = []
            total_in = 0
            for n, txin in enumerate(tx.inputs):
                outpoint = new_outpoint((txin.prev_tx_id, txin.output_index))
                coin = get_created(outpoint)
                if coin is None:
                    coin = get_coin(outpoint)
                    if coin is None:
                        raise MissingInput(f"input {n} spends {txin.prev_tx_id.hex()}:{txin.output_index}, "
                                           "which is unknown or already spent")
                    coins.append((outpoint, coin))
                else:
                    coins.append((outpoint, None))
                if coin.is_coinbase and height - coin.height < maturity:
                    raise ImmatureCoinbase(f"input {n} spends a coinbase of height {coin.height}, which matures "
                                           f"at height {coin.height + maturity}")
                if payload_of(txin.public_key) != coin.recipient:
                    raise WrongKey(f"input {n} public key does not own {coin_address(coin)}")
                total_in += coin.amount
            total_out = 0
            for out in tx.outputs:
                total_out += out.amount
            if total_out > total_in:
                raise InsufficientFunds(f"outputs ({describe_amount(total_out)}) are worth more than inputs "
                                        f"({describe_amount(total_in)})")
            fees += total_in - total_out
            for outpoint, chain_coin in coins:
                if created.pop(outpoint, None) is None:
                    spent.append((outpoint, chain_coin))
            if tx_id not in verified:
                owners.append((len(checks), tx))
                sighash = tx.sighash
                checks += [(i.public_key, sighash, i.signature) for i in tx.inputs]
        for index, out in enumerate(tx.outputs):
            created[new_outpoint((tx_id, index))] = Coin(out.amount, out.recipient, height, is_coinbase)
    allowed = params.block_reward(height) + fees
    if block.transactions[0].output_total > allowed:
        raise BadCoinbaseValue(f"coinbase pays {describe_amount(block.transactions[0].output_total)}, "
                               f"more than reward + fees ({describe_amount(allowed)})")
    bad = verify(checks) if checks else -1
    if bad >= 0:
        first, tx = owners[bisect.bisect_right(owners, bad, key=lambda owner: owner[0]) - 1]
        raise BadSignature(f"input {bad - first} of transaction {tx.tx_id.hex()} has a bad signature")
    return BlockDelta(spent, list(created.items()), fees)
