"""TensorRT-LLM's gRPC server (`trtllm-serve --grpc`, SMG's `trtllm.TrtllmService`), through
the stubs `smg-grpc-proto` publishes (backends/TENSORRT_LLM.md, B).

The server takes token ids and answers token ids, so the gateway renders and tokenises the
prompt as vLLM does (`backends.prompting`), sends every sampling field explicitly (the server's
own defaults are temperature, top_p and repetition_penalty 1.0), and decodes the answer into
the same OpenAI shapes vLLM returns. Both legs of a shadowed request then read the same ids by
construction, and the gateway knows which ids the engine wrote.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from smg_grpc_proto.generated import trtllm_service_pb2 as pb
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as pb_grpc

from backends.base import Completion, EventStream, Health, Route, TokenIds, UpstreamRequest
from backends.constraints import constraint_of
from backends.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    InvalidRequest,
    UpstreamRejected,
)
from backends.fields import SAMPLING_FIELDS, refuse_unhonoured
from backends.openai_shapes import Events, Shapes, Usage
from backends.prompting import Prompter
from backends.sampling import OPENAI_DEFAULTS, Sampling, model_defaults, resolve
from backends.text_stream import CumulativeText, StopStrings
from backends.trtllm_grpc.settings import TrtllmGrpcSettings

HONOURED = SAMPLING_FIELDS | {"min_tokens", "chat_template_kwargs"}
ENGINE = "TensorRT-LLM gRPC"
DONE = b"data: [DONE]\n\n"
GUIDES = {
    "json_schema": pb.GuidedDecodingParams.GUIDE_TYPE_JSON_SCHEMA,
    "json_object": pb.GuidedDecodingParams.GUIDE_TYPE_JSON,
    "regex": pb.GuidedDecodingParams.GUIDE_TYPE_REGEX,
    "grammar": pb.GuidedDecodingParams.GUIDE_TYPE_EBNF_GRAMMAR,
}
# The plain-JSON guide applies only with a non-empty guide text (facts B): any text will do.
JSON_OBJECT_GUIDE = "{}"


@dataclass(slots=True)
class Answer:
    """One answer as its token ids arrive: the text so far, cut at the request's stops."""

    prompter: Prompter
    stops: list[str]
    ids: list[int] = field(default_factory=list)
    sent: str = ""  # the text given out so far
    finish_reason: str = "stop"
    usage: Usage | None = None
    cumulative: CumulativeText = field(default_factory=CumulativeText)
    streamed: StopStrings = field(init=False)

    def __post_init__(self) -> None:
        self.streamed = StopStrings(self.stops)

    def feed(self, ids: list[int]) -> str:
        """A streamed chunk's new ids: the new text that cannot be the start of a stop."""
        self.ids.extend(ids)
        text = self.streamed.feed(self.cumulative.delta(self.prompter.decode(self.ids)))
        self.sent += text
        return text

    def finish(self, complete: Any) -> str:
        """The final message, whose ids are the whole answer with the engine's stop cut made
        (the chunks may have carried a stop string's first tokens): the text not given yet."""
        self.ids[:] = complete.output_token_ids
        cut = StopStrings(self.stops)  # also as text: a stop can span tokens other ways
        whole = cut.feed(self.prompter.decode(self.ids)) + cut.flush()
        ended = cut.stopped or complete.finish_reason != "length"
        self.finish_reason = "stop" if ended else "length"
        self.usage = Usage(complete.prompt_tokens, complete.completion_tokens)
        rest = whole[len(self.sent) :] if whole.startswith(self.sent) else ""
        self.sent += rest
        return rest


