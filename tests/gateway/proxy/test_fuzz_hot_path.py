"""Property-based fuzzing: hypothesis sends valid, mutated and random requests to a real
gateway (uvicorn on port 0) in front of the fake upstream.

The fake answers every request normally, so any 5xx is the gateway's fault. Every 4xx must be
OpenAI error JSON that does not quote the body, and the process must keep serving. The runs
are derandomized (the same examples on every run, so CI is reproducible) and bounded: 850
requests in about 10 s (`--hypothesis-show-statistics` shows what they covered).
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.proxy.parsing import MAX_DEPTH
from gateway.settings import Settings
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]
LIMIT = 16_384
MARK = "Bống ở số 12"  # planted in values: no error may repeat it
ADMIN_TOKEN = "admin-token-for-the-fuzz-run"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Texts the fake upstream reads as orders (hang, fail, ...); a fuzzer must not give them.
CUES = ("hang", "slow:", "status:", "garbage", "stall-after-headers", "malformed-sse", "reset-")


@pytest.fixture(scope="module")
def gateway(fake_upstream: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    records = tmp_path_factory.mktemp("records") / "pairs.db"
    backend = VllmSettings(
        url=fake_upstream[1].url, read_timeout=5.0, total_timeout=10.0, circuit_failures=10**6
    )
    config = Settings(
        backends={"vllm": backend},
        primary="vllm",
        max_body_bytes=LIMIT,
        records_url=f"sqlite:///{records}",
        admin_token=ADMIN_TOKEN,  # type: ignore[arg-type]
    )
    with ThreadedServer(create_app(config)) as server:
        yield server.url


@pytest.fixture(scope="module")
def client(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, timeout=30.0) as session:
        yield session
    with httpx.Client(base_url=gateway) as fresh:  # the process survived the whole run
        assert fresh.get("/health").status_code == 200
        metrics = fresh.get("/metrics").text
    assert 'status="5' not in metrics


# --- strategies -------------------------------------------------------------------------

texts = st.one_of(st.text(max_size=30), st.integers(1, 400).map(MARK.__mul__)).filter(
    lambda text: not text.startswith(CUES)
)
names = st.one_of(st.text(string.ascii_lowercase + "_", min_size=1, max_size=12), texts)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),  # what orjson writes
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=12,
)
extremes = st.sampled_from(
    [0, -1, 1, 2**31, 2**63 - 1, -(2**63), 2**64 - 1, 1e308, -1e308, 5e-324, -0.0, 0.5, "", [], {}]
)
ROLES = ["system", "developer", "user", "assistant", "tool", "function"]
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}),
    min_size=1,
    max_size=4,
)
OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    "max_tokens": st.integers(1, 4096),
    "temperature": st.floats(0.0, 2.0),
    "top_p": st.floats(0.01, 1.0),
    "n": st.integers(1, 4),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.one_of(texts, st.lists(texts, max_size=4)),
    "user": st.one_of(st.text(max_size=30), st.just(MARK)),
    "top_k": st.integers(-1, 100),
    "presence_penalty": st.floats(-2.0, 2.0),
    "logit_bias": st.dictionaries(st.integers(0, 50_000).map(str), st.floats(-100, 100)),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "structured_outputs": st.dictionaries(names, json_values, max_size=2),
}
FIELDS = ["model", "messages", "prompt", *OPTIONAL, "max_completion_tokens", "logprobs", "tools"]
chat_bodies = st.fixed_dictionaries(
    {"model": st.just(MODEL), "messages": messages}, optional=OPTIONAL
)
completion_bodies = st.fixed_dictionaries(
    {"model": st.just(MODEL), "prompt": st.one_of(texts, st.lists(st.integers(0, 50_000)))},
    optional=OPTIONAL,
)


def nested(value: object, depth: int) -> object:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, bodies: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid body with one hostile change: a wrong value, a missing or unknown field, a bad
    message, deep nesting, or no object at all."""
    body = draw(bodies)
    change = draw(st.sampled_from(["value", "message", "deep", "unknown", "drop", "not_object"]))
    field = draw(st.sampled_from(FIELDS))
    event(f"mutation {change}")
    if change == "value":
        # A model name is echoed in the 404 (as OpenAI does), so it gets no planted text.
        values = st.one_of(json_values, extremes)
        if field == "model":
            values = values.filter(lambda value: MARK not in str(value))
        body[field] = draw(values)
    elif change == "drop":
        body.pop(field, None)
    elif change == "unknown":
        body[draw(names)] = draw(json_values)
    elif change == "message" and "messages" in body:
        message = dict(body["messages"][0])
        message[draw(st.sampled_from(["role", "content", "name", "tool_calls", MARK]))] = draw(
            st.one_of(json_values, extremes, st.sampled_from(ROLES))
        )
        body["messages"] = [message, *body["messages"][1:]]
    elif change == "deep":  # in a place whose shape is open, so only the depth is wrong
        deep = nested(draw(scalars), draw(st.integers(MAX_DEPTH - 8, 200)))
        slot = draw(st.sampled_from(["structured_outputs", "tools", "vllm_xargs", "message"]))
        if slot == "tools":
            body[slot] = [{"type": "function", "function": deep}]
        elif slot == "message" and isinstance(body.get("messages"), list):
            body["messages"] = [{**body["messages"][0], "tool_calls": deep}]
        else:
            body[slot] = {"x": deep}
    elif change == "not_object":
        return draw(json_values)
    return body


