"""The hot path: OpenAI requests in, one backend call, the answer relayed as it comes.

Runs as plain ASGI (no framework) because a framework's request handling costs much of the
gateway's throughput (benchmarks/upstream_client/README.md). Every failure is a `GatewayError`
rendered here, as JSON before the response has started and as an SSE event after.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import orjson

from backends.arrivals import Arrivals
from backends.base import Backend, Route, UpstreamRequest
from backends.constraints import constraint_field
from backends.errors import (
    BackendUnavailable,
    GatewayError,
    InvalidRequest,
    UnsupportedParameter,
)
from backends.transport.turns import OnePerTurn
from gateway.http.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    json_headers,
    read_body,
    request_id_from,
    until_disconnect,
)
from gateway.logs import frames
from gateway.metrics import Metrics
from gateway.probes import Conformance
from gateway.proxy.auth import KeyCheck
from gateway.proxy.guard import Guarded
from gateway.proxy.parsing import parse_body
from gateway.proxy.relay import (
    CLIENT_CLOSED,
    SSE_HEADERS,
    Exchange,
    Relay,
    send_error,
    user_of,
)
from gateway.proxy.routing import ModelRoute, Router
from gateway.ratelimit.limiter import RatePolicy
from gateway.ratelimit.usage import completed, streamed
from gateway.shadow.pairing import PrimaryOutcome
from gateway.tasks.task import PROMPT_VERSION_HEADER, Task

log = logging.getLogger("gateway.proxy.handler")


class Proxy:
    """Serves `/v1/chat/completions` and `/v1/completions`."""

    def __init__(
        self,
        router: Router,
        keys: KeyCheck,
        metrics: Metrics,
        max_body: int,
        tasks: Mapping[str, Task] | None = None,
        conformance: Conformance | None = None,
        limits: RatePolicy | None = None,
    ) -> None:
        self._router = router
        self._keys = keys
        self._metrics = metrics
        self._max_body = max_body
        self._tasks = tasks or {}  # the task aliases; `router.tasks` says which route each runs on
        self._conformance = conformance or Conformance()
        self._limits = limits if limits is not None and limits.enabled else None
        self._tails = OnePerTurn()  # what is left of streams whose clients have their end
        self.active = 0  # requests being served, so a reload knows when this proxy is idle

    async def __call__(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = request_id = debug = user = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
            elif key == b"x-request-id":
                request_id = value
            elif key == b"x-gateway-debug":
                debug = value
            elif key == b"x-gateway-user":
                user = value
        exchange = Exchange(
            route, request_id_from(request_id), perf_counter(), debug=debug, user=user
        )
        status = CLIENT_CLOSED
        self.active += 1
        try:
            status = await self._serve(exchange, authorization, receive, send)
        except ClientDisconnected:
            status = CLIENT_CLOSED
        except Exception as exc:  # a bug: answer 500, keep serving, log no request content
            log.error(
                "unexpected %s serving %s\n%s",
                type(exc).__name__,
                exchange.request_id,
                frames(exc),
            )
            status = 500
            await self._try_send_error(send, exchange, GatewayError("internal gateway error"))
        finally:
            if exchange.grant is not None and self._limits is not None:
                await self._limits.release(exchange.grant, exchange.tokens)
            self.active -= 1
            finished = exchange.answered or perf_counter()
            if exchange.mirror is not None:  # a no-op when the relay already handed it over
                exchange.mirror.finish(PrimaryOutcome(status, exchange.started, finished))
            elapsed = finished - exchange.started
            self._metrics.observe(
                exchange.model_route,
                exchange.backend,
                route.path,
                status,
                elapsed,
                max(elapsed - exchange.upstream_wait, 0.0),
            )

    async def _serve(
        self, exchange: Exchange, authorization: bytes | None, receive: Receive, send: Send
    ) -> int:
        try:
            key = self._keys.verify(authorization)
            raw = await read_body(receive, self._max_body)
            parsed = parse_body(exchange.route, raw)
            payload = parsed.payload
            # --- task aliases (gateway/tasks/task.py): one dict lookup for every other request ---
            task = self._tasks.get(parsed.model)
            if task is not None:
                chosen = self._router.tasks[task.alias]
                exchange.model_route = chosen.label
                if self._limits is not None:  # 429 for a client past its own limits
                    exchange.grant = await self._limits.admit(key, chosen.label)
                chosen.admit()  # 429 on this route alone when it is at its cap
                try:
                    return await self._serve_task(task, chosen, payload, exchange, receive, send)
                finally:
                    chosen.active -= 1
            # --- end of task aliases ---
            chosen = self._router.route_for(parsed.model)  # 404 for a name no route has
            exchange.model_route = chosen.label
            upstream = UpstreamRequest(
                exchange.route, raw, payload, parsed.model, exchange.request_id, parsed.stream
            )
            if self._limits is not None:
                exchange.grant = await self._limits.admit(key, chosen.label)
            chosen.admit()
            try:
                return await self._relay(chosen, upstream, exchange, receive, send)
            finally:
                chosen.active -= 1
        except GatewayError as exc:
            if exchange.mirror is not None:
                outcome = PrimaryOutcome(exc.status_code, exchange.started, perf_counter())
                outcome.error = exc.message
                outcome.endpoint = exc.endpoint
                exchange.mirror.finish(outcome)
            await send_error(send, exchange, exc)
            return exc.status_code

    async def _relay(
        self,
        chosen: ModelRoute,
        upstream: UpstreamRequest,
        exchange: Exchange,
        receive: Receive,
        send: Send,
    ) -> int:
        backend = self._pick(chosen, upstream.payload, exchange)
        self._refuse_ignored_constraint(backend, upstream.payload)
        shadow = chosen.shadow
        if shadow is not None and backend is shadow.primary:
            exchange.mirror = shadow.mirror(upstream)
            if exchange.mirror is not None:  # the pair shows the ids each engine read
                upstream = upstream.with_token_ids()
        in_flight = self._metrics.in_flight_for(chosen.label, backend.name, exchange.route.path)
        in_flight.inc()
        try:
            if upstream.stream:
                return await self._relay_stream(backend, upstream, exchange, receive, send)
            return await self._relay_completion(backend, upstream, exchange, receive, send)
        finally:
            in_flight.dec()

    def _pick(self, chosen: ModelRoute, payload: Mapping[str, Any], exchange: Exchange) -> Guarded:
        backend = chosen.serving(user_of(payload, exchange.user))
        exchange.backend = backend.name
        if backend is chosen.fallback and backend is not chosen.primary:
            exchange.fallback_for = chosen.primary.name
            self._metrics.fallback_for(backend.name).inc()
        return backend

    def _refuse_ignored_constraint(self, backend: Guarded, payload: Mapping[str, Any]) -> None:
        """A 400 rather than an unconstrained answer: the conformance probe saw this backend
        accept a constraint and answer outside it (trtllm-serve without a guided-decoding
        backend drops `response_format` and answers 200)."""
        ignored = self._conformance.ignores_constraints(backend.name)
        if ignored is None:
            return
        field = constraint_field(payload)
        if field is not None:
            raise UnsupportedParameter(
                f"backend '{backend.name}' accepts structured outputs and ignores them "
                f"(conformance probe: {ignored.detail}), so it cannot honour '{field}'",
                param=field,
                code="constraint_ignored",
            )

    async def _serve_task(
        self,
        task: Task,
        chosen: ModelRoute,
        payload: dict[str, Any],
        exchange: Exchange,
        receive: Receive,
        send: Send,
    ) -> int:
        """A task alias: the task builds the primary's request and reads its one-code answer.

        Raises `InvalidRequest` (400) for a body the task cannot take, a stream included, and
        `BackendProtocolError` (502) when the model's answer is not one of the task's codes.
        """
        if exchange.route is not Route.CHAT:
            raise InvalidRequest(
                f"the task '{task.alias}' is served on /v1/chat/completions", param="model"
            )
        body = task.build(payload, model=task.alias)  # the backend maps the name it serves
        backend = self._pick(chosen, payload, exchange)
        ignored = self._conformance.ignores_constraints(backend.name)
        if ignored is not None:
            raise BackendUnavailable(
                f"backend '{backend.name}' accepts structured outputs and ignores them "
                f"(conformance probe: {ignored.detail}); the task '{task.alias}' needs its "
                "constraint",
                code="constraint_ignored",
            )
        upstream = UpstreamRequest(
            Route.CHAT, orjson.dumps(body), body, task.alias, exchange.request_id, False
        )
        shadow = chosen.shadow
        if shadow is not None and backend is shadow.primary:
            exchange.mirror = shadow.mirror(
                upstream, parse=task.expand, prompt_version=task.version
            )
            if exchange.mirror is not None:
                upstream = upstream.with_token_ids()
        in_flight = self._metrics.in_flight_for(chosen.label, backend.name, exchange.route.path)
        in_flight.inc()
        try:
            waited = perf_counter()
            completion = await until_disconnect(backend.complete(upstream), receive)
            exchange.upstream_wait = perf_counter() - waited
        finally:
            in_flight.dec()
        if exchange.mirror is not None:
            exchange.mirror.finish(
                PrimaryOutcome(
                    200, waited, perf_counter(), completion.body, completion.answer,
                    ids=completion.ids, endpoint=completion.endpoint,
                )
            )  # fmt: skip
        if exchange.grant is not None:
            exchange.tokens = completed(completion.answer, completion.body)
        result = task.result(completion.body)
        answer = result.body(include_raw=exchange.debug == b"raw")
        headers = [*exchange.headers(), (PROMPT_VERSION_HEADER.encode(), task.version.encode())]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": json_headers(len(answer), headers),
            }
        )
        await send({"type": "http.response.body", "body": answer})
        return 200

    async def _relay_completion(
        self,
        backend: Backend,
        upstream: UpstreamRequest,
        exchange: Exchange,
        receive: Receive,
        send: Send,
    ) -> int:
        waited = perf_counter()
        completion = await until_disconnect(backend.complete(upstream), receive)
        exchange.upstream_wait = perf_counter() - waited
        body = completion.body
        if exchange.mirror is not None:
            outcome = PrimaryOutcome(200, waited, perf_counter(), body, completion.answer)
            outcome.ids = completion.ids
            outcome.endpoint = completion.endpoint
            exchange.mirror.finish(outcome)
        if exchange.grant is not None:
            exchange.tokens = completed(completion.answer, body)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": json_headers(len(body), exchange.headers()),
            }
        )
        await send({"type": "http.response.body", "body": body})
        return 200

    async def _relay_stream(
        self,
        backend: Backend,
        upstream: UpstreamRequest,
        exchange: Exchange,
        receive: Receive,
        send: Send,
    ) -> int:
        waited = perf_counter()
        events = await until_disconnect(backend.stream(upstream), receive)
        exchange.upstream_wait = perf_counter() - waited
        counted = exchange.mirror is not None or exchange.grant is not None
        chunks = Arrivals() if counted else None
        relay = Relay(exchange, self._tails)
        try:  # from here on, whatever happens closes the upstream stream
            headers = SSE_HEADERS + exchange.headers()
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await until_disconnect(relay.pump(events, send, chunks), receive)
        except ClientDisconnected:
            # A client that hangs up once it has read [DONE] was fully served.
            if not relay.delivered:
                raise
        finally:
            await events.aclose()
            if exchange.grant is not None and chunks is not None:
                exchange.tokens = streamed(chunks.pieces, upstream.raw)
            if exchange.mirror is not None and chunks is not None:
                done = 200 if relay.delivered else CLIENT_CLOSED
                ended = exchange.answered or perf_counter()
                outcome = PrimaryOutcome(done, waited, ended, chunks=chunks)
                outcome.ids = events.ids
                outcome.endpoint = events.endpoint
                exchange.mirror.finish(outcome)
        return 200

    async def _try_send_error(self, send: Send, exchange: Exchange, exc: GatewayError) -> None:
        # If the response had started, nothing more can be said to this client.
        with contextlib.suppress(Exception):
            await send_error(send, exchange, exc)
