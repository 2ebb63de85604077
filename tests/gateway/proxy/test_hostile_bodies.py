"""Hostile request bodies at the parser: each is a 400 that names the field, never its value."""

from __future__ import annotations

import json

import orjson
import pytest

from backends.base import Route
from backends.errors import InvalidRequest
from gateway.proxy.parsing import MAX_DEPTH, nests_deeper, parse_body

CHILD = "con tên là Bống, nhà con ở số 12"  # stands for a child's message in every test
USER = {"role": "user", "content": CHILD}


def chat(**fields: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [USER], **fields})


def chat_with(field: str, literal: bytes) -> bytes:
    """A body with one field written as raw JSON (orjson does not write integers past 64 bits)."""
    return chat()[:-1] + b', "' + field.encode() + b'": ' + literal + b"}"


def nested(depth: int) -> object:
    """`depth` levels of arrays, the innermost holding the child's text."""
    value: object = [CHILD]
    for _ in range(depth - 1):
        value = [value]
    return value


def refused(body: bytes, route: Route = Route.CHAT) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(route, body)
    assert CHILD not in caught.value.message
    assert caught.value.param is None or CHILD not in caught.value.param
    return caught.value


NAN_BODY = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}'


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (chat(max_tokens=10**7), "max_tokens", "less_than_equal"),
        (chat(max_tokens=-1), "max_tokens", "greater_than_equal"),
        (chat_with("max_tokens", b"1" + b"0" * 30), "max_tokens", "int_type"),  # a float to orjson
        (chat(seed=2**63), "seed", "less_than_equal"),
        (chat_with("seed", b"-9223372036854775809"), "seed", "int_type"),
        (chat(top_k=2**31), "top_k", "less_than_equal"),
        (chat_with("priority", b"1" + b"0" * 30), "priority", "int_type"),
        (chat(stop_token_ids=[-1]), "stop_token_ids.0", "greater_than_equal"),
        (chat(logit_bias={"5": 1000.0}), "logit_bias.5", "less_than_equal"),
        (chat(temperature=-0.5), "temperature", "greater_than_equal"),
        (chat(temperature=CHILD), "temperature", "float_type"),
        (chat(top_p=0), "top_p", "greater_than"),
        (chat(n=True), "n", "int_type"),
        (chat(stream=1), "stream", "bool_type"),
        (chat(stop=[CHILD] * 65), "stop", "too_long"),
        (
            chat(stream_options={"include_usage": CHILD}),
            "stream_options.include_usage",
            "bool_type",
        ),
        (chat(metadata={"note": 1}), "metadata.note", "string_type"),
        (chat(tool_choice=5), "tool_choice", "string_type"),
        (chat(**{"frobnicate": CHILD}), "frobnicate", "extra_forbidden"),
        (orjson.dumps({"model": "m", "messages": []}), "messages", "too_short"),
        (orjson.dumps({"model": "m", "messages": {}}), "messages", "list_type"),
        (orjson.dumps({"model": "m", "messages": [CHILD]}), "messages.0", "model_type"),
        (
            orjson.dumps({"model": "m", "messages": [{"role": "user"}]}),
            "messages.0.content",
            "missing",
        ),
        (
            orjson.dumps({"model": "m", "messages": [{"role": "system", "content": None}]}),
            "messages.0.content",
            "missing",
        ),
        (
            orjson.dumps({"model": "m", "messages": [{"role": "user", "content": []}]}),
            "messages.0.content",
            "too_short",
        ),
        (
            orjson.dumps({"model": "m", "messages": [{"role": "user", "content": 7}]}),
            "messages.0.content",
            "string_type",
        ),
        (
            orjson.dumps({"model": "m", "messages": [{"role": CHILD, "content": CHILD}]}),
            "messages.0.role",
            "literal_error",
        ),
        (orjson.dumps({"model": "", "messages": [USER]}), "model", "string_too_short"),
        (orjson.dumps({"model": "m" * 513, "messages": [USER]}), "model", "string_too_long"),
        (orjson.dumps({"model": ["m"], "messages": [USER]}), "model", "string_type"),
        (NAN_BODY, None, "invalid_json"),
        (NAN_BODY.replace(b"NaN", b"Infinity"), None, "invalid_json"),
        (NAN_BODY.replace(b"NaN", b"-Infinity"), None, "invalid_json"),
        (NAN_BODY.replace(b"NaN", b"1e999"), None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"\xef\xbb\xbf" + chat(), None, "invalid_json"),  # a byte order mark
        (chat().replace(b"B", b"\xff\xfe"), None, "invalid_json"),  # invalid UTF-8
        (chat().replace(b"B", b"\xc0\xaf"), None, "invalid_json"),  # overlong UTF-8
        (chat().replace(b"B", b"\\ud800"), None, "invalid_json"),  # a lone surrogate
        (chat() + b"{}", None, "invalid_json"),  # two documents
        (chat()[:-1], None, "invalid_json"),  # cut short
        (b"[" + chat() + b"]", None, "invalid_type"),
        (orjson.dumps(CHILD), None, "invalid_type"),
        (b"null", None, "invalid_type"),
        (chat(structured_outputs={"json": {"schema": nested(MAX_DEPTH)}}), None, "too_deep"),
        (chat(tools=[{"type": "function", "function": nested(200)}]), None, "too_deep"),
        (
            orjson.dumps({"model": "m", "messages": [{**USER, "extra": nested(70)}]}),
            None,
            "too_deep",
        ),
    ],
)
def test_hostile_chat_body_is_a_400_naming_the_field(
    body: bytes, param: str | None, code: str
) -> None:
    error = refused(body)
    assert error.status_code == 400
    assert (error.param, error.code) == (param, code)
    assert error.error_type == "invalid_request_error"