LITERALS = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1" * 40, b'"\\ud800"', b"\xff", b"{"]


@st.composite
def broken_bytes(draw: st.DrawFn) -> bytes:
    """Bytes that are not quite JSON: cut, spliced, patched with literals JSON does not have."""
    raw = orjson.dumps(draw(chat_bodies))
    at = draw(st.integers(0, len(raw)))
    change = draw(st.sampled_from(["cut", "splice", "literal", "random", "unicode", "huge"]))
    if change == "cut":
        return raw[:at]
    if change == "splice":
        return raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if change == "literal":
        return raw.replace(b'"' + MODEL.encode() + b'"', draw(st.sampled_from(LITERALS)), 1)
    if change == "random":
        return draw(st.binary(max_size=200))
    if change == "unicode":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    return raw[:-1] + b', "user": "' + b"x" * LIMIT + b'"}'  # past the body limit


headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(["application/json", "text/plain", "", "a/b; x=y"]),
        "x-request-id": st.text(string.printable.strip(), max_size=200),
        "x-gateway-user": st.text(string.ascii_letters + "@.-_", max_size=50),
        "authorization": st.sampled_from(["Bearer x", "Basic abc", "Bearer", ""]),
    },
)


# --- checks -------------------------------------------------------------------------------


def check(response: httpx.Response, sent: object) -> None:
    """No 5xx; 2xx is the fake's answer; 4xx is OpenAI error JSON that quotes nothing."""
    assert response.status_code < 500, (response.status_code, response.text[:500], sent)
    event(f"status {response.status_code}")
    if response.status_code >= 400:
        body = response.json()
        assert list(body) == ["error"], body
        error = body["error"]
        event(f"code {error['code']}")
        assert sorted(error) == ["code", "message", "param", "type"], error
        assert isinstance(error["message"], str)
        assert isinstance(error["type"], str)
        assert error["code"] is None or isinstance(error["code"], str)
        assert error["param"] is None or isinstance(error["param"], str)
        assert MARK not in response.text, (response.text, sent)
        return
    assert response.status_code == 200
    if response.headers["content-type"].startswith("text/event-stream"):
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        assert response.json()["object"] == "chat.completion"


def post(client: httpx.Client, path: str, content: bytes, extra: dict[str, str]) -> None:
    check(client.post(path, content=content, headers=extra), content[:300])


# --- the runs -------------------------------------------------------------------------------


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
requests = st.one_of(
    st.tuples(st.just(CHAT), st.one_of(chat_bodies, mutated(chat_bodies))),
    st.tuples(st.just(COMPLETIONS), st.one_of(completion_bodies, mutated(completion_bodies))),
    st.tuples(st.sampled_from([CHAT, COMPLETIONS]), mutated(chat_bodies | completion_bodies)),
)


@settings(FUZZ, max_examples=400)
@given(request=requests, extra=headers)
def test_structured_bodies_never_get_a_5xx(
    client: httpx.Client, request: tuple[str, object], extra: dict[str, str]
) -> None:
    path, body = request
    post(client, path, orjson.dumps(body), extra)


@settings(FUZZ, max_examples=250)
@given(
    content=broken_bytes(),
    path=st.sampled_from([CHAT, COMPLETIONS]),
    query=st.text(string.ascii_letters + "=&%?", max_size=20),
)
def test_broken_bytes_never_get_a_5xx(
    client: httpx.Client, content: bytes, path: str, query: str
) -> None:
    post(client, f"{path}?{query}" if query else path, content, {})


ADMIN_PATHS = ["/health", "/ready", "/metrics", "/v1/models", "/admin/report", "/admin/reload"]


@settings(FUZZ, max_examples=100)
@given(
    method=st.one_of(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "OPTIONS"])),
    path=st.one_of(
        st.sampled_from(ADMIN_PATHS), st.text(string.ascii_letters + "/._-~", max_size=20)
    ).map(lambda path: path if path.startswith("/") else "/" + path),
    content=st.binary(max_size=100),
)
def test_other_routes_never_get_a_5xx(
    client: httpx.Client, method: str, path: str, content: bytes
) -> None:
    if path in (CHAT, COMPLETIONS) and method == "POST":
        return  # the hot routes have their own runs
    token = "wrong" if path == "/admin/reload" else ADMIN_TOKEN  # a reload would swap settings
    response = client.request(method, path, headers=bearer(token), content=content)
    assert response.status_code != 503 or path != "/ready"
    check_other(response)


@settings(FUZZ, max_examples=100)
@given(
    params=st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(["json", "html", "text", "xml"]) | st.text(max_size=8),
            "since": st.sampled_from(["24h", "0s", "2024-02-30", "9" * 400 + "w"]) | st.text(),
            "x": st.text(max_size=20),
        },
    ),
    token=st.sampled_from([ADMIN_TOKEN, None, "wrong", ADMIN_TOKEN[:-1]]),
)
def test_admin_report_parameters_never_get_a_5xx(
    client: httpx.Client, params: dict[str, str], token: str | None
) -> None:
    response = client.get("/admin/report", params=params, headers=bearer(token))
    assert response.status_code in (200, 400, 401)
    check_other(response)


def bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def check_other(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    event(f"status {response.status_code}")
    if response.status_code >= 400:
        error = response.json()["error"]
        assert sorted(error) == ["code", "message", "param", "type"], error
