"""Tests for the trtllm-serve stand-in: a real HTTP server that answers as trtllm-serve does.

Each test states a fact of section A of ``backends/TENSORRT_LLM.md`` and checks the running
subprocess against it, reading the wire with ``httpx`` (or the ``openai`` SDK).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tests.engines.hooks import fails_after
from tests.engines.trtllm_serve_engine import TrtllmServeEngine

VIETNAMESE = "Chúc mừng con!"
MOOD = {"type": "regex", "regex": "(vui|buồn)"}
ENVELOPE_KEYS = {"object", "message", "type", "param", "code"}


@pytest.fixture(scope="module")
def engine(trtllm_serve_engine: TrtllmServeEngine) -> TrtllmServeEngine:
    return trtllm_serve_engine


@pytest.fixture(scope="module")
def guided_engine(tiny_model_dir: Path) -> Iterator[TrtllmServeEngine]:
    """`--guided-decoding-backend xgrammar`, served under a name of its own."""
    with TrtllmServeEngine(tiny_model_dir, guided_decoding=True, served_name="tiny-guided") as e:
        yield e


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def http(engine: TrtllmServeEngine) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=engine.url, timeout=60.0) as client:
        yield client


def _chat(content: str, **fields: Any) -> dict[str, Any]:
    return {"model": "any-name", "messages": [{"role": "user", "content": content}], **fields}


def _answer(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def _stream(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    """The raw body of a streamed answer, as text."""
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_bytes()).decode("utf-8")


def _events(raw: str) -> list[Any]:
    """The JSON of each `data:` event, and "[DONE]" as the string."""
    payloads = [event.removeprefix("data: ").strip() for event in raw.split("\n\n") if event]
    return [payload if payload == "[DONE]" else json.loads(payload) for payload in payloads]


def test_unknown_fields_are_400_with_a_bare_error_body(http: httpx.Client) -> None:
    for path, body in (
        ("/v1/chat/completions", _chat("Hi", guided_json={"type": "object"})),
        ("/v1/completions", {"model": "m", "prompt": "Hi", "guided_regex": "a"}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 400
        assert set(response.json()) == {"error"}
        assert "extra_forbidden" in response.json()["error"]
        assert "guided_" in response.json()["error"]


def test_model_validators_answer_like_validation_errors(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=_chat("Hi", stream_options={}))
    assert response.status_code == 400
    assert "stream_options can only be set if stream is true" in response.json()["error"]


def test_errors_in_handlers_use_the_error_response_envelope(http: httpx.Client) -> None:
    body = _chat("Hi", response_format={"type": "regex"})
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json() == {
        "object": "error",
        "message": "response_format.regex is required for response_format.type == 'regex', "
        "but got None.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


def test_omitted_sampling_fields_sample_and_seeds_repeat(http: httpx.Client) -> None:
    body = _chat("Write a haiku about rain", max_tokens=12)
    seeded = {_answer(http, {**body, "seed": 7}) for _ in range(2)}
    assert len(seeded) == 1
    # Not greedy: unseeded requests differ (one of several may repeat another by chance).
    unseeded = {_answer(http, body) for _ in range(4)}
    assert len(unseeded) > 1
    greedy = {_answer(http, {**body, "temperature": 0.0}) for _ in range(3)}
    assert len(greedy) == 1


def test_the_model_name_in_requests_is_not_checked(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=_chat("Hi", model="no-such", max_tokens=2))
    assert response.status_code == 200
    assert response.json()["model"] == "no-such"


def test_response_format_is_dropped_without_guided_decoding(http: httpx.Client) -> None:
    # facts A.3: no guided decoding backend: 200, and the constraint silently dropped
    for seed in range(3):
        body = _chat("How do you feel?", max_tokens=20, seed=seed, response_format=MOOD)
        assert not re.fullmatch("vui|buồn", _answer(http, body))


def test_response_format_is_enforced_with_xgrammar(guided_engine: TrtllmServeEngine) -> None:
    schema = {"type": "object", "properties": {"mood": {"enum": ["vui", "buồn"]}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "mood", "schema": schema}}
    with httpx.Client(base_url=guided_engine.url, timeout=60.0) as client:
        for seed in range(3):
            body = _chat("How do you feel?", max_tokens=20, seed=seed, response_format=MOOD)
            assert re.fullmatch("vui|buồn", _answer(client, body))
        # facts A.3: the OpenAI wrapper {"name", "schema"} is unwrapped to the schema
        answer = json.loads(_answer(client, _chat("Mood?", max_tokens=30, response_format=wrapped)))
        assert answer in ({"mood": "vui"}, {"mood": "buồn"})
        ebnf = {"type": "ebnf", "ebnf": 'root ::= "a"'}
        refused = client.post("/v1/chat/completions", json=_chat("Hi", response_format=ebnf))
        assert refused.status_code == 400
        assert refused.json()["type"] == "BadRequestError"
        assert "stand-in" in refused.json()["message"]


def test_generation_config_auto_takes_the_models_sampling_defaults(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model_dir = tmp_path / "tiny-top-k-1"
    shutil.copytree(tiny_model_dir, model_dir)
    config_path = model_dir / "generation_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config_path.write_text(json.dumps({**config, "top_k": 1}), encoding="utf-8")
    body = _chat("Write a haiku about rain", max_tokens=12)
    with (
        TrtllmServeEngine(model_dir, generation_config="auto") as auto,
        httpx.Client(base_url=auto.url, timeout=60.0) as client,
    ):
        # top_k 1 from the JSON makes unseeded requests greedy...
        assert len({_answer(client, body) for _ in range(3)}) == 1
        # ...unless the request sets top_k itself.
        assert len({_answer(client, {**body, "top_k": 0}) for _ in range(4)}) > 1
    with (
        TrtllmServeEngine(model_dir, generation_config="trtllm") as default,
        httpx.Client(base_url=default.url, timeout=60.0) as client,
    ):
        assert len({_answer(client, body) for _ in range(4)}) > 1


def test_chat_stream_bytes(http: httpx.Client) -> None:
    body = _chat(f"[[force:{VIETNAMESE}]]", max_tokens=30, stream=True)
    raw = _stream(http, "/v1/chat/completions", body)
    first, rest = raw.split("\n\n", 1)
    assert first.startswith("data: {")
    assert first.endswith("} ")  # facts A.5: the first chunk has a space before the blank line
    assert "} \n\n" not in rest
    assert raw.endswith("}\n\ndata: [DONE]\n\n")
    assert '"usage"' not in raw  # no stream_options: no usage
    assert "null" not in raw  # chunks are dumped without their nulls
    events = _events(raw)
    assert events[0]["choices"] == [{"index": 0, "delta": {"role": "assistant"}}]
    deltas = [event["choices"][0]["delta"] for event in events[1:-1]]
    assert all(delta["reasoning_content"] == "" for delta in deltas)
    assert "".join(delta["content"] for delta in deltas) == VIETNAMESE
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert {event["id"] for event in events[:-1]} == {events[0]["id"]}


def test_chat_stream_usage_comes_last_once_stream_options_are_sent(
    http: httpx.Client, tokenizer: PreTrainedTokenizerBase
) -> None:
    body = _chat(f"[[force:{VIETNAMESE}]]", max_tokens=30, stream=True, stream_options={})
    events = _events(_stream(http, "/v1/chat/completions", body))
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    completion_tokens = len(tokenizer.encode(VIETNAMESE, add_special_tokens=False))
    assert usage_chunk["usage"]["completion_tokens"] == completion_tokens
    assert usage_chunk["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}
    assert all("usage" not in event for event in events[:-2])


def test_openai_sdk_reads_the_stream_and_its_usage(engine: TrtllmServeEngine) -> None:
    with openai.OpenAI(base_url=engine.url + "/v1", api_key="unused", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": f"[[force:{VIETNAMESE}]]"}],
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == VIETNAMESE
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > chunks[-1].usage.completion_tokens > 0


def test_an_engine_error_cuts_a_chat_stream(engine: TrtllmServeEngine) -> None:
    parts: list[bytes] = []
    body = _chat(fails_after(3), max_tokens=30, stream=True)
    with (
        httpx.Client(base_url=engine.url, timeout=60.0) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # the connection drops mid-body
            parts.extend(response.iter_bytes())  # keeps what came before the drop
    received = b"".join(parts)
    assert received.startswith(b"data: ")
    assert b"[DONE]" not in received
    assert b'"error"' not in received
    assert len(_events(received.decode())) == 4  # the role chunk and three tokens


def test_an_engine_error_ends_a_completion_stream_with_an_error_event(http: httpx.Client) -> None:
    body = {"model": "m", "prompt": fails_after(2), "max_tokens": 30, "stream": True}
    events = _events(_stream(http, "/v1/completions", body))
    assert len(events) > 3
    error = events[-3]["error"] if events[-1] == events[-2] == "[DONE]" else events[-2]["error"]
    assert error["type"] == "server_error"
    assert error["code"] is None
    assert "injected fault" in error["message"]
    assert events[0]["usage"] is None  # completion chunks keep their nulls


def test_an_engine_error_without_streaming_is_a_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json=_chat(fails_after(1), max_tokens=5))
    assert response.status_code == 400
    assert set(response.json()) == ENVELOPE_KEYS
    assert "injected fault" in response.json()["message"]


def test_detokenize_false_returns_token_ids_and_no_text(
    http: httpx.Client, tokenizer: PreTrainedTokenizerBase
) -> None:
    expected = tokenizer.encode("Xin chào", add_special_tokens=False)
    body = {"model": "m", "prompt": "[[force:Xin chào]]", "max_tokens": 20}
    plain = http.post("/v1/completions", json=body).json()["choices"][0]
    assert (plain["text"], plain["token_ids"]) == ("Xin chào", None)
    ids_only = http.post("/v1/completions", json={**body, "detokenize": False}).json()
    assert ids_only["choices"][0]["text"] == ""
    assert ids_only["choices"][0]["token_ids"] == expected
    assert ids_only["prompt_token_ids"] is None
    assert ids_only["usage"]["completion_tokens"] == len(expected)
    streamed = _events(
        _stream(http, "/v1/completions", {**body, "detokenize": False, "stream": True})
    )
    chunks = [event["choices"][0] for event in streamed[:-1]]
    assert all(chunk["text"] == "" for chunk in chunks)
    assert [token for chunk in chunks for token in chunk["token_ids"]] == expected


def test_prompt_token_ids_skip_the_chat_template(
    http: httpx.Client, tokenizer: PreTrainedTokenizerBase
) -> None:
    ids = tokenizer.encode("[[force:Xin chào]]", add_special_tokens=False)
    body = _chat(f"[[force:{VIETNAMESE}]]", max_tokens=20, prompt_token_ids=ids)
    response = http.post("/v1/chat/completions", json=body).json()
    assert response["choices"][0]["message"]["content"] == "Xin chào"
    assert response["usage"]["prompt_tokens"] == len(ids)
    templated = http.post("/v1/chat/completions", json=_chat("[[force:Xin chào]]", max_tokens=20))
    assert templated.json()["usage"]["prompt_tokens"] > len(ids)


def test_non_streamed_chat_keeps_every_null(http: httpx.Client) -> None:
    answer = http.post("/v1/chat/completions", json=_chat("Hi", max_tokens=3)).json()
    assert answer["object"] == "chat.completion"
    assert answer["prompt_token_ids"] is None
    assert answer["prompt_token_ids_b64"] is None
    choice = answer["choices"][0]
    assert choice["message"]["reasoning_content"] == ""
    assert choice["message"]["tool_calls"] == []
    assert choice["logprobs"] is None
    assert choice["stop_reason"] is None
    assert choice["finish_reason"] == "length"
    usage = answer["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3


def test_chat_template_kwargs_the_template_never_reads_are_refused(http: httpx.Client) -> None:
    body = _chat("Hi", max_tokens=2, chat_template_kwargs={"enable_thinking": False})
    refused = http.post("/v1/chat/completions", json=body)
    assert refused.status_code == 400
    assert "['enable_thinking'] are not referenced" in refused.json()["message"]
    # Phi-3's template reads eos_token (and the guard always lets renderer parameters through)
    read = _chat("Hi", max_tokens=2, chat_template_kwargs={"eos_token": "<|endoftext|>"})
    assert http.post("/v1/chat/completions", json=read).status_code == 200


def test_endpoints(
    engine: TrtllmServeEngine, guided_engine: TrtllmServeEngine, tiny_model_dir: Path
) -> None:
    with httpx.Client(base_url=engine.url, timeout=30.0) as client:
        models = client.get("/v1/models").json()
        health = client.get("/health")
        assert (health.status_code, health.content) == (200, b"")
        assert set(client.get("/version").json()) == {"version"}
        assert client.get("/metrics").json() == []
        tokens = client.post("/_internal/tokenize", json={"prompt": "Xin chào"}).json()
    assert models["object"] == "list"
    [card] = models["data"]
    assert card["id"] == tiny_model_dir.name
    assert (card["object"], card["owned_by"]) == ("model", "tensorrt_llm")
    assert isinstance(card["created"], int)
    assert tokens["count"] == len(tokens["tokens"]) > 0
    with httpx.Client(base_url=guided_engine.url, timeout=30.0) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-guided"


def test_requests_are_served_while_another_generates(engine: TrtllmServeEngine) -> None:
    long = {"model": "m", "prompt": "Hi", "max_tokens": 1500, "ignore_eos": True, "stream": True}
    with (
        httpx.Client(base_url=engine.url, timeout=60.0) as streaming,
        httpx.Client(base_url=engine.url, timeout=30.0) as other,
        streaming.stream("POST", "/v1/completions", json=long) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert other.get("/health").status_code == 200
        assert _answer(other, _chat("Hi", max_tokens=2))
        assert next(lines) == ""  # the long answer is still streaming
