"""The Triton adapter on a real Triton server, on each TensorRT-LLM model (the LLM-API
`tensorrt_llm`, and the legacy `ensemble` and `tensorrt_llm_bls`) serving the tiny Phi-3:
what only a Triton path has (in-band engine errors, built-in templates, gRPC cancellation).
The requests every kind answers alike are in `test_backends.py`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
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
from backends.triton.adapter import TritonBackend
from backends.triton.settings import StreamText, TritonSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"
FORCED = "Chúc mừng con! Đúng rồi, 5 + 7 = 12."
SHORT_FORCED = "Xin chào"


def forced(text: str) -> list[ChatCompletionMessageParam]:
    """A user message that makes the test engines answer `text` (their `[[force:...]]` rule)."""
    return [{"role": "user", "content": f"[[force:{text}]]"}]


TRITON_MODELS = ["ensemble", "tensorrt_llm_bls", "tensorrt_llm"]


def triton_gateway(model: str, url: str, **settings: Any) -> ThreadedServer:
    # The test BLS lacks the real one's `accumulate_tokens: true` (see tests/conformance/kinds.py).
    stream_text: StreamText = "cumulative" if model == "tensorrt_llm_bls" else "auto"
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
