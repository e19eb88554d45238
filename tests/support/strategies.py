"""Hypothesis strategies for the consensus core's objects.

`raw_*` strategies cover everything the byte encoding can carry (any payload,
any key bytes within their limits); `json_*` ones keep to what the JSON view
can express (positive amounts within the money supply, addresses of the known
version).  `signed_transactions` signs with the builders' fixed keys.
"""

from hypothesis import settings, strategies as st

from chaincore.core.block import Block, Header
from chaincore.core.keys import ADDRESS_PAYLOAD_SIZE, ADDRESS_VERSION
from chaincore.core.params import MAX_MONEY
from chaincore.core.tx import MAX_COINBASE_DATA, OutPoint, Transaction, TxIn, TxOut
from tests.support.builders import KEYS, signed_tx

U32 = st.integers(0, 0xFFFFFFFF)
U64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
HASHES = st.binary(min_size=32, max_size=32)

# Small and deadline-free, so tests/core stays a few seconds long on any machine.
FAST = settings(max_examples=60, deadline=None, database=None)
SLOW = settings(max_examples=25, deadline=None, database=None)


raw_inputs = st.builds(TxIn, HASHES, U32, st.binary(max_size=65), st.binary(max_size=MAX_COINBASE_DATA))
raw_outputs = st.builds(TxOut, U64, st.binary(min_size=ADDRESS_PAYLOAD_SIZE, max_size=ADDRESS_PAYLOAD_SIZE))
raw_transactions = st.builds(Transaction, U32, st.lists(raw_inputs, max_size=4).map(tuple),
                             st.lists(raw_outputs, max_size=4).map(tuple), U32)
headers = st.builds(Header, U32, U32, HASHES, HASHES, U64, st.integers(0, (1 << 256) - 1), U64)
raw_blocks = st.builds(Block, headers, st.lists(raw_transactions, max_size=3).map(tuple))

payloads = st.binary(min_size=20, max_size=20).map(lambda h: bytes((ADDRESS_VERSION,)) + h)
json_outputs = st.builds(TxOut, st.integers(1, MAX_MONEY), payloads)
json_transactions = st.builds(Transaction, U32, st.lists(raw_inputs, max_size=4).map(tuple),
                              st.lists(json_outputs, max_size=4).map(tuple), U32)
json_blocks = st.builds(Block, headers, st.lists(json_transactions, max_size=3).map(tuple))

outpoints = st.builds(OutPoint, HASHES, U32)


@st.composite
def signed_transactions(draw, max_inputs: int = 3):
    """A sane transaction spending distinct outpoints, each input signed by one of the builders' keys."""
    spends = draw(st.lists(st.tuples(outpoints, st.sampled_from(KEYS)), min_size=1, max_size=max_inputs,
                           unique_by=lambda spend: spend[0]))
    outputs = draw(st.lists(st.tuples(payloads, st.integers(1, MAX_MONEY // 8)), min_size=1, max_size=3))
    return signed_tx(spends, outputs, lock_time=draw(st.integers(0, 1000)))
