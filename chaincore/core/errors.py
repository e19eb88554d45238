"""The error tree of ChainCore.

Every error raised on purpose derives from ChainCoreError and carries a stable
`code`; the message is for people.  `Invalid` means the data broke a rule (the
sender's fault): the API answers it with a 4xx and peers earn a penalty for it.
One class per consensus rule, so tests and logs can name the rule exactly.
"""


class ChainCoreError(Exception):
    """Base of every error ChainCore raises on purpose; `code` is stable, the message is for people."""

    code = "error"


class Invalid(ChainCoreError):
    """The data breaks a rule: the sender's fault."""

    code = "invalid"


class NotFound(ChainCoreError):
    code = "not-found"


class Forbidden(ChainCoreError):
    code = "forbidden"


class TooLarge(ChainCoreError):
    code = "too-large"


class Unavailable(ChainCoreError):
    """The node cannot serve this right now (e.g. still syncing); not the sender's fault."""

    code = "unavailable"


# -- malformed data -----------------------------------------------------------

class Malformed(Invalid):
    """The bytes or JSON do not describe a well-formed object."""

    code = "malformed"


class BadAddress(Malformed):
    code = "bad-address"


class BadAmount(Malformed):
    code = "bad-amount"


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


# -- peers ------------------------------------------------------------------------

class PeerUnreachable(ChainCoreError):
    """A peer gave no usable answer (refused, timed out, cut off, too large): no rule was broken."""

    code = "peer-unreachable"
