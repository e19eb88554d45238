"""Budgets of the node's clients: request tokens per address, and open connections per address and in all.

Pure bookkeeping, with `now` passed in, so every budget is tested without a
clock.  Clients come in three classes, each with its own budget and its own
table, so a stranger can neither spend nor push out what the operator
(loopback) or a known peer is given.  Tables are bounded: past their size
the least recently seen address is forgotten (which gives it a full bucket
again; that costs an attacker as many addresses as the table holds).
"""

import ipaddress
import math
from collections import OrderedDict
from functools import lru_cache
from dataclasses import dataclass

LOOPBACK = "loopback"   # the operator, its wallet and miner
PEER = "peer"           # a node we know (in the peer table)
STRANGER = "stranger"   # anyone else
CLASSES = (LOOPBACK, PEER, STRANGER)


def classify_host(host: str, peer_hosts=()) -> str:
    """The class of a client at host: LOOPBACK (a loopback address or a UNIX socket), PEER, or STRANGER."""
    if host in peer_hosts:
        return PEER
    if host in ("unix", "localhost"):
        return LOOPBACK
    return LOOPBACK if _is_loopback_ip(host) else STRANGER


@lru_cache(maxsize=4096)
def _is_loopback_ip(host: str) -> bool:
    """Whether host is a loopback IP address (an IPv4-mapped one included); parsed once per host."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


@dataclass(frozen=True)
class Rate:
    """A token bucket's shape: up to `burst` tokens, refilled at `per_s` tokens a second."""

    burst: float
    per_s: float


DEFAULT_RATES = {LOOPBACK: Rate(burst=2_000, per_s=500), PEER: Rate(burst=600, per_s=100),
                 STRANGER: Rate(burst=120, per_s=20)}


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on; if not, how many seconds until it could (for Retry-After)."""

    allowed: bool
    retry_after_s: float = 0.0

    @property
    def retry_after_header(self) -> str:
        """Retry-After as HTTP wants it: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


class TokenBuckets:
    """A token bucket per client address and class; expensive requests cost more tokens."""

    def __init__(self, rates: dict | None = None, max_addresses: int = 10_000):
        self.rates = dict(DEFAULT_RATES if rates is None else rates)
        self.max_addresses = max_addresses
        self._buckets = {cls: OrderedDict() for cls in self.rates}  # address -> [tokens, as of]
        self.refusals = 0

    def __len__(self) -> int:
        return sum(len(table) for table in self._buckets.values())

    def take(self, address: str, client_class: str, now: float, cost: float = 1.0) -> Decision:
        """Spend cost tokens of address's bucket if it holds them; else refuse with the wait until it will.

        A cost above the burst is charged as the burst, so every request can pass on a full bucket.
        """
        rate = self.rates[client_class]
        cost = min(cost, rate.burst)
        table = self._buckets[client_class]
        bucket = table.get(address)
        if bucket is None:
            bucket = table[address] = [rate.burst, now]
            while len(table) > self.max_addresses:
                table.popitem(last=False)
        else:
            table.move_to_end(address)
            elapsed = max(0.0, now - bucket[1])  # a clock that steps back refills nothing
            bucket[0] = min(rate.burst, bucket[0] + elapsed * rate.per_s)
            bucket[1] = max(bucket[1], now)
        if bucket[0] >= cost:
            bucket[0] -= cost
            return Decision(True)
        self.refusals += 1
        return Decision(False, (cost - bucket[0]) / rate.per_s if rate.per_s > 0 else math.inf)


DEFAULT_MAX_CONNECTIONS = 1_024
DEFAULT_PER_ADDRESS = {LOOPBACK: 256, PEER: 16, STRANGER: 8}
DEFAULT_RESERVED = 128  # places in the total that strangers cannot take: the operator's and the peers'


@dataclass(frozen=True)
class Refusal:
    """Why a connection was refused: `reason` is "per-address" or "total"."""

    reason: str
    limit: int