@pytest.mark.parametrize(
    ("prompt", "param", "code"),
    [
        ([], "prompt", "too_short"),
        ([[]], "prompt.0", "too_short"),
        ([-1], "prompt.0", "greater_than_equal"),
        ([2**40], "prompt.0", "less_than_equal"),
        ([1.5], "prompt.0", "string_type"),
        ({"text": CHILD}, "prompt", "string_type"),
    ],
)
def test_hostile_completion_prompt_is_a_400(prompt: object, param: str, code: str) -> None:
    error = refused(orjson.dumps({"model": "m", "prompt": prompt}), Route.COMPLETIONS)
    assert (error.param, error.code) == (param, code)


def test_a_union_error_names_the_field_not_pydantic_branches() -> None:
    error = refused(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": 7}]}))
    expected = "Input should be a valid string or an array"
    assert error.message == f"invalid 'messages.0.content': {expected}"
    error = refused(chat(stop=["x"] * 65))
    assert error.message.startswith("invalid 'stop': List should have at most 64 items")


def test_a_field_name_that_is_text_is_not_repeated() -> None:
    error = refused(chat(**{CHILD: 1}))
    assert (error.param, error.code) == ("*", "extra_forbidden")
    assert error.message == "unknown field (its name not repeated)"
    error = refused(chat(logit_bias={CHILD: "x"}))
    assert error.param == "logit_bias.*"


@pytest.mark.parametrize("value", [[CHILD], {"text": CHILD}, -1.5, True, "x" * 300])
@pytest.mark.parametrize(
    "field", ["temperature", "max_tokens", "user", "seed", "response_format", "stream_options"]
)
def test_error_messages_never_repeat_values(field: str, value: object) -> None:
    error = refused(chat(**{field: value}))
    assert str(value) not in error.message
    assert str(error.param).startswith(field)


@pytest.mark.parametrize(
    "body",
    [
        chat(structured_outputs={"json": {"schema": nested(MAX_DEPTH - 3)}}),  # 3 objects + 61
        orjson.dumps({"model": "m", "messages": [USER] * 500}),  # many brackets, all shallow
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": CHILD}]}] * 100),
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"x": nested(20)}},
            }
        ),
    ],
)
def test_deep_enough_but_not_too_deep_is_accepted(body: bytes) -> None:
    assert parse_body(Route.CHAT, body).payload["model"] == "m"


def test_nesting_depth_counts_objects_and_arrays() -> None:
    assert not nests_deeper({"a": [1, {"b": []}]}, 4)
    assert nests_deeper({"a": [1, {"b": []}]}, 3)
    assert not nests_deeper(nested(MAX_DEPTH))
    assert nests_deeper(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    "body",
    [
        chat(messages=[{"role": "user", "content": ""}]),  # OpenAI takes empty text too
        chat(messages=[{"role": "assistant", "content": CHILD}, USER, USER]),  # any order
        chat(messages=[USER, {"role": "system", "content": CHILD}]),
        chat(messages=[{"role": "assistant", "content": None, "tool_calls": []}, USER]),
        chat(messages=[{"role": "user", "content": "\u0000" + CHILD * 10_000}]),
        chat(seed=-1, temperature=0, max_tokens=1_000_000, top_k=-1),
    ],
)
def test_odd_but_valid_bodies_are_left_to_the_engine(body: bytes) -> None:
    """Role order and empty text are the chat template's business; the engine's own 400, if
    any, reaches the client with its status."""
    parse_body(Route.CHAT, body)


@pytest.mark.parametrize("extra", [b"", b', "logprobs": true'])  # plain, and not
def test_duplicate_keys_read_the_same_in_the_model_and_the_payload(extra: bytes) -> None:
    body = b'{"model": "m", "model": "n", "max_tokens": 0, "max_tokens": 5, "messages": []'
    body += b', "messages": [{"role": "user", "content": "x"}]' + extra + b"}"
    parsed = parse_body(Route.CHAT, body)
    assert (parsed.payload["model"], parsed.model) == ("n", "n")
    assert parsed.payload["max_tokens"] == 5  # what the model validated: 0 would be a 400
    assert json.loads(body) == parsed.payload  # as the engines read it (FastAPI: json.loads)
