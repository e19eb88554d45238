"""Relay: pass newly accepted blocks and transactions on to the active peers.

The node fires its listeners only for items it did not know, so an item is
relayed at most once by each node.  Each peer's known items (what it sent
us, what we sent it) are remembered in a bounded set, so an item does not go
back to a peer that already has it.  Blocks connected in bulk during a
catch-up are not relayed one by one; only the new tip is.  Items travel as
their canonical bytes (docs/protocol.md 11).
"""

from collections import OrderedDict

from twisted.internet import defer
from ..logs import logger

from ..core.errors import Invalid, PeerUnreachable

log = logger("chaincore.p2p.relay")

KNOWN_PER_PEER = 5000


class KnownItems:
    """A bounded record of which peer is known to have which item hash."""

    def __init__(self, bound: int = KNOWN_PER_PEER):
        self._bound = bound
        self._by_peer = {}

    def add(self, peer: str, item: bytes) -> None:
        known = self._by_peer.setdefault(peer, OrderedDict())
        known[item] = None
        known.move_to_end(item)
        while len(known) > self._bound:
            known.popitem(last=False)

    def has(self, peer: str, item: bytes) -> bool:
        return item in self._by_peer.get(peer, ())

    def forget(self, peer: str) -> None:
        self._by_peer.pop(peer, None)


class Relay:
    """Announces the node's new blocks and transactions to its active peers."""

    def __init__(self, node, client, discovery, sync=None):
        self.node = node
        self.client = client
        self.discovery = discovery
        self.sync = sync
        self.known = KnownItems()
        self.sent = 0  # the wiring subscribes on_block, on_tx and on_caught_up

    def on_block(self, block, source):
        """A block newly stored by the node: pass it on if it is the tip (not during a catch-up from source)."""
        if source:
            self.known.add(source, block.hash)
        if self.sync is not None and source is not None and source in self.sync.catching_up:
            return None
        if block.hash != self.node.chain.tip.hash:
            return None  # only the tip is news worth spreading
        return self._send(block.hash, "/submit_block", lambda: block.raw, source)

    def on_caught_up(self, peer, received):
        """A catch-up from peer connected blocks without relaying them: announce the new tip once."""
        tip = self.node.chain.block(self.node.chain.tip.hash)
        self.known.add(peer, tip.hash)
        return self._send(tip.hash, "/submit_block", lambda: tip.raw, peer)

    def on_tx(self, tx, source):
        """A transaction newly in the mempool: pass it on to every peer not known to have it."""
        if source:
            self.known.add(source, tx.tx_id)
        return self._send(tx.tx_id, "/add_transaction", lambda: tx.raw, source)

    def _send(self, item: bytes, path: str, make_body, source):
        """POST make_body() (canonical bytes) to every active peer but source that is not known to have item."""
        peers = [p for p in self.discovery.active_peers() if p != source and not self.known.has(p, item)]
        if not peers:
            return None
        body = make_body()  # built only when someone will receive it
        sends = []
        for peer in peers:
            self.known.add(peer, item)
            d = self.client.post_binary(peer, path, body)
            d.addCallbacks(self._answered, self._failed, callbackArgs=(peer, path), errbackArgs=(peer,))
            sends.append(d)
        self.sent += len(sends)
        return defer.DeferredList(sends, consumeErrors=True) if sends else None

    def _answered(self, result, peer, path):
        status, answer = result
        if status >= 500:
            log.debug("{peer} failed on {path}: {answer}", peer=peer, path=path, answer=answer)
        return status

    def _failed(self, failure, peer):
        if failure.check(PeerUnreachable):
            self.discovery.report_failure(peer, str(failure.value))
        elif failure.check(Invalid):
            self.discovery.report_misbehaviour(peer, failure.value)
        else:
            log.failure("relay to {peer} failed", failure, peer=peer)
        return None
