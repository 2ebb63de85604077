"""Request validation: every bad body is a 400 that names the field."""

from __future__ import annotations

import pytest

from backends.base import Route
from backends.errors import InvalidRequest, MalformedJSON
from gateway.proxy.parsing import parse_body

CHAT = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]'


def chat(extra: str = "") -> bytes:
    return CHAT + (b", " + extra.encode() if extra else b"") + b"}"


def test_valid_chat_with_vllm_extensions() -> None:
    parsed = parse_body(
        Route.CHAT,
        chat(
            '"top_k": 1, "min_tokens": 2, "repetition_penalty": 1.1, "seed": 7, "stop": ["x"],'
            '"logprobs": true, "structured_outputs": {"choice": ["a", "b"]},'
            '"response_format": {"type": "json_schema",'
            ' "json_schema": {"name": "t", "schema": {}}},'
            '"stream": true, "stream_options": {"include_usage": true}'
        ),
    )
    assert parsed.stream is True
    assert parsed.payload["structured_outputs"] == {"choice": ["a", "b"]}


def test_valid_completion() -> None:
    parsed = parse_body(Route.COMPLETIONS, b'{"model": "m", "prompt": [1, 2], "max_tokens": 3}')
    assert (parsed.model, parsed.stream) == ("m", False)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (chat('"temperature": "hot"'), "temperature", "valid number"),
        (chat('"temperature": -1'), "temperature", "greater than or equal to 0"),
        (chat('"max_tokens": 0'), "max_tokens", "greater than or equal to 1"),
        (chat('"max_tokens": 100000000'), "max_tokens", "less than or equal"),
        (chat('"n": 1.5'), "n", "valid integer"),
        (chat('"stream": "yes"'), "stream", "valid boolean"),
        (chat('"frobnicate": 1'), "frobnicate", "unknown field"),
        (b'{"model": "m", "messages": []}', "messages", "at least 1"),
        (b'{"model": "m"}', "messages", "is required"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "is required"),
        (b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}', "messages.0.role", ""),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', "model", "valid string"),
    ],
)
def test_invalid_fields_name_the_param(body: bytes, param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(Route.CHAT, body)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert fragment in caught.value.message


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe{}", b'{"a": NaN}', b"[1]"])
def test_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_body(Route.CHAT, body)
    assert caught.value.status_code == 400


def test_malformed_json_message_does_not_echo_the_body() -> None:
    with pytest.raises(MalformedJSON) as caught:
        parse_body(Route.CHAT, b'{"model": "secret child text')
    assert "secret" not in caught.value.message
