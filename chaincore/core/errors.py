"""The error tree of ChainCore.

Every error raised on purpose derives from ChainCoreError and carries a stable
`code`; the message is for people.  The tree has two branches:

- `Refused`: the caller's input or request is at fault (`Invalid`, `NotFound`,
  `Forbidden`, `TooLarge`).  The API answers a 4xx with the message; a peer
  earns a penalty for `Invalid` data.  One class per consensus rule, so tests
  and logs can name the rule exactly.
- `Fault`: the node itself failed (`Unavailable`, `StoreError`,
  `PeerUnreachable`, `Internal`).  The API answers a 5xx with the class's
  `public` text (the message may name local paths: it goes to the log only),
  and `Retry-After` when `retry_after_s` says waiting helps.
"""


class ChainCoreError(Exception):
    """Base of every error ChainCore raises on purpose; `code` is stable, the message is for people."""

    code = "error"


# -- refusals: the caller's fault ---------------------------------------------------

class Refused(ChainCoreError):
    """The request cannot be served as asked: the caller's fault (a 4xx)."""

    code = "refused"


class Invalid(Refused):
    """The data breaks a rule: the sender's fault."""

    code = "invalid"


class NotFound(Refused):
    code = "not-found"


class Forbidden(Refused):
    code = "forbidden"


class TooLarge(Refused):
    code = "too-large"


class RateLimited(Refused):
    """The client spent its request budget: it may try again after `retry_after_s` (a 429, no penalty)."""

    code = "rate-limited"

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


# -- faults: the node's own ------------------------------------------------------------

class Fault(ChainCoreError):
    """The node failed, not the caller (a 5xx); the message is for the log, `public` for clients."""

    code = "fault"
    public = "internal error"
    shows_message = False  # True only where every message is written to be shown (no paths, no OS text)
    retry_after_s = None   # seconds after which trying again may help, or None


class Unavailable(Fault):
    """The node cannot serve this right now (e.g. still syncing); its message names no local detail."""

    code = "unavailable"
    public = "the node cannot serve this right now; try again shortly"
    shows_message = True
    retry_after_s = 5


class StoreError(Fault):
    """The store cannot be opened or written: a wrong or damaged datadir, a full disk, a closed store."""

    code = "store"
    public = "the node could not read or write its store; try again later"
    retry_after_s = 30


class PeerUnreachable(Fault):
    """A peer gave no usable answer (refused, timed out, cut off, too large): no rule was broken."""

    code = "peer-unreachable"
    public = "a peer could not be reached"


class PeerBusy(PeerUnreachable):
    """A peer answered that it is busy (HTTP 429 or 503): it is there and broke no rule; ask again after
    wait_s (from its Retry-After), or ask another peer meanwhile."""

    code = "peer-busy"
    public = "a peer is busy"

    def __init__(self, message: str, wait_s: float = 1.0):
        super().__init__(message)
        self.wait_s = wait_s


class Internal(Fault):
    """A bug: an invariant of our own did not hold."""

    code = "internal"


# -- malformed data -----------------------------------------------------------

class Malformed(Invalid):
    """The bytes or JSON do not describe a well-formed object."""

    code = "malformed"


class BadAddress(Malformed):
    code = "bad-address"


class BadAmount(Malformed):
    code = "bad-amount"


class BadPeerURL(Malformed):
    """Not a peer base URL the peer table would keep: http(s)://host[:port], nothing else."""

    code = "bad-peer-url"


class PeerNotKept(Invalid):
    """A well-formed peer URL the peer table does not take: this node's own, banned, or no room."""

    code = "peer-not-kept"


# -- transaction rules ----------------------------------------------------------

class TxRuleError(Invalid):
    code = "bad-tx"


class NoInputs(TxRuleError):
    code = "no-inputs"


class NoOutputs(TxRuleError):
    code = "no-outputs"


class DuplicateInput(TxRuleError):
    code = "duplicate-input"


class OutputTooLarge(TxRuleError):
    code = "output-too-large"


class BadCoinbase(TxRuleError):
    code = "bad-coinbase"


class NullPrevout(TxRuleError):
    code = "null-prevout"


class TxTooLarge(TxRuleError):
    code = "tx-too-large"


class BadVersion(TxRuleError):
    code = "bad-version"


