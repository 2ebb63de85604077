"""Plain bodies: every body the checks call plain is one the strict models accept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backends.base import Route
from gateway.proxy.parsing import SCHEMAS, parse_body
from gateway.proxy.plain_bodies import PLAIN, ROLES, is_plain

USER = {"role": "user", "content": "Con vừa làm xong bài toán!"}

# Values on both sides of every bound the checks and the models draw, and of every type.
EDGE_VALUES: list[object] = [
    0, 1, -1, 2, 128, 129, 1_000_000, 1_000_001, 2**63 - 1, -(2**63), 0.0, 1e-300, 1.0, 2.0,
    2.5, -0.5, 1.8446744073709552e19, True, False, None, "", "m", "x" * 256, "x" * 257,
    "x" * 512, "x" * 513, [], ["x"], ["x"] * 64, ["x"] * 65, [1], {}, {"type": "text"},
    {"type": "json_object"}, {"type": "json_schema"}, {"type": "text", "x": 1}, {"type": []},
    {"include_usage": True}, {"include_usage": None}, {"continuous_usage_stats": True},
    [USER], [{**USER, "name": "n"}], [{**USER, "name": None}], [{**USER, "extra": 1}],
    [{**USER, "tool_calls": "x"}],
    [{"role": "robot", "content": "x"}], [{"role": [], "content": "x"}],
    [{"role": "tool", "content": None}],
    [{"role": "assistant", "tool_calls": []}], [USER, "x"],
]  # fmt: skip
EDGES = st.sampled_from(EDGE_VALUES)
SCALARS = st.one_of(
    EDGES,
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from([*sorted(ROLES), "robot"])},
        optional={
            "content": st.one_of(st.text(max_size=8), st.none(), st.just([{"type": "text"}])),
            "name": st.one_of(st.text(max_size=8), st.integers()),
            "tool_calls": st.just([]),
        },
    ),
    max_size=3,
)
VALUES = st.one_of(
    SCALARS,
    MESSAGES,
    st.lists(SCALARS, max_size=3),
    st.lists(st.just("x"), min_size=63, max_size=66),  # `stop` holds at most 64
    st.dictionaries(
        st.sampled_from(["type", "include_usage", "continuous_usage_stats", "json_schema"]),
        st.one_of(st.sampled_from(["text", "json_object", "json_schema", "xml"]), st.booleans()),
        max_size=2,
    ),
)
KEYS = st.sampled_from(sorted({*PLAIN[Route.CHAT][0], *PLAIN[Route.COMPLETIONS][0], "top_k"}))


def plain_bodies(route: Route) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies with the required fields valid, and other fields of any value."""
    head = (
        {"model": "m", "messages": [USER]} if route is Route.CHAT else {"model": "m", "prompt": "x"}
    )
    return st.builds(lambda extra: {**head, **extra}, st.dictionaries(KEYS, VALUES, max_size=4))


@pytest.mark.parametrize("route", list(Route))
def test_each_edge_value_is_plain_only_where_the_model_takes_it(route: Route) -> None:
    """Every checked field with every edge value, one at a time: the checks are per field."""
    checks = PLAIN[route][0]
    head = (
        {"model": "m", "messages": [USER]} if route is Route.CHAT else {"model": "m", "prompt": "x"}
    )
    plain = 0
    for key in checks:
        for value in EDGE_VALUES:
            payload = {**head, key: value}
            if is_plain(route, payload):
                plain += 1
                request = SCHEMAS[route].model_validate(payload)
                assert request.model == payload["model"], (key, value)
    assert plain > 2 * len(checks)  # each field was tried with values it takes


@pytest.mark.parametrize("route", list(Route))
@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_plain_body_is_one_the_model_accepts(route: Route, data: st.DataObject) -> None:
    payload = data.draw(st.one_of(plain_bodies(route), st.dictionaries(KEYS, VALUES)))
    if not is_plain(route, payload):
        event("not plain")
        return
    request = SCHEMAS[route].model_validate(payload)  # raises if the checks let through too much
    assert (request.model, request.stream) == (payload["model"], payload.get("stream", False))


@pytest.mark.parametrize("route", list(Route))
def test_every_check_names_a_field_of_the_model(route: Route) -> None:
    checks, required = PLAIN[route]
    fields = SCHEMAS[route].model_fields
    names = {field.alias or name for name, field in fields.items()}
    assert set(checks) <= names
    assert all(fields[key].is_required() for key in required)


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "m", "messages": [USER]},
        {
            "model": "pika-mood",
            "messages": [{"role": "system", "content": "", "name": "pika"}, USER],
            "max_tokens": 32,
            "temperature": 0,
            "top_p": 1,
            "seed": -1,
            "stop": ["\n"],
            "user": "u-1",
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_object"},
        },
    ],
)
def test_the_bodies_clients_send_are_plain(payload: dict[str, Any]) -> None:
    assert is_plain(Route.CHAT, payload)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", True),  # a bool is an int to Python, not to the strict model
        ("max_tokens", 1.0),
        ("temperature", 2.5),
        ("top_p", 0),
        ("n", 129),
        ("stop", ["x"] * 65),
        ("user", "x" * 257),
        ("messages", [{"role": "user", "content": [{"type": "text", "text": "x"}]}]),
        ("messages", [{"role": "assistant", "content": None, "tool_calls": []}]),
        ("messages", [{"role": "user", "content": "x", "name": 5}]),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "t"}}),
        ("stream_options", {"include_usage": True, "continuous_usage_stats": True}),
        ("top_k", 1),  # valid, but the model decides it
    ],
)
def test_other_shapes_are_left_to_the_model(field: str, value: object) -> None:
    assert not is_plain(Route.CHAT, {"model": "m", "messages": [USER], field: value})


def test_a_body_without_its_required_fields_is_not_plain() -> None:
    assert not is_plain(Route.CHAT, {"model": "m"})
    assert not is_plain(Route.COMPLETIONS, {"model": "m", "messages": [USER]})


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}',
        b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 1}',
    ],
)
def test_both_paths_parse_alike(body: bytes) -> None:
    parsed = parse_body(Route.CHAT, body)
    request = SCHEMAS[Route.CHAT].model_validate(parsed.payload)
    assert (parsed.model, parsed.stream) == (request.model, request.stream)


def test_a_body_the_model_refuses_is_never_plain() -> None:
    with pytest.raises(ValidationError):
        SCHEMAS[Route.CHAT].model_validate({"model": "", "messages": [USER]})
    assert not is_plain(Route.CHAT, {"model": "", "messages": [USER]})
