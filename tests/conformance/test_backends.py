"""One conformance suite, every backend: the same OpenAI requests through the gateway with the
`openai` SDK, against real vLLM and each TensorRT-LLM model variant on a real Triton server,
all serving the same tiny weights. A backend contributes only its settings and its known
differences (declared in `BackendCase`), never its own test code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tokenizers import Tokenizer

from backends.base import Health
from backends.registry import BackendSettings
from backends.triton.adapter import TritonBackend
from backends.triton.settings import StreamText, TritonSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import CACHE, TINY_MODEL
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"
CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Bạn là Pika, gia sư của các bạn nhỏ."},
    {"role": "user", "content": "Pika ơi, 5 + 7 bằng mấy?"},
]
SCHEMA = {
    "type": "object",
    "properties": {"mood": {"enum": ["happy", "sad"]}},
    "required": ["mood"],
    "additionalProperties": False,
}
CHOICES = ["vui", "buồn", "tự hào"]


@dataclass(frozen=True)
class BackendCase:
    name: str
    structured_outputs: bool  # the engine has guided decoding
    clamps_max_tokens: bool  # an over-long max_tokens is clamped (Triton) or refused (vLLM)
    streams_vietnamese_intact: bool
    forces_answers: bool  # the test engine has the `[[force:TEXT]]` hook


CASES = [
    BackendCase("vllm", structured_outputs=True, clamps_max_tokens=False,
                streams_vietnamese_intact=True, forces_answers=False),
    BackendCase("ensemble", structured_outputs=True, clamps_max_tokens=True,
                streams_vietnamese_intact=False, forces_answers=True),
    BackendCase("tensorrt_llm_bls", structured_outputs=True, clamps_max_tokens=True,
                streams_vietnamese_intact=True, forces_answers=True),
    BackendCase("tensorrt_llm", structured_outputs=False, clamps_max_tokens=True,
                streams_vietnamese_intact=True, forces_answers=True),
]  # fmt: skip


@dataclass
class Target:
    case: BackendCase
    server: ThreadedServer
    client: openai.OpenAI


def forced(text: str) -> list[ChatCompletionMessageParam]:
    """A user message that makes the test engines answer `text` (their `[[force:...]]` rule)."""
    return [{"role": "user", "content": f"[[force:{text}]]"}]


@pytest.fixture(scope="module")
def engines(
    vllm_engine: VllmEngine, triton_engine: TritonEngine
) -> tuple[VllmEngine, TritonEngine]:
    return vllm_engine, triton_engine


def backend_settings(case: BackendCase, engines: tuple[VllmEngine, TritonEngine], model_dir: Path
                     ) -> BackendSettings:  # fmt: skip
    vllm, triton = engines
    if case.name == "vllm":
        return VllmSettings(url=vllm.url, model=TINY_MODEL)
    # PyTriton cannot write model-config parameters, so the test BLS lacks the real one's
    # `accumulate_tokens: true` that discovery reads; the setting says it instead.
    stream_text: StreamText = "cumulative" if case.name == "tensorrt_llm_bls" else "auto"
    return TritonSettings(
        url=triton.grpc_url,
        model=case.name,
        model_dir=model_dir,
        context_length=2048,
        stream_text=stream_text,
        add_special_tokens=ADD_SPECIAL_TOKENS[case.name],
    )


@pytest.fixture(scope="module", params=CASES, ids=[case.name for case in CASES])
def target(
    request: pytest.FixtureRequest,
    engines: tuple[VllmEngine, TritonEngine],
    tiny_model_dir: Path,
) -> Iterator[Target]:
    case: BackendCase = request.param
    settings = Settings(
        backends={case.name: backend_settings(case, engines, tiny_model_dir)},
        primary=case.name,
        models=[PUBLIC],
    )
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        yield Target(case, server, client)


def chat(target: Target, **kwargs: Any) -> Any:
    return target.client.chat.completions.create(
        model=PUBLIC, messages=kwargs.pop("messages", CHAT), **kwargs
    )


def test_chat(target: Target) -> None:
    answer = chat(target, temperature=0, max_tokens=12)
    assert answer.object == "chat.completion"
    assert answer.model == PUBLIC
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.prompt_tokens > 10
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert "<|" not in answer.choices[0].message.content  # special tokens stripped


def test_completion(target: Target) -> None:
    answer = target.client.completions.create(
        model=PUBLIC, prompt="Một, hai, ba", temperature=0, max_tokens=8
    )
    assert answer.object == "text_completion"
    assert not answer.choices[0].text.startswith("Một, hai, ba")  # the prompt is not echoed
    assert answer.usage is not None
    assert 0 < answer.usage.completion_tokens <= 8


def test_greedy_is_deterministic_and_stream_equals_non_stream(target: Target) -> None:
    first = chat(target, temperature=0, max_tokens=16)
    second = chat(target, temperature=0, max_tokens=16)
    assert first.choices[0].message.content == second.choices[0].message.content
    chunks = list(chat(target, temperature=0, max_tokens=16, stream=True,
                       stream_options={"include_usage": True}))  # fmt: skip
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if target.case.streams_vietnamese_intact:
        assert streamed == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens


def test_stream_ends_with_done(target: Target) -> None:
    body = {"model": PUBLIC, "messages": CHAT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", target.server.url + "/v1/chat/completions", json=body) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all("error" not in json.loads(event[6:]) for event in events[:-1])


def test_stop_cuts_the_answer_before_the_stop_string(target: Target) -> None:
    full = chat(target, temperature=0, max_tokens=20).choices[0].message.content
    stop = full[6:9]
    assert stop
    assert stop in full
    answer = chat(target, temperature=0, max_tokens=20, stop=[stop])
    assert answer.choices[0].message.content == full[: full.index(stop)]
    assert answer.choices[0].finish_reason == "stop"
    streamed = chat(target, temperature=0, max_tokens=20, stop=[stop], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    if target.case.streams_vietnamese_intact:
        assert text == full[: full.index(stop)]


LONG_FORCED = "Một hai ba bốn năm sáu bảy tám chín mười, mười một, mười hai."
SHORT_FORCED = "Xin chào"


def test_max_tokens_ends_with_length(target: Target) -> None:
    """An answer longer than max_tokens: forced by the Triton test engine; on vLLM, end
    tokens are banned until max_tokens by min_tokens."""
    if target.case.forces_answers:
        messages = forced(LONG_FORCED)
        answer = chat(target, messages=messages, temperature=0, max_tokens=3)
        assert LONG_FORCED.startswith(answer.choices[0].message.content)
    else:
        answer = chat(target, temperature=0, max_tokens=3, extra_body={"min_tokens": 3})
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_temperature_alone_really_samples(target: Target) -> None:
    """temperature > 0 with no top_p, top_k or seed: TensorRT-LLM would decode greedily with a
    fixed seed unless the gateway asks it to sample, with a fresh seed each time."""
    sampled: set[str] = set()
    for _ in range(8):
        sampled.add(chat(target, temperature=1.0, max_tokens=16).choices[0].message.content)
        if len(sampled) > 1:
            break
    assert len(sampled) > 1, f"8 answers sampled at temperature 1 were all {sampled}"
    greedy = {chat(target, temperature=0, max_tokens=16).choices[0].message.content for _ in "ab"}
    assert len(greedy) == 1


def test_a_seed_repeats_a_sample(target: Target) -> None:
    def sample(seed: int) -> str:
        answer = chat(target, temperature=1.0, seed=seed, max_tokens=12)
        return str(answer.choices[0].message.content)

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1  # and the seed is not just ignored


def test_response_format_json_schema(target: Target) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "m", "schema": SCHEMA}}
    if target.case.structured_outputs:
        answer = chat(target, temperature=0, max_tokens=30, response_format=response_format)
        content = answer.choices[0].message.content
        assert content.lstrip().startswith("{")
        if answer.choices[0].finish_reason == "stop":  # vLLM's xgrammar may pad with newlines
            assert json.loads(content)["mood"] in ("happy", "sad")
        return
    with pytest.raises(openai.BadRequestError) as caught:
        chat(target, temperature=0, max_tokens=30, response_format=response_format)
    assert "cannot honour a structured output" in caught.value.message


def test_structured_outputs_choice(target: Target) -> None:
    """What the tagger sends; Vietnamese choices split characters over tokens."""
    extra_body = {"structured_outputs": {"choice": CHOICES}}
    if not target.case.structured_outputs:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(target, max_tokens=16, extra_body=extra_body)
        assert "cannot honour a structured output" in caught.value.message
        return
    answers = [chat(target, temperature=1.0, max_tokens=16, extra_body=extra_body)
               for _ in range(4)]  # fmt: skip
    assert {answer.choices[0].message.content for answer in answers} <= set(CHOICES)
    assert {answer.choices[0].finish_reason for answer in answers} == {"stop"}
    chunks = chat(target, temperature=0, max_tokens=16, extra_body=extra_body, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    if target.case.streams_vietnamese_intact:
        assert streamed in CHOICES


def test_over_long_max_tokens(target: Target) -> None:
    if target.case.clamps_max_tokens:
        answer = chat(target, temperature=0, max_tokens=100_000)
        assert answer.usage.completion_tokens <= 2048
        return
    with pytest.raises(openai.BadRequestError):
        chat(target, temperature=0, max_tokens=100_000)


def test_errors_are_typed(target: Target) -> None:
    with pytest.raises(openai.NotFoundError):
        target.client.chat.completions.create(model="nope", messages=CHAT)
    with pytest.raises(openai.BadRequestError):
        chat(target, temperature=-1)


def test_cut_stream_leaves_the_gateway_clean(target: Target) -> None:
    stream = chat(target, max_tokens=400, temperature=0, stream=True)
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()
    assert chat(target, temperature=0, max_tokens=2).choices[0].finish_reason in ("stop", "length")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        metrics = httpx.get(target.server.url + "/metrics").text
        if in_flight(metrics) == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"the cut stream is still in flight: {in_flight(metrics)}")


def in_flight(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_in_flight_requests{")
    )


FORCED = "Chúc mừng con! Đúng rồi, 5 + 7 = 12."


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls", "tensorrt_llm"])
def test_vietnamese_streams_intact_on_the_recommended_models(
    model: str, engines: tuple[VllmEngine, TritonEngine], tiny_model_dir: Path
) -> None:
    """The test engine forces the answer's tokens; byte-fallback splits its characters."""
    case = next(case for case in CASES if case.name == model)
    settings = Settings(
        backends={model: backend_settings(case, engines, tiny_model_dir)},
        primary=model,
        models=[PUBLIC],
    )
    messages = forced(FORCED)
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        whole = client.chat.completions.create(
            model=PUBLIC, messages=messages, temperature=0, max_tokens=60
        )
        chunks = client.chat.completions.create(
            model=PUBLIC, messages=messages, temperature=0, max_tokens=60, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content == FORCED  # ends at <|end|>: end_id was sent
    assert whole.choices[0].finish_reason == "stop"
    if case.streams_vietnamese_intact:
        assert streamed == FORCED
    else:  # the ensemble detokenises each token alone: documented, not recommended
        assert streamed != FORCED
        assert "\ufffd" in streamed


def test_reported_lines_reach_the_run_output(tmp_path: Path) -> None:
    """What a test adds to `run_summary` is in pytest's output, where CI shows it."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_terminal_summary, run_summary  # noqa: F401\n"
    )
    (tmp_path / "test_report.py").write_text(
        "def test_report(run_summary):\n    run_summary.append('agreement: 7/10')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(CACHE.parent)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reported by tests" in result.stdout
    assert "agreement: 7/10" in result.stdout


TRITON_MODELS = ["ensemble", "tensorrt_llm_bls", "tensorrt_llm"]


def triton_gateway(model: str, url: str, **settings: Any) -> ThreadedServer:
    stream_text: StreamText = "cumulative" if model == "tensorrt_llm_bls" else "auto"  # as above
    if "model_dir" in settings:  # as the test engine's model tokenizes text_input
        settings.setdefault("add_special_tokens", ADD_SPECIAL_TOKENS[model])
    backend = TritonSettings(
        url=url, model=model, context_length=2048, stream_text=stream_text, **settings
    )
    gateway = Settings(backends={model: backend}, primary=model, models=[PUBLIC])
    return ThreadedServer(create_app(gateway))


@pytest.mark.parametrize("model", TRITON_MODELS)
def test_engine_errors_reach_the_client_as_one_clean_line(
    model: str,
    triton_engine: TritonEngine,
    tiny_model_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The test engine raises on `[[fail:N]]`; Triton sends the traceback, quoting the prompt.
    The LLM-API model words every failure `Error generating request: <e>` (section C)."""
    caplog.set_level(logging.DEBUG)
    private = "Bé Lan lớp 2A nhà ở số 7 " * 30
    with (
        triton_gateway(model, triton_engine.grpc_url, model_dir=tiny_model_dir) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        with pytest.raises(openai.InternalServerError) as before_start:
            client.chat.completions.create(
                model=PUBLIC, messages=[{"role": "user", "content": f"[[fail:0]] {private}"}],
                max_tokens=10, temperature=0,
            )  # fmt: skip
        stream = client.chat.completions.create(
            model=PUBLIC, messages=[{"role": "user", "content": f"[[fail:3]] {private}"}],
            max_tokens=10, temperature=0, stream=True,
        )  # fmt: skip
        with pytest.raises(openai.APIError) as mid_stream:
            list(stream)
        body = {"model": PUBLIC, "messages": [{"role": "user", "content": "[[fail:2]]"}],
                "max_tokens": 10, "temperature": 0, "stream": True}  # fmt: skip
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert before_start.value.status_code == 502
    assert isinstance(before_start.value.body, dict)
    assert set(before_start.value.body) == {"message", "type", "param", "code"}
    prefix = "Error generating request" if model == "tensorrt_llm" else "InjectedFaultError"
    fault = f"{prefix}: injected fault after"
    for message in (before_start.value.message, mid_stream.value.message):
        assert fault in message
        assert "Traceback" not in message
        assert "File " not in message
        assert "\n" not in message
        assert len(message) < 300
    assert events[-1] == "data: [DONE]"
    assert fault in json.loads(events[-2][6:])["error"]["message"]
    assert "Lan lớp 2A" not in caplog.text


@pytest.mark.parametrize("model", TRITON_MODELS)
def test_builtin_template_ends_the_answer_at_its_end_token(
    model: str, triton_engine: TritonEngine
) -> None:
    """No tokenizer, so no end id: Phi-3's `<|end|>` must still end the turn.

    The test engine forces the answer's tokens, then `<|end|>`, then random ones; the
    ensemble's default end id is the eos, so without a stop the answer runs on.
    """
    messages = forced(FORCED)
    with (
        triton_gateway(model, triton_engine.grpc_url, chat_template="phi3") as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        whole = client.chat.completions.create(
            model=PUBLIC, messages=messages, temperature=0, max_tokens=60
        )
        chunks = client.chat.completions.create(
            model=PUBLIC, messages=messages, temperature=0, max_tokens=60, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole.choices[0].message.content == FORCED
    assert whole.choices[0].finish_reason == "stop"
    if model != "ensemble":  # the ensemble garbles split characters when streaming
        assert streamed == FORCED


@pytest.mark.parametrize("model", TRITON_MODELS)
def test_an_answer_shorter_than_max_tokens_ends_with_stop(
    model: str, triton_engine: TritonEngine, tiny_model_dir: Path
) -> None:
    """The forced answer ends at `<|end|>` well within max_tokens; only its tokens count."""
    tokens = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(
        SHORT_FORCED, add_special_tokens=False
    )
    messages = forced(SHORT_FORCED)
    request: dict[str, Any] = {
        "model": PUBLIC, "messages": messages, "temperature": 0, "max_tokens": 20
    }  # fmt: skip
    with (
        triton_gateway(model, triton_engine.grpc_url, model_dir=tiny_model_dir) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        whole = client.chat.completions.create(**request)
        chunks = list(client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True}
        ))  # fmt: skip
    assert whole.choices[0].message.content == SHORT_FORCED
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage.completion_tokens == len(tokens.ids) < 20
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(tokens.ids)


@dataclass
class TappedCall:
    """One streamed gRPC call through the tap: responses passed on, and how it ended."""

    responses: int = 0
    ended: str | None = None  # "completed", or "cancelled" by the client (the gateway)
    done: threading.Event = field(default_factory=threading.Event)


class GrpcTap:
    """A gRPC proxy in front of Triton that records how each streamed call ends.

    PyTriton never tells the test engine of a cancellation (it runs every request to its end),
    so the wire is where a cancelled call shows: the proxy's handler is cancelled when the
    gateway cancels its call, and it then cancels its own call to Triton.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: list[TappedCall] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> GrpcTap:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.upstream)
        self._server = grpc.aio.server()
        self._server.add_generic_rpc_handlers([_Forward(self)])
        self.url = f"127.0.0.1:{self._server.add_insecure_port('127.0.0.1:0')}"
        await self._server.start()

    async def _stop(self) -> None:
        await self._server.stop(grace=None)
        await self._channel.close()

    async def unary(self, method: str, request: bytes, context: Any) -> bytes:
        response: bytes = await self._channel.unary_unary(method)(request)
        return response

    async def stream(
        self, method: str, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        call = self._channel.stream_stream(method)(requests)
        record = TappedCall()
        self.calls.append(record)
        try:
            async for response in call:
                record.responses += 1
                yield response
            record.ended = "completed"
        finally:
            if record.ended is None:  # grpc cancelled or closed this handler: the client did
                record.ended = "cancelled"
                call.cancel()
            record.done.set()


class _Forward(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs here
    """Every method passed on as bytes; Triton's only streaming one is `ModelStreamInfer`."""

    def __init__(self, tap: GrpcTap) -> None:
        self.tap = tap

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method.endswith("/ModelStreamInfer"):
            return grpc.stream_stream_rpc_method_handler(partial(self.tap.stream, method))
        return grpc.unary_unary_rpc_method_handler(partial(self.tap.unary, method))


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
@pytest.mark.parametrize("model", TRITON_MODELS)
def test_client_disconnect_cancels_the_grpc_call(
    model: str, stream: bool, triton_engine: TritonEngine, tiny_model_dir: Path
) -> None:
    """The client goes away early in a long forced answer: the gateway cancels its gRPC call
    at once, long before Triton would have sent the whole answer."""
    forced = " ".join(f"Câu số {n} nhé." for n in range(150))
    total = len(Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).encode(forced).ids)
    body = {"model": PUBLIC, "messages": [{"role": "user", "content": f"[[force:{forced}]]"}],
            "temperature": 0, "max_tokens": 1500, "stream": stream}  # fmt: skip
    with (
        GrpcTap(triton_engine.grpc_url) as tap,
        triton_gateway(model, tap.url, model_dir=tiny_model_dir) as server,
    ):
        url = server.url + "/v1/chat/completions"
        if stream:
            with httpx.stream("POST", url, json=body) as response:
                lines = response.iter_lines()
                while not next(lines).startswith("data: {"):
                    pass
        else:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(url, json=body, timeout=httpx.Timeout(5.0, read=0.5))
        (call,) = tap.calls
        assert call.done.wait(5.0), f"the gRPC call still runs, {call.responses} responses"
    assert call.ended == "cancelled", f"{call.ended} after {call.responses} of {total} responses"
    assert call.responses < total / 3, f"{call.responses} of {total} responses went through"


def test_the_llmapi_model_is_not_ready_with_add_special_tokens_false(
    triton_engine: TritonEngine, tiny_model_dir: Path
) -> None:
    """It always tokenizes with special tokens (it has no input to say otherwise)."""

    async def health() -> Health:
        settings = TritonSettings(
            url=triton_engine.grpc_url, model="tensorrt_llm", model_dir=tiny_model_dir,
            add_special_tokens=False,
        )  # fmt: skip
        backend = TritonBackend("trt", settings)
        try:
            return await backend.health()
        finally:
            await backend.close()

    result = asyncio.run(health())
    assert not result.ready
    assert "always tokenizes text_input with special tokens" in result.detail
