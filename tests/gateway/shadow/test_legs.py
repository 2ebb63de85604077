"""Reading both legs of a pair with the same code: bodies and streams."""

from __future__ import annotations

import orjson

from gateway.shadow import legs


def chat_body(text: str, finish: str = "stop") -> bytes:
    return orjson.dumps({
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    })  # fmt: skip


def event(payload: dict[str, object]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def test_body_becomes_a_leg_with_parsed_json() -> None:
    leg = legs.from_body("vllm", chat_body('{"mood": "happy"}'), 12.5)
    assert leg.status == 200
    assert leg.text == '{"mood": "happy"}'
    assert leg.parsed == {"mood": "happy"}
    assert (leg.prompt_tokens, leg.completion_tokens, leg.finish_reason) == (7, 3, "stop")
    assert leg.e2e_ms == 12.5


def test_completion_body_and_custom_parser() -> None:
    body = orjson.dumps({"choices": [{"text": "H", "finish_reason": "stop"}]})
    leg = legs.from_body("trt", body, 1.0, parse=lambda text: {"code": text})
    assert leg.parsed == {"code": "H"}


def test_unreadable_body_is_a_failed_leg() -> None:
    leg = legs.from_body("trt", b"<html>", 1.0)
    assert leg.status == 502
    assert leg.text is None


def test_stream_chunks_give_text_ttft_and_usage() -> None:
    chunks = [
        (10.0, event({"choices": [{"delta": {"role": "assistant", "content": ""}}]})),
        (10.2, event({"choices": [{"delta": {"content": "Chúc "}}]})
         + event({"choices": [{"delta": {"content": "mừng"}}]})),
        (10.5, event({"choices": [{"delta": {}, "finish_reason": "length"}]})),
        (10.6, event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
         + b"data: [DONE]\n\n"),
    ]  # fmt: skip
    leg = legs.from_events("vllm", chunks, started=9.9, ended=10.7)
    assert leg.text == "Chúc mừng"
    assert leg.finish_reason == "length"
    assert leg.completion_tokens == 2
    assert round(leg.ttft_ms or 0, 6) == 300.0
    assert round(leg.e2e_ms or 0, 6) == 800.0


def test_stream_error_event_fails_the_leg() -> None:
    chunks = [(1.0, event({"error": {"message": "engine died"}}) + b"data: [DONE]\n\n")]
    leg = legs.from_events("trt", chunks, 0.5, 1.0)
    assert leg.status == 502
    assert leg.error == "engine died"
    assert leg.text is None


def test_a_body_the_adapter_already_parsed_is_not_parsed_again() -> None:
    answer = orjson.loads(chat_body('{"mood": "sad"}'))
    leg = legs.from_body("vllm", b"not parsed again", 3.0, answer=answer)
    assert (leg.status, leg.text, leg.parsed) == (200, '{"mood": "sad"}', {"mood": "sad"})
