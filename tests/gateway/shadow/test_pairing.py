"""gateway.shadow.pairing: a shadowed request's answers made into a pair, without servers."""

from __future__ import annotations

import orjson
import pytest

from backends.arrivals import Arrivals
from backends.base import Route, UpstreamRequest
from gateway.shadow.pairing import PrimaryOutcome, pair_of, params_of, primary_leg
from gateway.shadow.pairs import Leg

SCHEMA = {"type": "object", "properties": {"mood": {"enum": ["happy", "sad"]}}}


def answer(text: str) -> bytes:
    message = {"role": "assistant", "content": text}
    return orjson.dumps({"choices": [{"message": message, "finish_reason": "stop"}]})


def test_params_are_what_the_request_asked_for() -> None:
    asked = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    payload = {
        "stream": True, "max_completion_tokens": 9, "max_tokens": 50, "temperature": 0,
        "stop": "END", "response_format": asked,
    }  # fmt: skip
    params = params_of(payload)
    assert (params.stream, params.max_tokens, params.temperature) == (True, 9, 0)
    assert (params.stop, params.schema, params.response_format) == (("END",), SCHEMA, "json_schema")
    plain = params_of({"stop": ["a", "b"]}, task_schema=SCHEMA)  # a task alias's own schema
    assert (plain.stop, plain.schema, plain.max_tokens, plain.stream) == (
        ("a", "b"),
        SCHEMA,
        None,
        False,
    )


def test_the_primary_leg_is_read_from_what_the_proxy_handed_over() -> None:
    ok = primary_leg("vllm", PrimaryOutcome(200, 1.0, 1.25, body=answer("hi")), stream=False)
    assert (ok.status, ok.text, ok.e2e_ms) == (200, "hi", 250.0)
    cut = primary_leg("vllm", PrimaryOutcome(499, 1.0, 1.5), stream=False)
    assert (cut.status, cut.text, cut.error) == (499, None, "failed")
    chunk = b'data: {"choices": [{"delta": {"content": "yo"}, "finish_reason": "stop"}]}\n\n'
    chunks = Arrivals()
    chunks.add(1.1, chunk)
    streamed = primary_leg("vllm", PrimaryOutcome(200, 1.0, 2.0, chunks=chunks), True)
    assert streamed.text == "yo"
    assert streamed.ttft_ms == pytest.approx(100.0)


def test_a_pair_keeps_the_text_only_when_asked_and_is_judged_on_its_schema_either_way() -> None:
    payload = {
        "model": "m",
        "response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
    }
    raw = orjson.dumps(payload)
    upstream = UpstreamRequest(Route.CHAT, raw, payload, "tagger", "r1", False)
    good, bad = Leg("vllm", 200, '{"mood": "happy"}'), Leg("trt", 200, '{"mood": "angry"}')
    hidden = pair_of("shadow", upstream, params_of(payload), good, bad, "v2", keep_text=False)
    assert hidden.request is None
    assert len(hidden.request_hash) == 64
    assert (hidden.kind, hidden.public_model, hidden.path) == (
        "shadow",
        "tagger",
        "/v1/chat/completions",
    )
    assert hidden.extra == {"primary_schema_valid": True, "candidate_schema_valid": False}
    assert hidden.prompt_version == "v2"
    kept = pair_of("noise", upstream, params_of({}), good, good, None, keep_text=True)
    assert kept.request == raw.decode()
    assert kept.extra == {}  # no structured output asked for: nothing to judge
    assert kept.pair_id != hidden.pair_id
