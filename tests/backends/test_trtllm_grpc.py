"""The `trtllm-grpc` kind through the gateway, against the `trtllm-serve --grpc` stand-in
(tests/engines/trtllm_grpc_engine.py), with the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.base import Route, UpstreamRequest
from backends.prompting import Prompter
from backends.trtllm_grpc.adapter import TrtllmGrpcBackend
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.engines.hooks import fails_after
from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"
FORCED = "Chúc mừng con! Đúng rồi, 5 + 7 = 12."


def forced(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": f"[[force:{text}]]"}]


@pytest.fixture(scope="module")
def client(trtllm_grpc_engine: TrtllmGrpcEngine, tiny_model_dir: Path) -> Iterator[openai.OpenAI]:
    backend = TrtllmGrpcSettings(url=trtllm_grpc_engine.address, model_dir=tiny_model_dir)
    settings = Settings(backends={"trt": backend}, primary="trt", models=[PUBLIC])
    with ThreadedServer(create_app(settings)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def test_a_forced_vietnamese_answer_arrives_whole_streamed_or_not(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=PUBLIC, messages=forced(FORCED), temperature=0, max_tokens=60
    )
    assert whole.choices[0].message.content == FORCED  # ends at the turn's end token
    assert whole.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model=PUBLIC, messages=forced(FORCED), temperature=0, max_tokens=60, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == FORCED
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_and_max_tokens(client: openai.OpenAI) -> None:
    cut = client.chat.completions.create(
        model=PUBLIC, messages=forced(FORCED), temperature=0, max_tokens=60, stop=["5 + 7"]
    )
    assert cut.choices[0].message.content == FORCED[: FORCED.index("5 + 7")]
    short = client.chat.completions.create(
        model=PUBLIC, messages=forced(FORCED), temperature=0, max_tokens=3
    )
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 3
    with pytest.raises(openai.BadRequestError):  # as vLLM: refused, not clamped
        client.chat.completions.create(model=PUBLIC, messages=forced("x"), max_tokens=100_000)


def test_a_seed_repeats_a_sample_and_a_choice_is_honoured(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Pika ơi"}]

    def sample(seed: int) -> str | None:
        answer = client.chat.completions.create(
            model=PUBLIC, messages=messages, temperature=1.0, seed=seed, max_tokens=10
        )
        return answer.choices[0].message.content

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1
    chosen = client.chat.completions.create(
        model=PUBLIC, messages=messages, temperature=1.0, max_tokens=8,
        extra_body={"structured_outputs": {"choice": ["vui", "buồn"]}},
    )  # fmt: skip
    assert chosen.choices[0].message.content in ("vui", "buồn")


def test_an_engine_failure_mid_stream_is_an_error_event(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=PUBLIC, messages=[{"role": "user", "content": fails_after(2)}],
        max_tokens=20, stream=True,
    )  # fmt: skip
    before: list[str] = []

    def read() -> None:
        for chunk in stream:
            before.extend(choice.delta.content or "" for choice in chunk.choices)

    with pytest.raises(openai.APIError):
        read()
    assert "".join(before)  # text came before the fault: mid-stream, not instead of an answer


def test_the_ids_are_the_gateways_tokenisation_and_the_engines_answer(
    trtllm_grpc_engine: TrtllmGrpcEngine, tiny_model_dir: Path
) -> None:
    """Asked for token ids (a shadowed request), the adapter returns the prompt it sent, which
    is vLLM's rendering, and the ids the engine wrote."""
    import asyncio

    payload = {"model": PUBLIC, "messages": forced("Xin chào"), "temperature": 0}
    request = UpstreamRequest(
        Route.CHAT, orjson.dumps(payload), payload, PUBLIC, "r1", False, token_ids=True
    )

    async def call() -> tuple[bytes, tuple[int, ...] | None, list[int] | None]:
        settings = TrtllmGrpcSettings(url=trtllm_grpc_engine.address, model_dir=tiny_model_dir)
        backend = TrtllmGrpcBackend("trt", settings)
        try:
            completion = await backend.complete(request)
        finally:
            await backend.close()
        assert completion.ids is not None
        return completion.body, completion.ids.prompt, completion.ids.output

    body, prompt, output = asyncio.run(call())
    prompter = Prompter.from_dir(tiny_model_dir)
    assert prompt == tuple(prompter.prompt_ids(Route.CHAT, payload))
    assert output is not None
    assert prompter.decode(output) == json.loads(body)["choices"][0]["message"]["content"]
    assert b"token_ids" not in body  # the client's answer carries none
