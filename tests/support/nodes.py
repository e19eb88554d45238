"""Nodes for unit tests, built by the production factory (service.wiring.build_node) on fakes.

`make_node()` gives a whole node (Node, NodeAPI, PeerNetwork, listeners) on a
MemoryStore, a task.Clock and an HTTP client that reaches nobody unless a test
passes its own (a FakeNetwork's), so unit tests run the wiring the twistd
service runs.  `settled(d)` reads a Deferred that has already fired.
"""

from treq.testing import StubTreq
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from chaincore.core.params import REGTEST
from chaincore.core.store import MemoryStore
from chaincore.service.wiring import build_node

BASE = "http://127.0.0.1:5000"

class _Done:
    def whenDone(self):
        return succeed(None)


def cooperate_at_once(iterator):
    """A cooperate() that runs the whole iterator at once, so answers written in slices arrive synchronously."""
    for _ in iterator:
        pass
    return _Done()


def make_node(clock=None, *, store=None, blocks=(), advertise_url: str = "http://localhost:5000", http=None,
              **kwargs):
    """A NodeService from build_node on REGTEST with fakes; blocks (genesis skipped) are accepted first.
    Long answers are written in one go (cooperate_at_once) unless a test passes its own `cooperate`."""
    clock = Clock() if clock is None else clock
    kwargs.setdefault("cooperate", cooperate_at_once)
    http = StubTreq(Resource()) if http is None else http  # answers 404 to everything, no sockets
    service = build_node(MemoryStore() if store is None else store, REGTEST, clock, advertise_url=advertise_url,
                         http=http, **kwargs)
    for block in blocks:
        if block.height > 0:
            settled(service.node.submit_block(block))
    return service

def settled(d):
    """The result of a Deferred that has already fired; its exception if it failed; AssertionError if pending."""
    box = []
    d.addBoth(box.append)
    if not box:
        raise AssertionError(f"{d!r} has not fired")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]
