"""The gateway in front of a real vLLM server, driven by the official openai SDK.

At temperature 0 the gateway must answer exactly what vLLM answers directly.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.base import Completion, Route, UpstreamRequest
from backends.vllm import VllmSettings, create
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You tag moods."},
    {"role": "user", "content": "Con làm đúng rồi! 5 + 7 = 12"},
]
SCHEMA = {
    "type": "object",
    "properties": {"mood": {"type": "string", "enum": ["happy", "sad"]}},
    "required": ["mood"],
}


@pytest.fixture(scope="module")
def gateway(vllm_engine: VllmEngine) -> Iterator[ThreadedServer]:
    settings = Settings(backends={"vllm": VllmSettings(url=vllm_engine.url)}, primary="vllm")
    with ThreadedServer(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def via_gateway(gateway: ThreadedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def direct(vllm_engine: VllmEngine) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vllm_engine.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def both(direct: openai.OpenAI, via: openai.OpenAI, call: str, **kwargs: Any) -> tuple[Any, Any]:
    """The same request, straight to vLLM and through the gateway."""
    first: Any = direct
    second: Any = via
    for part in call.split("."):
        first, second = getattr(first, part), getattr(second, part)
    return first(**kwargs), second(**kwargs)


def test_chat_equals_direct(direct: openai.OpenAI, via_gateway: openai.OpenAI) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "chat.completions.create",
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,
    )
    assert theirs.choices[0].message.content == mine.choices[0].message.content
    assert theirs.choices[0].finish_reason == mine.choices[0].finish_reason
    assert theirs.usage == mine.usage
    assert theirs.model == TINY_MODEL


def test_completion_equals_direct(direct: openai.OpenAI, via_gateway: openai.OpenAI) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "completions.create",
        model=TINY_MODEL,
        prompt="Pika nói: xin chào",
        temperature=0,
        max_tokens=16,
    )
    assert theirs.choices[0].text == mine.choices[0].text
    assert theirs.usage == mine.usage


def test_streamed_chat_equals_direct_and_keeps_usage(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    kwargs: dict[str, Any] = dict(
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    mine, theirs = both(direct, via_gateway, "chat.completions.create", **kwargs)
    mine_chunks, their_chunks = list(mine), list(theirs)
    text = "".join(c.choices[0].delta.content or "" for c in their_chunks if c.choices)
    assert text == "".join(c.choices[0].delta.content or "" for c in mine_chunks if c.choices)
    assert len(their_chunks) == len(mine_chunks) > 3
    reasons = [
        [c.choices[0].finish_reason for c in cs if c.choices] for cs in (mine_chunks, their_chunks)
    ]
    assert reasons[1] == reasons[0]
    assert reasons[1][-1] in ("stop", "length")
    assert their_chunks[-1].usage is not None
    assert their_chunks[-1].usage == mine_chunks[-1].usage


def test_streamed_completion_equals_direct(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "completions.create",
        model=TINY_MODEL,
        prompt="Một, hai, ba",
        temperature=0,
        max_tokens=12,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in theirs) == "".join(c.choices[0].text for c in mine)


def test_stream_relays_done_marker(gateway: ThreadedServer) -> None:
    body = {
        "model": TINY_MODEL,
        "messages": MESSAGES,
        "max_tokens": 5,
        "temperature": 0,  # greedy, so no sampled end-of-text cuts the answer short
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 5


def test_json_schema_response_format_equals_direct(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "mood", "schema": SCHEMA}}
    mine, theirs = both(
        direct,
        via_gateway,
        "chat.completions.create",
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=40,
        response_format=response_format,
    )
    assert theirs.choices[0].message.content == mine.choices[0].message.content
    assert theirs.choices[0].message.content.lstrip().startswith("{")


def test_vllm_structured_outputs_choice_equals_direct(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "chat.completions.create",
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=10,
        extra_body={"structured_outputs": {"choice": ["vui", "buồn", "tự hào"]}},
    )
    assert theirs.choices[0].message.content == mine.choices[0].message.content
    assert theirs.choices[0].message.content in {"vui", "buồn", "tự hào"}


def test_vllm_sampling_extensions_pass_through(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "chat.completions.create",
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0.8,
        seed=42,
        max_tokens=12,
        extra_body={"top_k": 5, "min_tokens": 12, "repetition_penalty": 1.3},
    )
    assert theirs.choices[0].message.content == mine.choices[0].message.content
    assert theirs.usage.completion_tokens == 12


def test_logprobs_and_stop_pass_through(direct: openai.OpenAI, via_gateway: openai.OpenAI) -> None:
    mine, theirs = both(
        direct,
        via_gateway,
        "chat.completions.create",
        model=TINY_MODEL,
        messages=MESSAGES,
        temperature=0,
        max_tokens=12,
        logprobs=True,
        top_logprobs=3,
        stop=["\n\n"],
    )
    assert theirs.choices[0].logprobs is not None
    assert len(theirs.choices[0].logprobs.content[0].top_logprobs) == 3
    assert theirs.choices[0].logprobs == mine.choices[0].logprobs
    assert theirs.choices[0].message.content == mine.choices[0].message.content


def test_models_lists_the_served_name(via_gateway: openai.OpenAI) -> None:
    assert [model.id for model in via_gateway.models.list()] == [TINY_MODEL]


def test_unknown_model_is_not_found(via_gateway: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        via_gateway.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def test_vllm_rejection_passes_through_with_its_message(
    direct: openai.OpenAI, via_gateway: openai.OpenAI
) -> None:
    kwargs: dict[str, Any] = dict(model=TINY_MODEL, messages=MESSAGES, max_tokens=5000)
    with pytest.raises(openai.BadRequestError) as from_vllm:
        direct.chat.completions.create(**kwargs)
    with pytest.raises(openai.BadRequestError) as from_gateway:
        via_gateway.chat.completions.create(**kwargs)
    assert from_gateway.value.message == from_vllm.value.message


def test_ready_reports_vllm(gateway: ThreadedServer) -> None:
    response = httpx.get(gateway.url + "/ready")
    assert response.status_code == 200
    assert response.json()["backends"]["vllm"]["served_model"] == TINY_MODEL


def test_cut_stream_stops_vllm_generating(
    vllm_engine: VllmEngine, via_gateway: openai.OpenAI
) -> None:
    """A stream cut after its first token leaves vLLM's 2,000-token request unfinished.

    A cut proves something only if vLLM was not nearly done by then. On two busy cores its API
    server can send the first chunks late, after the engine generated all 2,000 tokens (about
    3 s): such an attempt says nothing, and is made again.
    """

    def finished_by_length() -> float:
        return vllm_engine.metric("vllm:request_success_total", {"finished_reason": "length"})

    def generated() -> float:
        return vllm_engine.metric("vllm:generation_tokens_total")

    long: dict[str, Any] = dict(
        model=TINY_MODEL, messages=MESSAGES, max_tokens=2000, extra_body={"ignore_eos": True}
    )
    for _ in range(3):
        before, tokens_before = finished_by_length(), generated()
        stream = via_gateway.chat.completions.create(stream=True, **long)
        for index, _chunk in enumerate(stream):
            if index == 1:  # the role chunk, then one token
                break
        at_cut = generated() - tokens_before
        stream.close()
        # vLLM has stopped, by the abort or at 2,000 tokens, once its token counter stands
        # still; only then is the finish counter final.
        tokens = settled(generated, above=tokens_before) - tokens_before
        if at_cut < 1000:
            break
    else:
        pytest.fail("vLLM was nearly done before each cut: too busy a machine to tell")
    assert finished_by_length() == before, f"vLLM generated {tokens:.0f} of 2,000 tokens"
    assert tokens < 2000

    # The counter does move for a request that runs to its length, so the check can fail.
    via_gateway.chat.completions.create(**{**long, "max_tokens": 20})
    deadline = time.monotonic() + 5
    while finished_by_length() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert finished_by_length() == before + 1


def settled(read: Callable[[], float], above: float, quiet: float = 1.0) -> float:
    """A vLLM counter's value once it has passed `above` and then not moved for `quiet` s.

    Counters only: `vllm:num_requests_running` reads 0 during a live stream on the CPU build.
    """
    deadline = time.monotonic() + 30
    value, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
        elif value > above and time.monotonic() - since >= quiet:
            return value
    pytest.fail(f"vLLM's counter did not settle in 30 s: {value} (from {above})")


def test_a_completion_carries_its_body_parsed_for_the_shadow_leg(vllm_engine: VllmEngine) -> None:
    async def scenario() -> Completion:
        backend = create("vllm", VllmSettings(url=vllm_engine.url, model=TINY_MODEL))
        payload = {"model": "public-name", "messages": MESSAGES, "max_tokens": 4}
        try:
            return await backend.complete(
                UpstreamRequest(
                    Route.CHAT, orjson.dumps(payload), payload, "public-name", "r", False
                )
            )
        finally:
            await backend.close()

    completion = asyncio.run(scenario())
    body = json.loads(completion.body)
    assert body["model"] == "public-name"  # renamed in the bytes the client gets
    assert completion.answer == {**body, "model": TINY_MODEL}  # as the engine sent it
    assert completion.answer["choices"][0]["message"]["content"]
