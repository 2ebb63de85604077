"""The adapter for engines that speak OpenAI over HTTP: vLLM's server and `trtllm-serve`.

Bodies are forwarded as received unless a field must change (the served model name, or a field
the engine would reject), and answers are relayed as bytes: the hot path parses nothing twice.
The upstream client is backends.transport.http1, chosen by measurement: it costs a fraction of
aiohttp's CPU per call (benchmarks/upstream_client/README.md).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from backends.base import Completion, EventStream, Health, Route, TokenIds, UpstreamRequest
from backends.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    UpstreamRejected,
)
from backends.piping import Deliver
from backends.sampling import Sampling
from backends.settings import HTTPBackendSettings
from backends.stop_cut import DONE, StreamCut, cut_answer
from backends.token_ids import take_ids
from backends.transport import http1
from backends.values import value_class

T = TypeVar("T")
BACKOFF = 0.05  # seconds: the scale of the jittered exponential wait between attempts
# Seconds an idle upstream connection is kept: under uvicorn's 5 s default, so vLLM's server
# (and trtllm-serve's) rarely closes a connection just as a request goes out on it.
KEEPALIVE = 4.0


class Dialect(Protocol):
    """What one engine's OpenAI server needs from the gateway (`backends.vllm`,
    `backends.trtllm_serve`): the body it must get, and the sampling it runs with."""

    def sampling(self, request: UpstreamRequest) -> Sampling: ...

    def stops(self, request: UpstreamRequest) -> tuple[str, ...]:
        """The stop strings the gateway must apply itself (`backends.stop_cut`): none where
        the engine applies them as vLLM does."""
        ...

    def payload(self, request: UpstreamRequest) -> Outgoing:
        """The request as this engine must get it; `changed` None when the client's bytes go
        as they are (the served model name aside)."""
        ...


@value_class
class Outgoing:
    changed: dict[str, Any] | None  # the rewritten body, or None: the client's bytes as sent
    prompt_ids: tuple[int, ...] | None = None  # the prompt ids the gateway sent, if it did


class OpenAIHTTPBackend:
    """One pool of keep-alive connections per backend, created at start, used by every request."""

    def __init__(self, name: str, settings: HTTPBackendSettings, dialect: Dialect) -> None:
        self.name = name
        self._settings = settings
        self._served_model = settings.model
        self._dialect = dialect
        self._pool = http1.Pool(
            settings.url,
            limit=settings.max_concurrency,
            keepalive=KEEPALIVE,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            total_timeout=settings.total_timeout,
        )
        auth = {}
        if settings.api_key is not None:
            auth["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        json_headers = {"content-type": "application/json", **auth}
        # Request lines and fixed headers, encoded once: a call adds its length and id.
        self._posts = {route: self._pool.head("POST", route.path, json_headers) for route in Route}
        self._health_head = self._pool.head("GET", settings.health_path)
        self._models_head = self._pool.head("GET", "/v1/models", auth)

    @property
    def served_model(self) -> str | None:
        return self._served_model

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return self._dialect.sampling(request)

    async def complete(self, request: UpstreamRequest) -> Completion:
        served = self._served_model or await self._served()  # no coroutine once it is known
        outgoing = self._dialect.payload(request)
        body = self._body(request, outgoing, served)
        try:  # the first attempt runs bare: see `_retried`
            data = await self._post_and_read(request, body)
        except GatewayError as failure:
            data = await self._retried(failure, lambda: self._post_and_read(request, body))
        try:
            # A cheap check that spares clients a 200 they cannot parse.
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            message = f"backend '{self.name}' answered with invalid JSON"
            raise BackendProtocolError(message) from None
        stops = self._dialect.stops(request)
        if stops and isinstance(answer, dict) and cut_answer(answer, stops, request.route):
            data = orjson.dumps(answer)
        ids = None
        if request.token_ids:
            ids = TokenIds(outgoing.prompt_ids)
            data = take_ids(data, ids)
        renamed = _rename_model(data, served, request.public_model, count=1)
        return Completion(renamed, answer if isinstance(answer, dict) else None, ids)

    async def stream(self, request: UpstreamRequest) -> EventStream:
        served = self._served_model or await self._served()
        outgoing = self._dialect.payload(request)
        body = self._body(request, outgoing, served)
        # Retries happen only here, before the first byte: never once a stream has started.
        try:
            response = await self._open_stream(request, body)
        except GatewayError as failure:
            response = await self._retried(failure, lambda: self._open_stream(request, body))
        ids = TokenIds(outgoing.prompt_ids) if request.token_ids else None
        stops = self._dialect.stops(request)
        cut = StreamCut(stops, request.route) if stops else None
        return _Stream(self, response, _WholeEvents(served, request.public_model, ids, cut))

    async def _post_and_read(self, request: UpstreamRequest, body: bytes) -> bytes:
        head, request_id = self._posts[request.route], _request_id_line(request)
        try:
            answer = await self._pool.fetch(head, body, request_id)
        except http1.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if answer.status >= 400:
            raise self._status_error(answer.status, answer.body)
        return answer.body

    async def _open_stream(self, request: UpstreamRequest, body: bytes) -> http1.Response:
        """Sends the request and reads the answer's status line and headers, nothing more."""
        head, request_id = self._posts[request.route], _request_id_line(request)
        try:
            response = await self._pool.open(head, body, request_id)
            if response.status < 400:
                return response
            data = await response.read()
        except http1.HTTPError as exc:
            raise self._transport_error(exc) from exc
        raise self._status_error(response.status, data)

    async def _retried(self, failure: GatewayError, send: Callable[[], Awaitable[T]]) -> T:
        """After a first attempt failed with `failure`, retries only what is safe: a refused
        connection (nothing was sent), a connection dropped before the status line (nothing
        came back), or an engine's 503 (nothing was generated); bounded, with jittered backoff.
        Anything else is raised as it is.

        The first attempt runs bare, in the caller: tenacity's bookkeeping was a large share of
        the gateway's own time per request (benchmarks/README.md, optimisation log), so it
        starts only once an attempt has failed in a way that is safe to repeat. Even a wrapper
        coroutine around the first attempt cost a measurable share of an upstream call's CPU.
        """
        if not (failure.retryable and self._settings.retries):
            raise failure
        await asyncio.sleep(random.uniform(0, BACKOFF))  # the first wait, as tenacity's below
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._settings.retries),
            wait=wait_random_exponential(multiplier=BACKOFF, max=1.0),
            retry=retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            reraise=True,
        ):
            with attempt:
                return await send()
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def health(self) -> Health:
        try:
            total = self._settings.connect_timeout + 1.0
            answer = await self._pool.fetch(self._health_head, total=total)
            if answer.status != 200:
                return Health(False, f"engine health answered {answer.status}")
            served = await self._served()
        except http1.HTTPError as exc:
            return Health(False, self._transport_error(exc).message)
        except GatewayError as exc:
            return Health(False, exc.message)
        return Health(True, "ok", served)

    async def close(self) -> None:
        await self._pool.close()

    async def _served(self) -> str:
        """The engine's served model name: configured, or read once from its `/v1/models`."""
        if self._served_model is None:
            self._served_model = await self._discover_model()
        return self._served_model

    async def _discover_model(self) -> str:
        total = self._settings.connect_timeout + 3.0
        try:
            answer = await self._pool.fetch(self._models_head, total=total)
        except http1.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if answer.status != 200:
            raise self._status_error(answer.status, answer.body)
        try:
            return str(orjson.loads(answer.body)["data"][0]["id"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise BackendProtocolError(
                f"backend '{self.name}' listed no model at /v1/models"
            ) from exc

    def _body(self, request: UpstreamRequest, outgoing: Outgoing, served: str) -> bytes:
        changed = outgoing.changed
        if request.payload.get("model") != served:
            changed = dict(changed if changed is not None else request.payload)
            changed["model"] = served
        return request.raw if changed is None else orjson.dumps(changed)

    async def _events(
        self, response: http1.Response, whole: _WholeEvents
    ) -> AsyncGenerator[bytes, None]:
        """Relays whole SSE events as soon as they arrive; closing it drops the upstream call."""
        try:
            while (chunk := await response.next_chunk()) is not None:
                events = whole.events(chunk)
                if events is not None:
                    yield events
                if whole.cut:  # at a stop the engine missed: it would generate on, unread
                    return
            self._check_ended(whole)
        except http1.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            # Unless the whole answer came, this closes the connection: the engine aborts.
            response.close()

    async def _pipe(self, response: http1.Response, whole: _WholeEvents, deliver: Deliver) -> bool:
        """`_events`, handed on from the socket's callback (`backends.piping`)."""

        def sink(chunk: bytes) -> bool:
            events = whole.events(chunk)
            return (True if events is None else deliver(events)) and not whole.cut

        try:
            ended = await response.pipe(sink)
        except http1.HTTPError as exc:
            raise self._transport_error(exc) from exc
        if whole.cut:  # as in `_events`: the answer ended at a stop, the engine is left
            response.close()
            return True
        if ended:
            self._check_ended(whole)
        return ended

    def _check_ended(self, whole: _WholeEvents) -> None:
        if whole.pending.strip():
            raise BackendProtocolError(f"backend '{self.name}' ended a stream mid-event")

    def _transport_error(self, exc: http1.HTTPError) -> GatewayError:
        if isinstance(exc, http1.ConnectTimeout):
            unanswered = BackendTimeout(
                f"backend '{self.name}' did not accept a connection in time"
            )
            unanswered.retryable = True  # the request never went: another endpoint may take it
            return unanswered
        if isinstance(exc, http1.Timeout):
            return BackendTimeout(f"backend '{self.name}' did not answer in time")
        if isinstance(exc, http1.ConnectFailed):
            unreachable = BackendUnavailable(f"backend '{self.name}' is unreachable")
            unreachable.retryable = True
            return unreachable
        broken = BackendProtocolError(f"backend '{self.name}' broke the connection")
        # Closed or reset before any byte of an answer (an engine restarting, a stale pooled
        # connection): nothing was generated, so sending the request again is safe.
        broken.retryable = isinstance(exc, http1.DisconnectedBeforeStatus)
        return broken

    def _status_error(self, status: int, data: bytes) -> GatewayError:
        message, error_type, param, code = _parse_error(data)
        if status == 503 or status == 429:
            busy = BackendUnavailable(f"backend '{self.name}' is overloaded or not ready")
            busy.retryable = status == 503
            return busy
        if 400 <= status < 500:
            return UpstreamRejected(
                status,
                message or "rejected by backend",
                param=param,
                code=code,
                error_type=error_type,
            )
        return BackendProtocolError(
            f"backend '{self.name}' failed with status {status}: {message or 'no message'}"
        )


class _WholeEvents:
    """Whole SSE events out of an answer's pieces, as the client must see them: a shadowed
    request's token ids taken out (into `ids`), the text cut at the request's stop strings
    where the engine matches them on ids only (`stops`; `cut` once the answer ended at one),
    the served model name renamed."""

    __slots__ = ("cut", "ids", "pending", "public", "served", "stops")

    def __init__(
        self, served: str, public: str, ids: TokenIds | None, stops: StreamCut | None = None
    ) -> None:
        self.served, self.public, self.ids, self.stops = served, public, ids, stops
        self.pending = b""  # the start of an event whose end has not come yet
        self.cut = False

    def events(self, chunk: bytes) -> bytes | None:
        """The events `chunk` completes; None while the one it starts is still cut."""
        if self.pending or not chunk.endswith(b"\n\n"):  # else (most pieces): no copy
            data = self.pending + chunk
            cut = data.rfind(b"\n\n") + 2
            if cut < 2:
                self.pending = data
                return None
            chunk, self.pending = data[:cut], data[cut:]
        if self.ids is not None:
            chunk = take_ids(chunk, self.ids)
        if self.stops is not None:
            chunk = self.stops.events(chunk)
            if self.stops.done and DONE not in chunk:
                chunk += DONE
                self.cut = True
            if not chunk:
                return None
        return _rename_model(chunk, self.served, self.public)


class _Stream:
    """The events of one answer, pulled (`async for`) or piped (`pipe`, `backends.piping`);
    `aclose()` ends the upstream call even if never read."""

    def __init__(
        self, backend: OpenAIHTTPBackend, response: http1.Response, whole: _WholeEvents
    ) -> None:
        self._backend = backend
        self._response = response
        self._whole = whole
        self._events = backend._events(response, whole)
        self.ids = whole.ids
        self.endpoint: str | None = None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._events

    async def pipe(self, deliver: Deliver) -> bool:
        return await self._backend._pipe(self._response, self._whole, deliver)

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            self._response.close()


def _parse_error(data: bytes) -> tuple[str, str | None, str | None, str | None]:
    """Reads an OpenAI-style error body (vLLM nests it under "error"; old servers don't)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "", None, None, None
    if not isinstance(parsed, dict):
        return "", None, None, None
    error = parsed.get("error", parsed)
    if not isinstance(error, dict):
        return str(error), None, None, None

    def text(key: str) -> str | None:
        value = error.get(key)
        return value if isinstance(value, str) else None

    return text("message") or "", text("type"), text("param"), text("code")


def _request_id_line(request: UpstreamRequest) -> bytes:
    """The call's `x-request-id` header, encoded directly: a dict for `http1.encode_headers`
    cost several times as much, on every call."""
    return http1.header_line("x-request-id", request.request_id)


def _rename_model(data: bytes, served: str, public: str, count: int = -1) -> bytes:
    """Shows the client the model name it asked for.

    A byte replace is safe here: inside JSON strings every quote is escaped, so the unescaped
    `"model":"<name>"` sequence can only be the key itself.
    """
    if served == public:
        return data
    return data.replace(_model_field(served), _model_field(public), count)


def _model_field(name: str) -> bytes:
    return b'"model":' + orjson.dumps(name)
