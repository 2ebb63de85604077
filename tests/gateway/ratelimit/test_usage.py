"""gateway.ratelimit.usage: the tokens an answer used, from its usage or, for a stream that
carries none, the estimate."""

from __future__ import annotations

import orjson

from gateway.ratelimit.usage import BYTES_PER_PROMPT_TOKEN, completed, streamed, used


def event(data: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def test_usage_is_prompt_plus_completion() -> None:
    assert used({"usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}}) == 17
    assert used({"usage": {"prompt_tokens": 12, "completion_tokens": 5}}) == 17
    assert used({"usage": None}) is None
    assert used({"choices": []}) is None


def test_a_completion_is_read_from_its_body_when_the_adapter_kept_no_parsed_answer() -> None:
    body = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    assert completed(None, body) == 7
    assert completed({"usage": {"total_tokens": 9}}, body) == 9
    assert completed(None, b"not json") == 0


def test_a_stream_with_usage_is_charged_its_usage() -> None:
    chunks = [
        event({"choices": [{"delta": {"content": "xin"}}], "usage": None}),
        event({"choices": [{"delta": {"content": " chào"}}]})
        + event({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 2}})
        + b"data: [DONE]\n\n",
    ]
    assert streamed(chunks, b"{}" * 100) == 22


def test_a_stream_without_usage_is_charged_the_estimate() -> None:
    request = b"x" * 400
    chunks = [event({"choices": [{"delta": {"content": word}}]}) for word in ("a", "b", "c")]
    assert streamed([*chunks, b"data: [DONE]\n\n"], request) == 3 + 400 // BYTES_PER_PROMPT_TOKEN
