"""Relay among strangers: peers that announce blocks they never serve, serve forms or transactions that do
not fit, flood announcements, or pass on blocks that break the coins' rules; what each costs the node, and
that the honest block still arrives and is passed on."""

from chaincore.core import compact as compact_blocks
from chaincore.core.errors import MissingInput
from chaincore.core.params import REGTEST
from chaincore.core.tx import OutPoint
from tests.support.api import funded_chain
from tests.support.builders import ALICE, BOB, make_block, signed_tx
from tests.support.nodes import settled

from .fakes import NodePeer
from .test_compact_relay import payments
from .test_early_relay import _turn
from .test_sync import ME, SyncTestCase, url


def ghost_block(parent, n: int = 0):
    """A child of parent with valid proof of work spending a coin that does not exist (a coin rule)."""
    ghost = signed_tx([(OutPoint(bytes([0x11 + n]) * 32, 0), ALICE)], [(BOB, 1000)])
    return make_block(parent, [ghost], pay_to=BOB)


class InvalidBlockServingTests(SyncTestCase):
    def test_a_block_refused_after_its_early_pass_is_no_longer_served(self):
        """A block passed on before its check and then refused by a coin rule is answered 404 at
        GET /compact/<hash> and POST /block_txs once refused: peers are not handed a block known invalid."""
        a, b = self.pair()
        a.node.after_sends = _turn(self.clock)
        bad = ghost_block(funded_chain()[-1])
        d = a.node.submit_block(bad, local=True)
        code, _ = self.successResultOf(b.client.get_binary(a.url, f"/compact/{bad.hash.hex()}"))
        self.assertEqual(code, 200)  # served while it is being checked
        self.clock.advance(0)
        self.failureResultOf(d, MissingInput)
        code, _ = self.successResultOf(b.client.get_binary(a.url, f"/compact/{bad.hash.hex()}"))
        self.assertEqual(code, 404)
        code, _ = self.successResultOf(b.client.post_json(a.url, "/block_txs",
                                                          {"block_hash": bad.hash.hex(), "indexes": [1]}))
        self.assertEqual(code, 404)
