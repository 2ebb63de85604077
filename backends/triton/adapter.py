"""TensorRT-LLM on NVIDIA Triton, through `tritonclient`'s asyncio gRPC client.

Requests are OpenAI chat or completion bodies; the adapter renders the chat template as vLLM
would, maps fields to the model's discovered inputs (`triton_interface`, `triton_request`),
runs one gRPC stream per request, and answers with the same OpenAI shapes vLLM returns.

Example::

    GATEWAY_BACKENDS='{"trt": {"kind": "triton", "url": "127.0.0.1:8001",
                               "model": "tensorrt_llm_bls", "model_dir": "/models/phi3"}}'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import grpc
from tokenizers import Tokenizer
from tritonclient.grpc import (
    MAX_GRPC_MESSAGE_SIZE,
    InferInput,
    InferRequestedOutput,
    KeepAliveOptions,
)
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from backends.base import Completion, EventStream, Health, TokenIds, UpstreamRequest
from backends.chat_template import ChatTemplate
from backends.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    UnsupportedParameter,
    UpstreamRejected,
)
from backends.openai_shapes import Events, Shapes, Usage
from backends.sampling import OPENAI_DEFAULTS, Sampling, model_defaults, resolve
from backends.triton.answer import Answer, Piece, error_summary, is_final, piece_of
from backends.triton.interface import ModelInterface
from backends.triton.request import Generation, Tokenizing, generation, inputs_for
from backends.triton.settings import TritonSettings

log = logging.getLogger("backends.triton.adapter")
OUTPUTS = ("text_output", "num_input_tokens", "num_output_tokens", "finish_reason")
DONE = b"data: [DONE]\n\n"


class TritonBackend:
    """One gRPC channel per backend; the model's interface is read once, at first use."""

    def __init__(self, name: str, settings: TritonSettings) -> None:
        self.name = name
        self._settings = settings
        self._model_name = settings.model
        self._client = InferenceServerClient(settings.url, channel_args=channel_args(settings))
        self._interface: ModelInterface | None = None
        auto = settings.generation_config == "auto"
        self._defaults = model_defaults(settings.model_dir) if auto else {}
        self._tokenizer: Tokenizer | None = None
        if settings.model_dir is not None:
            self._template = ChatTemplate.from_tokenizer_dir(settings.model_dir)
            self._tokenizer = Tokenizer.from_file(str(settings.model_dir / "tokenizer.json"))
        else:
            self._template = ChatTemplate.builtin(settings.chat_template or "phi3")
        self._end_id = (
            self._tokenizer.token_to_id(self._template.end_token) if self._tokenizer else None
        )
        # Without the end token's id the engine would run past the turn's end (its default end
        # id is the eos): the token's text goes as a stop word instead.
        self._turn_end = self._template.end_token if self._end_id is None else ""
        self._tokenizing = Tokenizing.of(
            settings.add_special_tokens, self._tokenizer, self._template.bos_token
        )
        if self._tokenizing.strips_template_bos and not self._template.writes_bos():
            log.warning(
                "backend '%s': the engine's tokenizer adds %s to text_input "
                "(add_special_tokens true) and the chat template writes none, so chat prompts "
                "are one token longer than on vLLM; set add_special_tokens false in the "
                "preprocessing model's config and in this backend's settings",
                name,
                self._tokenizing.bos,
            )

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return resolve(request.payload, self._defaults, OPENAI_DEFAULTS)

    async def complete(self, request: UpstreamRequest) -> Completion:
        interface, plan, prompt_tokens = await self._plan(request)
        answer = Answer(interface, plan, prompt_tokens)
        async for piece in self._responses(interface, plan, request.request_id):
            answer.feed(piece)
            if answer.stopped:
                break
        answer.feed_rest()
        shapes = Shapes(request.route, request.request_id, request.public_model)
        text = "".join(answer.parts)
        body = shapes.completion(text, answer.finish_reason(), self._usage(answer))
        return Completion(body, ids=self._ids(request, plan))

    async def stream(self, request: UpstreamRequest) -> EventStream:
        interface, plan, prompt_tokens = await self._plan(request)
        if not interface.decoupled:
            raise UnsupportedParameter(
                f"Triton model '{interface.model}' is not decoupled, so it cannot stream",
                param="stream",
            )
        responses = self._responses(interface, plan, request.request_id)
        first = await anext(responses)  # errors before the first byte become statuses
        shapes = Shapes(request.route, request.request_id, request.public_model)
        answer = Answer(interface, plan, prompt_tokens)
        return Events(self._events(responses, first, answer, shapes), self._ids(request, plan))

    def _ids(self, request: UpstreamRequest, plan: Generation) -> TokenIds | None:
        """The prompt ids the engine reads from `text_input`: its tokenizer is the model's own,
        run with its `add_special_tokens`. No output ids: the models return text."""
        if not request.token_ids or self._tokenizer is None:
            return None
        special = self._tokenizing.add_special_tokens
        return TokenIds(tuple(self._tokenizer.encode(plan.prompt, add_special_tokens=special).ids))

    async def health(self) -> Health:
        try:
            ready = await self._client.is_model_ready(
                self._model_name, client_timeout=self._settings.connect_timeout + 1.0
            )
            if not ready:
                return Health(False, f"Triton model '{self._model_name}' is not ready")
            await self._model()
        except (InferenceServerException, grpc.RpcError) as exc:
            return Health(False, f"Triton is unreachable: {_status(exc)}")
        except GatewayError as exc:
            return Health(False, exc.message)
        return Health(True, "ok", self._model_name)

    async def close(self) -> None:
        await self._client.close()

    async def _model(self) -> ModelInterface:
        if self._interface is None:
            try:
                config = await self._client.get_model_config(
                    self._model_name,
                    as_json=True,
                    client_timeout=self._settings.connect_timeout + 3.0,
                )
            except (InferenceServerException, grpc.RpcError) as exc:
                raise self._error(exc) from None
            try:
                interface = ModelInterface.from_config(config["config"], self._settings.stream_text)
            except ValueError as exc:
                raise BackendProtocolError(str(exc)) from None
            if interface.llm_api and not self._settings.add_special_tokens:
                # Its SamplingParams keep add_special_tokens true: the model has no input for it.
                raise BackendProtocolError(
                    f"Triton model '{interface.model}' is the LLM-API model, which always "
                    f"tokenizes text_input with special tokens: set add_special_tokens true for "
                    f"backend '{self.name}'"
                )
            self._interface = interface
        return self._interface

    async def _plan(
        self, request: UpstreamRequest
    ) -> tuple[ModelInterface, Generation, int | None]:
        interface = await self._model()
        prompt = self._tokenizing.text_input(request.route, request.payload, self._template)
        # What the engine reads: its tokenizer step decides about special tokens.
        prompt_tokens = self._count(prompt, special=self._tokenizing.add_special_tokens)
        room = self._settings.context_length - (prompt_tokens or 0)
        plan = generation(
            request.payload,
            prompt,
            room,
            self._settings.default_max_tokens,
            interface,
            self.sampling(request),
            turn_end=self._turn_end,
        )
        return interface, plan, prompt_tokens

    async def _responses(
        self, interface: ModelInterface, plan: Generation, request_id: str
    ) -> AsyncGenerator[Piece, None]:
        """The engine's responses to one request, over one gRPC stream, until the final one."""
        inputs = []
        for name, datatype, array in inputs_for(interface, plan, self._end_id):
            tensor = InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [InferRequestedOutput(name) for name in OUTPUTS if name in interface.outputs]
        if not interface.decoupled:
            try:
                result = await self._client.infer(
                    self._model_name, inputs, outputs=outputs, request_id=request_id,
                    client_timeout=self._settings.total_timeout,
                )  # fmt: skip
            except (InferenceServerException, grpc.RpcError) as exc:
                raise self._error(exc) from None
            yield piece_of(result, final=True)
            return

        async def one_request() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": self._model_name, "inputs": inputs, "outputs": outputs,
                   "request_id": request_id}  # fmt: skip

        stream = self._client.stream_infer(
            one_request(), stream_timeout=self._settings.total_timeout
        )
        try:
            while True:
                try:
                    # Not wait_for: on 3.11 it swallows a cancel (the client went away) that
                    # comes as the next response arrives, and the stream then runs to its end.
                    async with asyncio.timeout(self._settings.read_timeout):
                        result, error = await anext(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise BackendTimeout(f"backend '{self.name}' did not answer in time") from None
                except grpc.RpcError as exc:
                    raise self._error(exc) from None
                if error is not None:
                    raise self._error(error)
                piece = piece_of(result, final=is_final(result))
                yield piece
                if piece.final:
                    return
        finally:
            stream.cancel()  # stops the engine when the client went away

    async def _events(
        self,
        responses: AsyncGenerator[Piece, None],
        first: Piece,
        answer: Answer,
        shapes: Shapes,
    ) -> AsyncGenerator[bytes, None]:
        try:
            yield shapes.chunk("", role=True) if shapes.route.name == "CHAT" else b""
            piece: Piece | None = first
            while piece is not None:
                text = answer.feed(piece)
                if text:
                    yield shapes.chunk(text)
                if answer.stopped:
                    break
                piece = await anext(responses, None)
            rest = answer.feed_rest()
            if rest:
                yield shapes.chunk(rest)
            yield shapes.chunk(None, answer.finish_reason())
            usage = self._usage(answer)
            if answer.plan.include_usage and usage is not None:
                yield shapes.usage_chunk(usage)
            yield DONE
        finally:
            await responses.aclose()

    def _usage(self, answer: Answer) -> Usage | None:
        prompt_tokens = answer.input_tokens
        completion_tokens = answer.output_tokens
        if completion_tokens is None:
            # The model reports no count (the LLM-API model): re-encode the text. Re-encoding
            # can differ from the generated ids, but never exceeds what was allowed.
            counted = self._count("".join(answer.parts), special=False)
            if answer.finish_reason() == "length":
                counted = answer.plan.max_tokens
            completion_tokens = None if counted is None else min(counted, answer.plan.max_tokens)
        if prompt_tokens is None or completion_tokens is None:
            return None
        return Usage(prompt_tokens, completion_tokens)

    def _count(self, text: str, special: bool) -> int | None:
        if self._tokenizer is None:
            return None
        return len(self._tokenizer.encode(text, add_special_tokens=special).ids)

    def _error(self, exc: InferenceServerException | grpc.RpcError) -> GatewayError:
        """Triton's error as the client's; its text cut to one line (`error_summary`)."""
        status = _status(exc)
        message = error_summary(_detail(exc))
        if "UNAVAILABLE" in status or "NOT_FOUND" in status or "RESOURCE_EXHAUSTED" in status:
            return BackendUnavailable(f"backend '{self.name}' is unavailable: {status}")
        if "DEADLINE_EXCEEDED" in status:
            return BackendTimeout(f"backend '{self.name}' did not answer in time")
        if "INVALID_ARGUMENT" in status:
            return UpstreamRejected(400, f"Triton rejected the request: {message}")
        return BackendProtocolError(f"backend '{self.name}' failed: {message}")


def _status(exc: InferenceServerException | grpc.RpcError) -> str:
    if isinstance(exc, InferenceServerException):
        return str(exc.status() or "")
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    return str(code or "")


def _detail(exc: InferenceServerException | grpc.RpcError) -> str:
    if isinstance(exc, InferenceServerException):
        return str(exc.message() or "")
    if isinstance(exc, grpc.aio.AioRpcError):
        return str(exc.details() or "")
    return ""


def channel_args(settings: TritonSettings) -> list[tuple[str, int]]:
    """tritonclient's own channel options, plus `connect_timeout` for each connection attempt.

    gRPC gives an attempt max(`min_reconnect_backoff`, the current backoff), 20 s by default;
    a call made while the channel has no connection fails (UNAVAILABLE) when the attempt does.
    """
    keepalive = KeepAliveOptions()
    connect_ms = max(100, int(settings.connect_timeout * 1000))
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(keepalive.keepalive_permit_without_calls)),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.min_reconnect_backoff_ms", connect_ms),
        ("grpc.initial_reconnect_backoff_ms", connect_ms),
    ]


def create(name: str, settings: TritonSettings) -> TritonBackend:
    return TritonBackend(name, settings)
