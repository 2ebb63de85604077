"""The trtllm-serve stand-in's HTTP routes: answers shaped as trtllm-serve shapes them.

``build_app`` is what ``tensorrt_llm/serve/openai_server.py`` registers for the LLM role, with
the answers of ``postprocess_handlers.py`` (section A of ``backends/TENSORRT_LLM.md``:
``postprocess_handlers.py@01bf1923``, ``openai_server.py`` by index id 54820179511), on the
outputs ``trtllm_serve_generation.StandIn`` generates.

Example::

    app = build_app(ServeOptions(model_dir=Path("/tmp/tiny-phi3")))
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from tests.engines import trtllm_serve_protocol as api
from tests.engines.trtllm_serve_generation import Job, Output, ServeOptions, StandIn
from tests.engines.trtllm_serve_requests import conversation_message

VERSION = "1.3.0rc25"  # facts §0: the newest release seen
DONE = "data: [DONE]\n\n"
T = TypeVar("T")


def build_app(options: ServeOptions) -> FastAPI:
    """The app ``trtllm-serve`` serves, loading the model first."""
    routes = _Routes(StandIn(options))
    app = FastAPI()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # facts A.1: validation errors, unknown fields included: 400 {"error": str(exc)}
        return JSONResponse({"error": str(exc)}, status_code=400)

    app.add_api_route("/health", routes.health, methods=["GET"])
    app.add_api_route("/version", routes.version, methods=["GET"])
    app.add_api_route("/v1/models", routes.models, methods=["GET"])
    app.add_api_route("/metrics", routes.metrics, methods=["GET"])
    app.add_api_route("/v1/chat/completions", routes.chat, methods=["POST"])
    app.add_api_route("/v1/completions", routes.completion, methods=["POST"])
    app.add_api_route("/_internal/tokenize", routes.tokenize, methods=["POST"])
    return app


def error_response(message: str, kind: str = "BadRequestError") -> JSONResponse:
    """facts A.1: errors raised in the handlers: the ErrorResponse envelope, status 400."""
    body = api.ErrorResponse(message=message, type=kind, code=400)
    return JSONResponse(body.model_dump(), status_code=400)


class _Routes:
    def __init__(self, stand_in: StandIn) -> None:
        self.stand_in = stand_in

    async def health(self) -> Response:
        return Response(status_code=200)  # facts A.6: 200, empty body

    async def version(self) -> JSONResponse:
        return JSONResponse({"version": VERSION})

    async def models(self) -> JSONResponse:
        cards = api.ModelList(data=[api.ModelCard(id=self.stand_in.model)])
        return JSONResponse(cards.model_dump())

    async def metrics(self) -> JSONResponse:
        return JSONResponse([])  # facts A.6: a JSON list of iteration stats; none kept here

    async def tokenize(self, request: api.TokenizeRequest) -> Response:
        try:
            tokens = self.stand_in.llm.encode(request.prompt, special=True)  # facts A.4
        except Exception as exc:
            return error_response(str(exc), "InvalidRequestError")
        return JSONResponse(api.TokenizeResponse(count=len(tokens), tokens=tokens).model_dump())

    async def chat(self, request: api.ChatCompletionRequest, raw: Request) -> Response:
        try:
            text, ids = self.stand_in.chat_prompt(request)
            job = self.stand_in.job(request, text, ids, request.max_completion_tokens)
            role = "assistant" if request.add_generation_prompt else request.messages[-1]["role"]
            last = conversation_message(request.messages[-1]) if request.messages else None
            # postprocess_handlers: echo repeats the last message when it has the answer's role
            echo_text = last["content"] if request.echo and last and last["role"] == role else None
            if request.stream:
                stream = self._chat_stream(request, job, role, echo_text)
                return StreamingResponse(stream, media_type="text/event-stream")
            output = await _until_disconnected(raw, self.stand_in.result(job))
        except Exception as exc:  # facts A.1: ValueError or any other: 400 BadRequestError
            return error_response(str(exc))
        message = api.ChatMessage(
            role=role, content=(echo_text or "") + output.text, reasoning_content=""
        )
        choice = api.ChatCompletionResponseChoice(
            index=0,
            message=message,
            finish_reason=output.finish_reason,
            stop_reason=output.stop_reason,
        )
        usage = _usage(len(job.prompt_ids), len(output.token_ids))
        answer = api.ChatCompletionResponse(model=request.model, choices=[choice], usage=usage)
        return JSONResponse(answer.model_dump())  # facts A.7: every null kept

    async def _chat_stream(
        self, request: api.ChatCompletionRequest, job: Job, role: str, echo: str | None
    ) -> AsyncIterator[str]:
        # postprocess_handlers: one id and time for every chunk, the id on the request's number
        chunk_id, created = f"chatcmpl-{self.stand_in.request_id()}", int(time.time())
        include_usage, continuous = _usage_options(request.stream_options)
        prompt_tokens = len(job.prompt_ids)

        def chunk(
            choices: list[api.ChatCompletionResponseStreamChoice], usage: api.UsageInfo | None
        ) -> api.ChatCompletionStreamResponse:
            return api.ChatCompletionStreamResponse(
                id=chunk_id, created=created, model=request.model, choices=choices, usage=usage
            )

        output = Output()
        first = True
        # facts A.5: an engine error propagates: the stream is cut, no error event, no [DONE]
        async for output in self.stand_in.outputs(job, streaming=True):
            if first:
                first = False
                start = _usage(prompt_tokens, 0) if continuous else None
                for delta in [api.DeltaMessage(role=role)] + (
                    [api.DeltaMessage(content=echo)] if echo else []
                ):
                    opening = chunk(
                        [api.ChatCompletionResponseStreamChoice(index=0, delta=delta)], start
                    )
                    # facts A.5: the first chunks end with a space before the blank line
                    yield f"data: {opening.model_dump_json(exclude_none=True)} \n\n"
            if not (output.new_ids or output.text_diff or output.finish_reason):
                continue
            # facts A.5: without a reasoning parser, content deltas carry reasoning_content ""
            choice = api.ChatCompletionResponseStreamChoice(
                index=0,
                delta=api.DeltaMessage(content=output.text_diff, reasoning_content=""),
                finish_reason=output.finish_reason,
                stop_reason=output.stop_reason,
            )
            usage = _usage(prompt_tokens, len(output.token_ids)) if continuous else None
            yield _sse(chunk([choice], usage).model_dump_json(exclude_none=True))
        if include_usage:  # facts A.5: the usage chunk keeps its nulls
            yield _sse(chunk([], _usage(prompt_tokens, len(output.token_ids))).model_dump_json())
        yield DONE

    async def completion(self, request: api.CompletionRequest, raw: Request) -> Response:
        try:
            prompt = request.prompt
            single = isinstance(prompt, str) or isinstance(prompt[0], int)
            prompts = cast(list[str | list[int]], [prompt] if single else list(prompt))
            jobs = [self._completion_job(request, one) for one in prompts]
            if request.stream:
                stream = self._completion_streams(request, prompts, jobs)
                return StreamingResponse(stream, media_type="text/event-stream")
            answers = [
                self._completion_answer(request, one, index, job)
                for index, (one, job) in enumerate(zip(prompts, jobs, strict=True))
            ]
            results = await _until_disconnected(raw, asyncio.gather(*answers))
        except Exception as exc:  # facts A.1
            return error_response(str(exc))
        if len(results) == 1:
            return JSONResponse(results[0].model_dump())
        # openai_server merge_completion_responses: the served name, and prompt_token_ids []
        merged = api.CompletionResponse(
            model=self.stand_in.model,
            choices=[choice for result in results for choice in result.choices],
            usage=_usage(
                sum(result.usage.prompt_tokens for result in results),
                sum(result.usage.completion_tokens or 0 for result in results),
            ),
            prompt_token_ids=[],
        )
        return JSONResponse(merged.model_dump())

    def _completion_job(self, request: api.CompletionRequest, prompt: str | list[int]) -> Job:
        if isinstance(prompt, str):  # facts A.4: text is tokenized with add_special_tokens
            ids = self.stand_in.llm.encode(prompt, special=request.add_special_tokens)
            return self.stand_in.job(request, prompt, ids, request.max_tokens)
        ids = list(prompt)  # facts A.4: token prompts skip tokenization
        return self.stand_in.job(request, self.stand_in.llm.decode(ids), ids, request.max_tokens)

    async def _completion_answer(
        self, request: api.CompletionRequest, prompt: str | list[int], index: int, job: Job
    ) -> api.CompletionResponse:
        output = await self.stand_in.result(job)
        # postprocess_handlers: echo prepends the prompt as given (token ids fail to concatenate)
        text = prompt + output.text if request.echo else output.text  # type: ignore[operator]
        choice = api.CompletionResponseChoice(
            index=index * request.n,
            # facts A.4: detokenize false: token_ids, and empty text
            text=text if job.detokenize else "",
            token_ids=None if job.detokenize else output.token_ids,
            finish_reason=output.finish_reason,
            stop_reason=output.stop_reason,
        )
        usage = _usage(len(job.prompt_ids), len(output.token_ids))
        return api.CompletionResponse(model=request.model, choices=[choice], usage=usage)

    async def _completion_streams(
        self, request: api.CompletionRequest, prompts: list[str | list[int]], jobs: list[Job]
    ) -> AsyncIterator[str]:
        # openai_server: several prompts share a uuid; one prompt's chunks use its request number
        number = uuid.uuid4().hex if len(jobs) > 1 else str(self.stand_in.request_id())
        chunk_id, created = f"cmpl-{number}", int(time.time())
        streams = [
            self._completion_stream(request, prompt, index, job, chunk_id, created)
            for index, (prompt, job) in enumerate(zip(prompts, jobs, strict=True))
        ]
        # facts A.5: several prompts are merged into one stream
        async for event in _merged(streams):
            yield event
        yield DONE  # openai_server's generator_wrapper ends every stream with [DONE]

    async def _completion_stream(
        self,
        request: api.CompletionRequest,
        prompt: str | list[int],
        index: int,
        job: Job,
        chunk_id: str,
        created: int,
    ) -> AsyncIterator[str]:
        include_usage, continuous = _usage_options(request.stream_options)
        prompt_tokens = len(job.prompt_ids)

        def chunk(
            choices: list[api.CompletionResponseStreamChoice], usage: api.UsageInfo | None
        ) -> str:
            response = api.CompletionStreamResponse(
                id=chunk_id, created=created, model=request.model, choices=choices, usage=usage
            )
            return _sse(response.model_dump_json())  # facts A.5: completion chunks keep nulls

        output = Output()
        first = True
        try:
            async for output in self.stand_in.outputs(job, streaming=True):
                text = output.text_diff
                if request.echo and first:
                    text = prompt + text  # type: ignore[operator]  # as upstream, ids fail
                first = False
                choice = api.CompletionResponseStreamChoice(
                    index=index * request.n,
                    text=text if job.detokenize else "",
                    token_ids=None if job.detokenize else output.new_ids,
                    finish_reason=output.finish_reason,
                    stop_reason=output.stop_reason,
                )
                usage = _usage(prompt_tokens, len(output.token_ids)) if continuous else None
                yield chunk([choice], usage)
            if include_usage:
                yield chunk([], _usage(prompt_tokens, len(output.token_ids)))
        except Exception as exc:
            # facts A.5: a completion stream reports the error in-band, then [DONE], still 200
            error = {"message": str(exc), "type": "server_error", "code": None, "param": None}
            yield _sse(json.dumps({"error": error}))  # json.dumps' own spacing, as upstream
            yield DONE


def _usage(prompt_tokens: int, completion_tokens: int) -> api.UsageInfo:
    # facts A.7: cached_tokens is always filled; the stand-in reuses no KV cache, so 0
    return api.UsageInfo(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=api.PromptTokensDetails(cached_tokens=0),
    )


def _usage_options(options: api.StreamOptions | None) -> tuple[bool, bool]:
    """facts A.5: (a final usage chunk, usage on every chunk); neither without stream_options."""
    if options is None:
        return False, False
    include = bool(options.include_usage)
    return include, include and bool(options.continuous_usage_stats)


def _sse(data: str) -> str:
    return f"data: {data}\n\n"


async def _merged(streams: list[AsyncIterator[str]]) -> AsyncIterator[str]:
    """Events of several streams as they come (openai_server's merge_generators)."""
    if len(streams) == 1:
        async for event in streams[0]:
            yield event
        return
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump(stream: AsyncIterator[str]) -> None:
        try:
            async for event in stream:
                await queue.put(event)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(stream)) for stream in streams]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()


async def _until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelled once the client has gone (openai_server's await_disconnected)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        await asyncio.wait({task}, timeout=1.0)
        if not task.done() and await request.is_disconnected():
            task.cancel()
    return await task
