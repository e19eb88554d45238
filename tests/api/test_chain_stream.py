"""A long /chain is written in slices (the reactor serves others in between) and reads as one JSON answer."""

import json

from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SynchronousTestCase
from treq.testing import StubTreq

from chaincore.api import routes
from chaincore.core import jsonview
from tests.support.builders import regtest_chain
from tests.support.nodes import make_node

LENGTH = routes.STREAM_CHAIN_OVER + 101


class Scheduled:
    """What a Cooperator's scheduler returns: something it may cancel."""

    def cancel(self):
        pass


class ChainStreamTests(SynchronousTestCase):
    def setUp(self):
        self.blocks = regtest_chain(LENGTH - 1)
        self.clock = Clock()
        self.clock.advance(self.blocks[-1].header.timestamp)
        self.scheduled = []  # the cooperator's next tick, run by the test one at a time
        cooperator = Cooperator(scheduler=self.schedule, terminationPredicateFactory=lambda: lambda: True)
        service = make_node(self.clock, blocks=self.blocks, cooperate=cooperator.cooperate)
        self.node = service.node
        service.api.stream_slice_bytes = 20_000  # about 50 coinbase-only blocks a slice
        self.stub = StubTreq(service.api.resource())

    def schedule(self, tick):
        self.scheduled.append(tick)
        return Scheduled()

    def test_long_chain_is_written_in_slices(self):
        """The answer needs several scheduler turns, and then equals the one-piece JSON of every block."""
        turns = 0

        def turn():
            nonlocal turns
            if self.scheduled:
                self.scheduled.pop(0)()
            self.stub.flush()
            turns += 1
            self.assertLess(turns, 100)

        got = []
        self.stub.get("http://127.0.0.1:5000/chain").addCallback(got.append)
        self.stub.flush()
        while not got:
            turn()
        response = got.pop()
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        response.content().addCallback(got.append)
        while not got:
            turn()
        self.assertGreaterEqual(turns, LENGTH // 60)
        body = json.loads(got.pop())
        self.assertEqual(body["length"], LENGTH)
        self.assertEqual(body["chain"], [jsonview.block_to_json(b) for b in self.blocks])

    def test_short_ranges_are_answered_at_once(self):
        """With start and limit the answer is one piece, with no scheduler turn."""
        d = self.stub.get("http://127.0.0.1:5000/chain?start=10&limit=3")
        self.stub.flush()
        body = json.loads(self.successResultOf(self.successResultOf(d).content()))
        self.assertEqual([b["index"] for b in body["chain"]], [10, 11, 12])
        self.assertEqual(body["length"], LENGTH)

    def test_blocks_asked_again_decode_no_block(self):
        """The JSON of a block is kept by its hash: a range asked again decodes no block, and answers the same."""
        def ask(path):
            d = self.stub.get("http://127.0.0.1:5000" + path)
            self.stub.flush()
            return json.loads(self.successResultOf(self.successResultOf(d).content()))

        decoded = []
        block = self.node.chain.block
        self.node.chain.block = lambda h: decoded.append(h) or block(h)
        first = ask("/chain?start=10&limit=3")
        self.assertEqual(len(decoded), 3)
        self.assertEqual(ask("/chain?start=10&limit=3"), first)
        self.assertEqual(ask("/blocks?start=11&limit=2")["blocks"], first["chain"][1:])
        self.assertEqual(len(decoded), 3)
        self.assertEqual(ask("/blocks?start=12&limit=2")["blocks"][1], jsonview.block_to_json(self.blocks[13]))
        self.assertEqual(len(decoded), 4)