class TrtllmGrpcBackend:
    """One gRPC channel per backend; the model's context length is read at first use."""

    def __init__(self, name: str, settings: TrtllmGrpcSettings) -> None:
        assert settings.model_dir is not None  # the settings refuse a backend without one
        self.name = name
        self._settings = settings
        self._channel = grpc.aio.insecure_channel(settings.url, options=_channel_options(settings))
        self._stub = pb_grpc.TrtllmServiceStub(self._channel)
        self._prompter = Prompter.from_dir(settings.model_dir)
        auto = settings.generation_config == "auto"
        self._defaults = model_defaults(settings.model_dir) if auto else {}
        self._context: int | None = None
        self._served = settings.model

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return resolve(request.payload, self._defaults, OPENAI_DEFAULTS)

    async def complete(self, request: UpstreamRequest) -> Completion:
        generate, answer = await self._plan(request, streaming=False)
        text = ""
        async for message in self._call(generate):
            if message.HasField("complete"):
                text = answer.finish(message.complete)
        shapes = Shapes(request.route, request.request_id, request.public_model)
        body = shapes.completion(text, answer.finish_reason, answer.usage)
        ids = TokenIds(tuple(generate.tokenized.input_token_ids), answer.ids)
        return Completion(body, ids=ids if request.token_ids else None)

    async def stream(self, request: UpstreamRequest) -> EventStream:
        generate, answer = await self._plan(request, streaming=True)
        messages = self._call(generate)
        first = await anext(messages)  # errors before the first byte become statuses
        shapes = Shapes(request.route, request.request_id, request.public_model)
        ids = TokenIds(tuple(generate.tokenized.input_token_ids), answer.ids)
        events = self._events(messages, first, answer, shapes, _include_usage(request))
        return Events(events, ids if request.token_ids else None)

    async def health(self) -> Health:
        timeout = self._settings.connect_timeout + 1.0
        try:
            status = await self._stub.HealthCheck(pb.HealthCheckRequest(), timeout=timeout)
            info = await self._model_info()
        except grpc.aio.AioRpcError as exc:
            return Health(False, f"the gRPC server is unreachable: {exc.code().name}")
        if status.status != "OK":  # the server answers OK at the gRPC level either way
            return Health(False, f"the engine says it is {status.status or 'not ready'}")
        return Health(True, "ok", self._served or info.model_id)

    async def close(self) -> None:
        await self._channel.close()

    async def _model_info(self) -> Any:
        info = await self._stub.GetModelInfo(
            pb.GetModelInfoRequest(), timeout=self._settings.connect_timeout + 3.0
        )
        self._context = info.max_seq_len or None
        return info

    async def _plan(self, request: UpstreamRequest, streaming: bool) -> tuple[Any, Answer]:
        payload = request.payload
        refuse_unhonoured(payload, HONOURED, ENGINE)
        if self._context is None:
            try:
                await self._model_info()
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc) from None
        prompt = self._prompter.prompt_ids(request.route, payload)
        room = (self._context or 0) - len(prompt)
        sampling = self.sampling(request)
        wanted = sampling.max_tokens if sampling.max_tokens is not None else room
        if room <= 0 or wanted > room:  # as vLLM answers: a 400, never a quiet clamp
            raise InvalidRequest(
                f"max_tokens {wanted} leaves no room: the prompt has {len(prompt)} tokens "
                f"and the model's context {self._context}",
                param="max_tokens",
            )
        stops = _stops(payload)
        generate = pb.GenerateRequest(
            request_id=request.request_id,
            tokenized=pb.TokenizedInput(input_token_ids=prompt),
            sampling_config=_sampling_config(sampling, payload.get("min_tokens")),
            max_tokens=wanted,
            streaming=streaming,
            stop=stops,
            stop_token_ids=[self._prompter.end_of_turn_id]
            if self._prompter.end_of_turn_id is not None and request.route is Route.CHAT
            else [],
        )
        constraint = constraint_of(payload)
        if constraint is not None:
            guide = constraint.text or JSON_OBJECT_GUIDE
            generate.guided_decoding.CopyFrom(
                pb.GuidedDecodingParams(guide_type=GUIDES[constraint.kind], guide=guide)
            )
        return generate, Answer(self._prompter, stops)

    async def _call(self, generate: Any) -> AsyncGenerator[Any, None]:
        """The server's messages for one request; closing this cancels the call, and the
        engine stops generating."""
        call = self._stub.Generate(generate, timeout=self._settings.total_timeout)
        try:
            while True:
                try:
                    async with asyncio.timeout(self._settings.read_timeout):
                        message = await call.read()
                except TimeoutError:
                    raise BackendTimeout(f"backend '{self.name}' did not answer in time") from None
                except grpc.aio.AioRpcError as exc:
                    raise self._error(exc) from None
                if message is grpc.aio.EOF:
                    return
                yield message
        finally:
            call.cancel()

    async def _events(
        self,
        messages: AsyncIterator[Any],
        first: Any,
        answer: Answer,
        shapes: Shapes,
        include_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        try:
            yield shapes.chunk("", role=True) if shapes.route is Route.CHAT else b""
            message: Any = first
            while message is not None:
                if message.HasField("chunk"):
                    text = answer.feed(list(message.chunk.token_ids))
                else:
                    text = answer.finish(message.complete)
                if text:
                    yield shapes.chunk(text)
                message = await anext(messages, None)
            yield shapes.chunk(None, answer.finish_reason)
            if include_usage and answer.usage is not None:
                yield shapes.usage_chunk(answer.usage)
            yield DONE
        finally:
            await messages.aclose()  # type: ignore[attr-defined]

    def _error(self, exc: grpc.aio.AioRpcError) -> GatewayError:
        """The server's status code as the client's error (it sends no error messages)."""
        code, detail = exc.code(), (exc.details() or "")[:200]
        if code == grpc.StatusCode.UNAVAILABLE:
            unreachable = BackendUnavailable(f"backend '{self.name}' is unreachable")
            unreachable.retryable = True  # nothing reached the engine
            return unreachable
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return BackendTimeout(f"backend '{self.name}' did not answer in time")
        if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED):
            return UpstreamRejected(400, f"the engine rejected the request: {detail}")
        return BackendProtocolError(f"backend '{self.name}' failed: {code.name}")


def _sampling_config(sampling: Sampling, min_tokens: object) -> Any:
    """Every field explicit: the server's defaults are not vLLM's. Greedy is temperature 0;
    sampling without a seed gets a fresh one, as an engine's default seed is fixed."""
    seed = sampling.seed
    if seed is None and not sampling.greedy:
        seed = secrets.randbits(63)
    return pb.SamplingConfig(
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        min_p=sampling.min_p,
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        seed=seed,
        min_tokens=min_tokens if isinstance(min_tokens, int) else None,
    )


def _stops(payload: Any) -> list[str]:
    stop = payload.get("stop") or []
    return [stop] if isinstance(stop, str) else [str(s) for s in stop]


def _include_usage(request: UpstreamRequest) -> bool:
    options = request.payload.get("stream_options") or {}
    return bool(options.get("include_usage"))


def _channel_options(settings: TrtllmGrpcSettings) -> list[tuple[str, int]]:
    """Each connection attempt bounded by `connect_timeout` (gRPC's own backoff starts at 1 s
    and grows to 20)."""
    connect_ms = max(100, int(settings.connect_timeout * 1000))
    return [
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.initial_reconnect_backoff_ms", connect_ms),
        ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ]


def create(name: str, settings: TrtllmGrpcSettings) -> TrtllmGrpcBackend:
    return TrtllmGrpcBackend(name, settings)
