"""The writer the crash test kills: connects a deterministic chain into a SqliteStore as fast as it can.

Run as `python crash_writer.py PATH`.  It resumes after the stored tip and
prints "START <height>", then "ACK <height>" (flushed) after each apply()
returns.  Block h adds COINS coins and spends the odd-numbered coins of block
h - 1, so the UTXO set after tip T is known (expected_utxos) and the test can
compare the file with it after every SIGKILL.
"""

import hashlib
import sys

from chaincore.core.store import FULLY_VALID, BlockEntry, ChainUpdate
from chaincore.core.tx import Coin, OutPoint
from chaincore.storage.sqlite import SqliteStore

NETWORK = "crashtest"
GENESIS = hashlib.sha256(b"crash test genesis").digest()
COINS = 500
RECIPIENTS = 8
BLOCK_BYTES = 2_000
MAX_HEIGHT = 100_000   # a writer left behind by a broken test stops by itself


def block_hash(height: int) -> bytes:
    return hashlib.sha256(b"crash block %d" % height).digest() if height >= 0 else bytes(32)


def tx_id(height: int) -> bytes:
    return hashlib.sha256(b"crash tx %d" % height).digest()


def recipient(index: int) -> bytes:
    return bytes([0x3C]) + hashlib.sha256(b"crash payload %d" % (index % RECIPIENTS)).digest()[:20]


def coin(height: int, index: int) -> Coin:
    """Coin `index` created by block `height`."""
    return Coin(height * 1_000 + index + 1, recipient(index), height, index == 0)


def spent_by(height: int) -> list:
    """[(OutPoint, Coin)] that block `height` spends: the odd-numbered coins of its parent."""
    if height == 0:
        return []
    return [(OutPoint(tx_id(height - 1), i), coin(height - 1, i)) for i in range(1, COINS, 2)]


def block_update(height: int) -> ChainUpdate:
    """The ChainUpdate that connects block `height` on top of block `height - 1`."""
    h = block_hash(height)
    entry = BlockEntry(h, block_hash(height - 1), height, height.to_bytes(4, "big") * 30, height + 1,
                       FULLY_VALID, 1_700_000_000 + 60 * height, 2**240, 1_700_000_000 + 60 * height - 300)
    spent = spent_by(height)
    return ChainUpdate(
        entries=[entry], blocks=[(h, (h * (BLOCK_BYTES // 32 + 1))[:BLOCK_BYTES])],
        coins_removed=[op for op, _ in spent],
        coins_added=[(OutPoint(tx_id(height), i), coin(height, i)) for i in range(COINS)],
        undo_put=[(h, spent)], main_added=[(height, h)], txs_added=[(tx_id(height), h, height, 0)],
        history_added=[(recipient(0), tx_id(height), height, 0, 50, True)], tip=h)


def expected_utxos(tip_height: int) -> set:
    """{(tx_id, index, amount, recipient, height, coinbase)} after connecting blocks 0..tip_height."""
    rows = set()
    for height in range(tip_height + 1):
        indexes = range(COINS) if height == tip_height else range(0, COINS, 2)
        for i in indexes:
            c = coin(height, i)
            rows.add((tx_id(height), i, c.amount, c.recipient, c.height, int(c.is_coinbase)))
    return rows


def main(path: str) -> None:
    store = SqliteStore(path, NETWORK, GENESIS)
    tip = store.tip()
    height = 0 if tip is None else store.get_entry(tip).height + 1
    print(f"START {height}", flush=True)
    while height <= MAX_HEIGHT:
        store.apply(block_update(height))
        print(f"ACK {height}", flush=True)
        height += 1
    store.close()


if __name__ == "__main__":
    main(sys.argv[1])
