"""A node with mature coins behind StubTreq, and a synchronous client for API tests.

`funded_node()` gives a fresh in-memory regtest node service whose node has accepted a shared
chain of FUNDED_HEIGHT blocks paying ALICE, so the coinbases of heights
1..MATURE_MAX are spendable.  `APIClient` sends one request through StubTreq
(no sockets), flushes the in-memory connection and returns the whole answer;
`client_address` makes the request come from another host, and
`max_body_bytes` puts the node's LimitedRequest in front, as the real site does.
"""

import functools
import json as jsonlib
from dataclasses import dataclass

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from chaincore.api.site import make_site
from chaincore.core.params import REGTEST

from .builders import ALICE, coinbase_outpoint, regtest_chain
from .nodes import make_node

FUNDED_HEIGHT = 110
MATURE_MAX = FUNDED_HEIGHT + 1 - REGTEST.coinbase_maturity  # coinbases at heights <= this are spendable
BASE = "http://127.0.0.1:5000"


@functools.lru_cache(maxsize=None)
def funded_chain() -> tuple:
    """[genesis, b1, ..., b110], every coinbase paying ALICE; built once per test run."""
    return tuple(regtest_chain(FUNDED_HEIGHT, pay_to=ALICE))


def funded_node(blocks=None, **kwargs):
    """A fresh node service (make_node: MemoryStore, the production wiring) holding blocks (default
    funded_chain()), its clock a minute past the tip; kwargs go to make_node (e.g. store)."""
    blocks = funded_chain() if blocks is None else blocks
    clock = Clock()
    clock.advance(blocks[-1].header.timestamp + 60)
    return make_node(clock, blocks=blocks, **kwargs)


def mature_outpoint(height: int):
    """The coinbase outpoint of the funded chain's block at height (ALICE's)."""
    return coinbase_outpoint(funded_chain()[height])


def state_of(node) -> tuple:
    """What a refused request must leave unchanged: tip, mempool size, UTXO count."""
    return node.chain.tip.hash, len(node.mempool), node.store.coin_count()


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: object = None  # the response's twisted.web Headers

    def header(self, name: str) -> str | None:
        """The first value of a response header, or None."""
        values = self.headers.getRawHeaders(name) if self.headers is not None else None  # str name: str values
        return values[0] if values else None

    @property
    def json(self):
        return jsonlib.loads(self.body)


class APIClient:
    """Synchronous requests to one NodeAPI through StubTreq."""

    def __init__(self, testcase, service, *, client_address: str | None = None, max_body_bytes: int | None = None):
        self.testcase = testcase
        self.service = service
        self.node = service.node
        self.metrics = service.metrics
        self.api = service.api
        self.stub = StubTreq(self.api.resource())
        factory = self.stub._agent._serverFactory
        if max_body_bytes is not None:
            # ENGINEERING.md 3: the in-memory Site takes the node's own request class this way.
            factory.requestFactory = make_site(self.api.resource(), max_body_bytes=max_body_bytes).requestFactory
        if client_address is not None:
            factory.requestFactory = _from_address(factory.requestFactory, client_address)

    def request(self, method: str, path: str, *, json=None, data: bytes | None = None,
                headers: dict | None = None, content_type: str = "application/json") -> Answer:
        hdrs = dict(headers or {})
        if json is not None:
            data = jsonlib.dumps(json).encode()
        if data is not None and content_type is not None:
            hdrs.setdefault("Content-Type", content_type)
        d = self.stub.request(method, BASE + path, data=data, headers=hdrs)
        self.stub.flush()
        response = self.testcase.successResultOf(d)
        body_d = self.stub.content(response)
        self.stub.flush()
        body = self.testcase.successResultOf(body_d)
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
        return Answer(response.code, ctype, body, response.headers)

    def get(self, path: str, **kw) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw) -> Answer:
        return self.request("POST", path, json=body, **kw)

    def get_json(self, path: str, status: int = 200):
        """GET path, check the status and the JSON content type, return the decoded body."""
        answer = self.get(path)
        self.testcase.assertEqual(answer.status, status, answer.body[:300])
        assert_json(self.testcase, answer)
        return answer.json


def assert_json(testcase, answer: Answer) -> None:
    """The answer says it is JSON and is JSON."""
    testcase.assertEqual(answer.content_type.split(";")[0], "application/json", answer.body[:200])
    answer.json


def assert_error(testcase, answer: Answer, status: int, code: str | None = None) -> None:
    """The answer is `status` with a JSON {"error": text} body (and `code`, when given)."""
    testcase.assertEqual(answer.status, status, answer.body[:300])
    assert_json(testcase, answer)
    body = answer.json
    testcase.assertIsInstance(body, dict)
    testcase.assertIsInstance(body.get("error"), str)
    testcase.assertTrue(body["error"])
    if code is not None:
        testcase.assertEqual(body.get("code"), code, body)


def _from_address(request_factory, host: str):
    class RemoteRequest(request_factory):
        def getClientAddress(self):
            return IPv4Address("TCP", host, 40000)

    return RemoteRequest