class ConnectionTable:
    """Open connections per address and in all; `open` admits or refuses, `close` gives the place back.

    Strangers may fill the total only up to `reserved` places short of it, so the
    operator and known peers can still connect while strangers hold all they may.
    """

    def __init__(self, max_total: int = DEFAULT_MAX_CONNECTIONS, per_address: dict | None = None,
                 reserved: int = DEFAULT_RESERVED):
        self.max_total = max_total
        self.per_address = dict(DEFAULT_PER_ADDRESS if per_address is None else per_address)
        self.reserved = min(reserved, max_total)
        self._open = {}  # address -> count; only addresses with open connections
        self._strangers = 0
        self.total = 0

    def __len__(self) -> int:
        """How many addresses hold open connections."""
        return len(self._open)

    def count(self, address: str) -> int:
        return self._open.get(address, 0)

    def open(self, address: str, client_class: str) -> Refusal | None:
        """Admit a connection from address (None) or say why not; an admitted one must be closed once."""
        per_address = self.per_address[client_class]
        if self._open.get(address, 0) >= per_address:
            return Refusal("per-address", per_address)
        if self.total >= self.max_total:
            return Refusal("total", self.max_total)
        if client_class == STRANGER:
            if self._strangers >= self.max_total - self.reserved:
                return Refusal("total", self.max_total - self.reserved)
            self._strangers += 1
        self._open[address] = self._open.get(address, 0) + 1
        self.total += 1
        return None

    def close(self, address: str, client_class: str) -> None:
        """Give back the place of a connection open() admitted."""
        left = self._open[address] - 1
        if left:
            self._open[address] = left
        else:
            del self._open[address]
        self.total -= 1
        if client_class == STRANGER:
            self._strangers -= 1


# What an expensive request costs, by endpoint: (class for the metrics, tokens).  A stranger's bucket
# (120 tokens, 20 a second) pays for six whole chains at once and one a second after that.
ENDPOINT_COSTS = {
    "chain": ("bulk", 20), "blocks": ("bulk", 10), "headers": ("bulk", 5), "transactions": ("bulk", 10),
    "block": ("block", 2),
    "history": ("address", 5), "utxos": ("address", 5), "balance": ("address", 3),
    "explorer": ("explorer", 3),
    "add_transaction": ("submit", 2), "submit_block": ("submit", 5),
    # relay between nodes: an announcement makes the node fetch from its sender; /compact and /block_txs
    # read a block as /block does; /txs looks up to 5,000 ids
    "announce": ("submit", 2), "announce_txs": ("submit", 2), "txs": ("bulk", 5),
}
BLOCKS_PER_TOKEN = 10  # /chain and /blocks: an answer of 600 blocks costs 60 tokens
STRANGERS_ONLY = {"add_transaction", "submit_block", "announce", "announce_txs"}  # the operator's and the peers' own traffic is not metered


class RequestBudget:
    """Charges expensive requests to their client's token bucket; `charge` answers whether it may go on.

    `classify(host)` gives a client's class (loopback, peer, stranger); `clock`
    gives the time.  Each class has its own buckets (TokenBuckets), so strangers
    never spend what the operator or the peers are given.
    """

    def __init__(self, clock, buckets: TokenBuckets | None = None, classify=classify_host, costs=None):
        self.clock = clock
        self.buckets = buckets if buckets is not None else TokenBuckets()
        self.classify = classify
        self.costs = dict(ENDPOINT_COSTS if costs is None else costs)

    def charge(self, host: str, endpoint: str, blocks: int = 0) -> tuple:
        """(endpoint class, Decision) for one request of endpoint from host; unmetered requests are allowed.
        An answer of many blocks costs at least a token for every BLOCKS_PER_TOKEN of them."""
        endpoint_class, cost = self.costs[endpoint]
        cost = max(cost, blocks / BLOCKS_PER_TOKEN)
        client_class = self.classify(host)
        if endpoint in STRANGERS_ONLY and client_class != STRANGER:
            return endpoint_class, Decision(True)
        return endpoint_class, self.buckets.take(host, client_class, self.clock.seconds(), cost)
