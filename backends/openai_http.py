"""The adapter for engines that speak OpenAI over HTTP: vLLM's server and `trtllm-serve`.

Bodies are forwarded as received unless a field must change (the served model name, or a field
the engine would reject), and answers are relayed as bytes: the hot path parses nothing twice.
The upstream client is aiohttp, chosen by measurement (see benchmarks/upstream_client).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from backends.base import Completion, EventStream, Health, UpstreamRequest
from backends.settings import HTTPBackendSettings
from gateway.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    UpstreamRejected,
)

T = TypeVar("T")
BACKOFF = 0.05  # seconds: the scale of the jittered exponential wait between attempts

# Rewrites a parsed body for an engine; returns None when the raw body can go as it is.
BodyFilter = Callable[[Mapping[str, Any]], dict[str, Any] | None]


class OpenAIHTTPBackend:
    """One pooled aiohttp session per backend, created at start and reused by every request."""

    def __init__(
        self, name: str, settings: HTTPBackendSettings, body_filter: BodyFilter | None = None
    ) -> None:
        self.name = name
        self._settings = settings
        self._base = settings.url.rstrip("/")
        self._served_model = settings.model
        self._body_filter = body_filter
        self._headers = {"content-type": "application/json"}
        if settings.api_key is not None:
            self._headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.max_concurrency,
                keepalive_timeout=30.0,
                enable_cleanup_closed=False,
            ),
            timeout=aiohttp.ClientTimeout(
                total=settings.total_timeout,
                sock_connect=settings.connect_timeout,
                sock_read=settings.read_timeout,
            ),
            auto_decompress=False,
            skip_auto_headers=("user-agent",),
        )

    @property
    def served_model(self) -> str | None:
        return self._served_model

    async def complete(self, request: UpstreamRequest) -> Completion:
        served = await self._served()
        body = self._body(request, served)
        data = await self._attempts(lambda: self._post_and_read(request, body))
        try:
            # A cheap check (microseconds) that spares clients a 200 they cannot parse.
            orjson.loads(data)
        except orjson.JSONDecodeError:
            message = f"backend '{self.name}' answered with invalid JSON"
            raise BackendProtocolError(message) from None
        return Completion(_rename_model(data, served, request.public_model, count=1))

    async def stream(self, request: UpstreamRequest) -> EventStream:
        served = await self._served()
        body = self._body(request, served)
        # Retries happen only here, before the first byte: never once a stream has started.
        response = await self._attempts(lambda: self._open_stream(request, body))
        return self._events(response, served, request.public_model)

    async def _post_and_read(self, request: UpstreamRequest, body: bytes) -> bytes:
        response = await self._send(request, body)
        async with response:
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._transport_error(exc) from exc
        if response.status >= 400:
            raise self._status_error(response.status, data)
        return data

    async def _open_stream(self, request: UpstreamRequest, body: bytes) -> aiohttp.ClientResponse:
        response = await self._send(request, body)
        if response.status >= 400:
            try:
                data = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._transport_error(exc) from exc
            finally:
                response.release()
            raise self._status_error(response.status, data)
        return response

    async def _send(self, request: UpstreamRequest, body: bytes) -> aiohttp.ClientResponse:
        """Sends the request and reads the answer's status line and headers, nothing more."""
        try:
            return await self._session.post(
                self._base + request.route.path, data=body, headers=self._request_headers(request)
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc, before_answer=True) from exc

    async def _attempts(self, send: Callable[[], Awaitable[T]]) -> T:
        """Retries only what is safe: a refused connection (nothing was sent), a connection
        dropped before the status line (nothing came back), or an engine's 503 (nothing was
        generated); bounded, with jittered backoff.

        The first attempt runs bare: tenacity's bookkeeping cost more than half of the
        gateway's own time per request (benchmarks/README.md), so it starts only once an
        attempt has failed in a way that is safe to repeat.
        """
        try:
            return await send()
        except GatewayError as exc:
            if not (exc.retryable and self._settings.retries):
                raise
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
        timeout = aiohttp.ClientTimeout(total=self._settings.connect_timeout + 1.0)
        try:
            async with self._session.get(self._base + "/health", timeout=timeout) as response:
                await response.read()
                if response.status != 200:
                    return Health(False, f"engine health answered {response.status}")
            served = await self._served()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Health(False, self._transport_error(exc).message)
        except GatewayError as exc:
            return Health(False, exc.message)
        return Health(True, "ok", served)

    async def close(self) -> None:
        await self._session.close()

    async def _served(self) -> str:
        """The engine's served model name: configured, or read once from its `/v1/models`."""
        if self._served_model is None:
            self._served_model = await self._discover_model()
        return self._served_model

    async def _discover_model(self) -> str:
        timeout = aiohttp.ClientTimeout(total=self._settings.connect_timeout + 3.0)
        try:
            async with self._session.get(
                self._base + "/v1/models", headers=self._headers, timeout=timeout
            ) as response:
                data = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        if status != 200:
            raise self._status_error(status, data)
        try:
            return str(orjson.loads(data)["data"][0]["id"])
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
            raise BackendProtocolError(
                f"backend '{self.name}' listed no model at /v1/models"
            ) from exc

    def _body(self, request: UpstreamRequest, served: str) -> bytes:
        changed = self._body_filter(request.payload) if self._body_filter else None
        if request.payload.get("model") != served:
            changed = dict(changed if changed is not None else request.payload)
            changed["model"] = served
        return request.raw if changed is None else orjson.dumps(changed)

    def _request_headers(self, request: UpstreamRequest) -> dict[str, str]:
        return {**self._headers, "x-request-id": request.request_id}

    async def _events(
        self, response: aiohttp.ClientResponse, served: str, public: str
    ) -> AsyncGenerator[bytes, None]:
        """Relays whole SSE events as soon as they arrive; closing it drops the upstream call."""
        pending = b""
        finished = False
        try:
            async for chunk in response.content.iter_any():
                pending += chunk
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                events, pending = pending[: cut + 2], pending[cut + 2 :]
                yield _rename_model(events, served, public)
            if pending.strip():
                raise BackendProtocolError(f"backend '{self.name}' ended a stream mid-event")
            finished = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._transport_error(exc) from exc
        finally:
            # An unfinished stream must drop its connection so the engine aborts the request.
            if finished:
                response.release()
            else:
                response.close()

    def _transport_error(self, exc: BaseException, before_answer: bool = False) -> GatewayError:
        if isinstance(exc, TimeoutError | asyncio.TimeoutError):
            return BackendTimeout(f"backend '{self.name}' did not answer in time")
        if isinstance(exc, aiohttp.ClientConnectorError):
            unreachable = BackendUnavailable(f"backend '{self.name}' is unreachable")
            unreachable.retryable = True
            return unreachable
        broken = BackendProtocolError(f"backend '{self.name}' broke the connection")
        # Closed or reset before the status line (an engine restarting, a stale pooled
        # connection): no byte of an answer exists, so sending the request again is safe.
        broken.retryable = before_answer and isinstance(
            exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError
        )
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