class NonFinal(TxRuleError):
    code = "non-final"


class MissingInput(TxRuleError):
    """An input refers to an output that does not exist (or is already spent in the chain)."""

    code = "missing-input"


class DoubleSpend(TxRuleError):
    """Two transactions (in a block, or block and mempool) spend the same output."""

    code = "double-spend"


class ImmatureCoinbase(TxRuleError):
    code = "immature-coinbase"


class BadSignature(TxRuleError):
    code = "bad-signature"


class WrongKey(TxRuleError):
    """The public key does not hash to the address of the output being spent."""

    code = "wrong-key"


class InsufficientFunds(TxRuleError):
    """Outputs are worth more than the inputs."""

    code = "insufficient-funds"


class FeeTooLow(TxRuleError):
    code = "fee-too-low"


class MempoolFull(TxRuleError):
    code = "mempool-full"


class CoinbaseInMempool(TxRuleError):
    code = "coinbase"


class MempoolChainLimit(TxRuleError):
    """The transaction would make a chain of unconfirmed transactions too long or too big (policy, as
    Bitcoin Core's 25 transactions / 101 kB): it may enter once its ancestors are confirmed."""

    code = "mempool-chain-limit"


class TooManyAncestors(MempoolChainLimit):
    code = "too-many-ancestors"


class AncestorsTooLarge(MempoolChainLimit):
    code = "ancestors-too-large"


class TooManyDescendants(MempoolChainLimit):
    code = "too-many-descendants"


class DescendantsTooLarge(MempoolChainLimit):
    code = "descendants-too-large"


# -- block rules ------------------------------------------------------------------

class BlockRuleError(Invalid):
    code = "bad-block"


class BadProofOfWork(BlockRuleError):
    code = "bad-pow"


class BadTarget(BlockRuleError):
    code = "bad-target"


class BadMerkleRoot(BlockRuleError):
    code = "bad-merkle-root"


class BlockTooLarge(BlockRuleError):
    code = "block-too-large"


class NoCoinbase(BlockRuleError):
    code = "no-coinbase"


class ExtraCoinbase(BlockRuleError):
    code = "extra-coinbase"


class BadCoinbaseHeight(BlockRuleError):
    code = "bad-coinbase-height"


class BadCoinbaseValue(BlockRuleError):
    code = "bad-coinbase-value"


class DuplicateTx(BlockRuleError):
    code = "duplicate-tx"


class TimeTooOld(BlockRuleError):
    code = "time-too-old"


class TimeTooNew(BlockRuleError):
    code = "time-too-new"


class BadHeight(BlockRuleError):
    code = "bad-height"


class BadPrevious(BlockRuleError):
    """The block does not link to its claimed parent (wrong parent, or a genesis mismatch)."""

    code = "bad-previous"


class InvalidAncestor(BlockRuleError):
    """The block descends from a block already known to be invalid."""

    code = "invalid-ancestor"


# -- rules added later (kept below so the tree above stays as it is) ---------------

class TimeWarp(BlockRuleError):
    """The first block of a retarget window is timestamped too far before the last block of the previous one."""

    code = "time-warp"


# -- sync misbehaviour: what a peer did wrong while we caught up with it ------------

class SyncMisbehaviour(Invalid):
    """A peer broke the sync protocol (not a consensus rule): a penalty, and catch-up moves on to others."""

    code = "bad-sync"


class UnconnectedHeaders(SyncMisbehaviour):
    """Headers that follow no hash of the locator we sent, or do not link one to the next."""

    code = "unconnected-headers"


class DuplicateHeaders(SyncMisbehaviour):
    """The same header twice in one answer."""

    code = "duplicate-headers"


class RepeatedHeaders(SyncMisbehaviour):
    """An answer holding only headers the peer had sent before, though our locator named them."""

    code = "repeated-headers"


class UnbackedChainwork(SyncMisbehaviour):
    """The peer claimed more chainwork than the headers it sent add up to."""

    code = "unbacked-chainwork"


class StalledDownload(SyncMisbehaviour):
    """Blocks asked of the peer did not come before their deadline."""

    code = "stalled"


class UnexpectedBlock(SyncMisbehaviour):
    """A block that is not one of those we asked the peer for (it does not match the headers)."""

    code = "unexpected-block"
