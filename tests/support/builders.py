"""Builders of valid objects for tests: keys, signed transactions, mined regtest blocks and chains."""

from chaincore.core.block import Block, Header, merkle_root
from chaincore.core.keys import PrivateKey, payload_of
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint, Transaction, TxIn, TxOut, make_coinbase

KEYS = [PrivateKey.from_secret(1000 + i) for i in range(16)]
ALICE, BOB, CAROL = KEYS[0], KEYS[1], KEYS[2]
SPACING_S = 60


def payload(key) -> bytes:
    return payload_of(key.public_key)


def solve(header: Header) -> Header:
    """The header with the first nonce that meets its target."""
    nonce = 0
    while True:
        h = header.with_nonce(nonce)
        if h.has_valid_pow:
            return h
        nonce += 1


def make_block(parent, txs=(), *, params=REGTEST, pay_to=ALICE, reward=None, timestamp=None,
               extra=b"", target=None, fees=0, height=None, mine=True) -> Block:
    """A valid child of `parent` (a Block or Header) holding txs, its coinbase paying reward + fees to pay_to."""
    parent_header = parent.header if isinstance(parent, Block) else parent
    height = parent_header.height + 1 if height is None else height
    if reward is None:
        reward = params.block_reward(height) + fees
    coinbase = make_coinbase(height, [(payload(pay_to), reward)], extra)
    all_txs = (coinbase,) + tuple(txs)
    header = Header(1, height, parent_header.hash, merkle_root([t.tx_id for t in all_txs]),
                    timestamp if timestamp is not None else parent_header.timestamp + SPACING_S,
                    target if target is not None else params.pow_limit, 0)
    return Block(solve(header) if mine else header, all_txs)


def regtest_chain(n: int, *, pay_to=ALICE, start=None, extra=b"") -> list:
    """n blocks on top of start (default the regtest genesis); returns [start, b1, ..., bn]."""
    blocks = [start or REGTEST.genesis]
    for _ in range(n):
        blocks.append(make_block(blocks[-1], pay_to=pay_to, extra=extra))
    return blocks


def signed_tx(spends, outputs, *, lock_time=0, version=1) -> Transaction:
    """A transaction spending [(OutPoint, key)] to [(key_or_payload, amount)], signed by each key."""
    inputs = tuple(TxIn(op.tx_id, op.index, key.public_key, b"") for op, key in spends)
    outs = tuple(TxOut(amount, to if isinstance(to, bytes) else payload(to)) for to, amount in outputs)
    tx = Transaction(version, inputs, outs, lock_time)
    return tx.with_signatures([key.sign(tx.sighash) for _, key in spends])


def coinbase_outpoint(block: Block, index: int = 0) -> OutPoint:
    return OutPoint(block.transactions[0].tx_id, index)
