"""What both miners decide without I/O: which nonce range to search next, and when a template is stale.

`--mine` in the node (service/miner.py) and `chaincore-miner` (cli/miner.py)
hand these ranges to worker processes running `pow.search_nonce`, and drop a
template when `is_stale` says so: a new tip or mempool means a better block
exists, and an old one carries an old timestamp.
"""

from .pow import nonce_limit

TEMPLATE_MAX_AGE_S = 30.0


class NonceRanges:
    """Consecutive (start, count) ranges over one template's whole nonce space, handed out once each."""

    def __init__(self, nonce_size: int, chunk: int):
        if chunk <= 0:
            raise ValueError("a nonce range must hold at least one nonce")
        self.limit = nonce_limit(nonce_size)
        self.chunk = chunk
        self.next_nonce = 0

    @property
    def exhausted(self) -> bool:
        return self.next_nonce >= self.limit

    def take(self) -> tuple | None:
        """The next range, cut at the end of the nonce space, or None once every nonce was handed out."""
        if self.exhausted:
            return None
        count = min(self.chunk, self.limit - self.next_nonce)
        start, self.next_nonce = self.next_nonce, self.next_nonce + count
        return start, count


def is_stale(made_on: tuple, seen_now: tuple, age_s: float, max_age_s: float = TEMPLATE_MAX_AGE_S) -> bool:
    """Whether a template made on (tip, mempool size) made_on should give way to a fresh one, now that the
    node shows seen_now and the template is age_s seconds old."""
    return seen_now != made_on or age_s >= max_age_s
