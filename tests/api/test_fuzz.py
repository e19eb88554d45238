"""Requests generated from the OpenAPI document: whatever arrives, no 5xx, and every 4xx is a JSON error.

Bodies come from each endpoint's request schema (a small converter of the
JSON Schema subset the document uses: types, patterns, bounds), from
valid transactions and blocks with one leaf replaced by an arbitrary JSON
value, and from arbitrary JSON; query and path parameters from their schemas
and from arbitrary text.  All go through StubTreq to one funded node per test.
"""

from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from chaincore.api.schema import ENDPOINTS, SCHEMAS
from chaincore.core import jsonview

from ..support.api import APIClient, assert_error, assert_json, funded_chain, funded_node, mature_outpoint
from ..support.builders import ALICE, BOB, make_block, signed_tx

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def resolved(schema):
    """schema with every #/components/schemas reference replaced by its definition."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return resolved(SCHEMAS[schema["$ref"].rsplit("/", 1)[-1]])
        return {k: resolved(v) for k, v in schema.items() if k != "description"}
    if isinstance(schema, list):
        return [resolved(v) for v in schema]
    return schema


def from_schema(schema) -> st.SearchStrategy:
    """Values meeting a JSON Schema of the subset chaincore.api.schema uses (no $ref: resolve first)."""
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 60))
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object":
        props = schema.get("properties", {})
        required = [k for k in schema.get("required", []) if k in props]
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries({k: from_schema(props[k]) for k in required}, optional=optional)
    return JSON_VALUES


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)


def leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaf_paths(v, prefix + (k,))
    elif isinstance(value, list):
        for n, v in enumerate(value):
            yield from leaf_paths(v, prefix + (n,))
    yield prefix


def replaced(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: replaced(value[head], rest, new)}
    return [replaced(v, rest, new) if n == head else v for n, v in enumerate(value)]


@st.composite
def mutated(draw, valid):
    """valid (a JSON value) with one leaf or branch replaced by an arbitrary JSON value."""
    path = draw(st.sampled_from(list(leaf_paths(valid))))
    return replaced(valid, path, draw(JSON_VALUES))


def valid_tx_json():
    tx = signed_tx([(mature_outpoint(1), ALICE)], [(BOB, 10_000), (ALICE, 4_999_989_000)])
    return jsonview.tx_to_json(tx)


def valid_block_json():
    return jsonview.block_to_json(make_block(funded_chain()[-1], pay_to=BOB))


POSTS = {key: ep for key, ep in ENDPOINTS.items() if ep.method == "post"}
GETS_WITH_PARAMS = {key: ep for key, ep in ENDPOINTS.items() if ep.method == "get" and ep.params}
TEXT_RESPONSES = {"index", "metrics"}
HTML_PAGES = {"index", "search", "block_page", "tx_page", "address_page", "mempool_page", "blocks_page"}


def param_value(p):
    return from_schema(p.schema).map(str) | st.text(max_size=70) | st.integers(-5, 10 ** 12).map(str)


@st.composite
def get_requests(draw):
    key = draw(st.sampled_from(sorted(GETS_WITH_PARAMS)))
    ep = GETS_WITH_PARAMS[key]
    path, query = ep.path, {}
    for p in ep.params:
        if p.where == "path":
            path = path.replace("{" + p.name + "}", quote(draw(param_value(p)), safe="") or "x")
        elif draw(st.booleans()):
            query[p.name] = draw(param_value(p))
    return key, path + ("?" + urlencode(query) if query else "")


@st.composite
def post_requests(draw):
    key = draw(st.sampled_from(sorted(POSTS)))
    ep = POSTS[key]
    field = ep.body["required"][0]
    valid = {"submit_block": valid_block_json, "add_transaction": valid_tx_json}.get(key)
    choices = [from_schema(resolved(ep.body)), JSON_VALUES]
    if valid is not None:
        choices.append(mutated(valid()).map(lambda v: {field: v}))
        choices.append(mutated({field: valid()}))
    return ep.path, draw(st.one_of(*choices))


class FuzzTests(SynchronousTestCase):
    def setUp(self):
        self.node = funded_node()
        self.client = APIClient(self, self.node)
        self.node.add_peer = lambda url: None

    def check(self, answer, key=None):
        self.assertLess(answer.status, 500, answer.body[:300])
        if key in HTML_PAGES and answer.content_type.startswith("text/html"):
            self.assertIn(b"</html>", answer.body)  # pages for people answer HTML, their own errors included
        elif answer.status >= 400:
            assert_error(self, answer, answer.status)
        elif key not in TEXT_RESPONSES:
            assert_json(self, answer)

    @FUZZ
    @given(post_requests())
    def test_bodies(self, request):
        """Bodies from the request schemas, mutated valid objects and arbitrary JSON never cause a 5xx."""
        path, body = request
        self.check(self.client.post(path, body))

    @FUZZ
    @given(get_requests())
    def test_parameters(self, request):
        """Query and path parameters from their schemas or arbitrary text never cause a 5xx."""
        key, path = request
        self.check(self.client.get(path), key)

    def test_mutation_reaches_the_rules(self):
        """The mutation strategy starts from objects the node accepts, so mutants probe past parsing."""
        tx = self.client.post("/add_transaction", {"transaction": valid_tx_json()})
        block = self.client.post("/submit_block", {"block": valid_block_json()})
        self.assertEqual((tx.status, block.status), (200, 200))
