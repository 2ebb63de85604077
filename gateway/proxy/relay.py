"""The pieces of one exchange on the hot path: what is known about it, how its answer is
relayed, and how a failure is rendered (JSON before the response started, SSE after)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from backends.arrivals import Arrivals
from backends.base import EventStream, Route
from backends.errors import GatewayError
from backends.piping import pipe
from backends.transport.turns import OnePerTurn
from gateway.http.asgi import BodyWriter, ClientDisconnected, Send, body_writer, json_headers
from gateway.logs import frames
from gateway.ratelimit.limiter import Grant
from gateway.shadow.leg import Mirror

log = logging.getLogger("gateway.proxy.handler")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
DONE_EVENT = b"data: [DONE]\n\n"
CLIENT_CLOSED = 499  # nginx's status for "client closed the request", for metrics only


@dataclass(slots=True)
class Exchange:
    """What the gateway knows about one request while serving it."""

    route: Route
    request_id: str
    started: float
    backend: str = "none"
    upstream_wait: float = 0.0
    debug: bytes | None = None  # the x-gateway-debug header, read by task aliases only
    user: bytes | None = None  # the x-gateway-user header: canary stickiness without `user`
    mirror: Mirror | None = None  # set when this request is shadowed
    fallback_for: str | None = None  # the backend whose open circuit sent this to the fallback
    model_route: str = ""  # the route (model) that took the request, for metrics
    grant: Grant | None = None  # admitted by client limits: released with the tokens used
    tokens: int = 0  # prompt plus completion, for tokens-per-minute limits
    answered: float = 0.0  # when a stream's client had its end, if before the handler's end

    def headers(self) -> list[tuple[bytes, bytes]]:
        overhead_ms = (perf_counter() - self.started - self.upstream_wait) * 1000.0
        headers = [
            (b"x-request-id", self.request_id.encode()),
            (b"x-gateway-backend", self.backend.encode()),
            (b"x-gateway-overhead-ms", f"{overhead_ms:.3f}".encode()),
        ]
        if self.fallback_for is not None:
            headers.append((b"x-gateway-fallback-for", self.fallback_for.encode()))
        if self.grant is not None:
            headers += self.grant.headers
        return headers


class Relay:
    """Sends each event as it arrives; an error mid-stream becomes an SSE error event.

    Under the gateway's own server each event is written from the upstream socket's callback
    (`backends.piping`): no task wakes per event, which kept the relay of streams stepped at
    once far behind its floor (benchmarks/README.md, "Streams in engine steps"). Under another
    server each event goes through ASGI `send`. Time spent waiting for the upstream's next event
    is added to the exchange's upstream wait as it passes, so the gateway's overhead excludes
    generation even for a cut stream.
    """

    def __init__(self, exchange: Exchange, tails: OnePerTurn | None = None) -> None:
        self.delivered = False  # the answer's events up to [DONE] were handed to the server
        self._ended = False  # the response's body was ended with its [DONE] (`_pipe`)
        self._exchange = exchange
        self._tails = tails  # where a stream whose client has its end waits for a quiet turn

    async def pump(self, events: EventStream, send: Send, capture: Arrivals | None = None) -> None:
        """`capture` keeps (arrival time, chunk) of a shadowed request, read off the hot path."""
        error: GatewayError | None = None
        try:
            writer = body_writer(send)
            if writer is None:
                await self._pull(events, send, capture)
            else:
                await self._pipe(events, writer, capture)
        except GatewayError as exc:
            error = exc
        except ClientDisconnected:
            raise
        except Exception as exc:  # a bug in an adapter: the client still gets a clean end
            log.error("unexpected %s in a stream\n%s", type(exc).__name__, frames(exc))
            error = GatewayError("internal gateway error")
        if error is not None and not self.delivered:
            body = error.to_sse() + DONE_EVENT
            if capture is not None:
                capture.add(perf_counter(), body)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        self.delivered = self.delivered or error is None
        if not self._ended:
            await send({"type": "http.response.body", "body": b""})

    async def _pipe(
        self, events: EventStream, writer: BodyWriter, capture: Arrivals | None
    ) -> None:
        exchange = self._exchange
        own = 0.0  # seconds spent on the events handed over: the gateway's, not the upstream's
        bugs: list[Exception] = []

        def deliver(chunk: bytes) -> bool:
            nonlocal own
            if self._ended:  # past [DONE] nothing is an answer's; the client has its end
                return True
            began = perf_counter()
            try:
                if capture is not None:
                    capture.add(began, chunk)
                # At [DONE] the client has its whole answer: the body ends in the same write,
                # and an SDK may hang up before the engine's last bytes have been read.
                last = chunk.endswith(DONE_EVENT)
                more = writer.write_body(chunk, last)
                if last:
                    self._ended = self.delivered = True
                    exchange.answered = perf_counter()
            except Exception as exc:  # raised in the socket's callback, it would blame the engine
                bugs.append(exc)
                return False
            own += perf_counter() - began
            return more

        while True:
            asked = perf_counter()
            try:
                ended = await pipe(events, deliver)
            finally:
                exchange.upstream_wait += perf_counter() - asked - own
                own = 0.0
            if bugs:
                raise bugs[0]
            if ended:
                if self._ended and self._tails is not None:
                    # Its client is served; the rest (metrics, the engine call's end, the
                    # shadow's outcome) waits its turn, so the streams ending at this engine
                    # step get their last events first.
                    await self._tails.next()
                return
            await writer.writable()  # the client's socket is full, or it left

    async def _pull(self, events: EventStream, send: Send, capture: Arrivals | None) -> None:
        upstream = aiter(events)
        exchange = self._exchange
        while True:
            asked = perf_counter()  # inlined, not a helper coroutine: this runs per event
            try:
                chunk = await anext(upstream, None)
            finally:
                exchange.upstream_wait += perf_counter() - asked
            if chunk is None:
                return
            if capture is not None:
                capture.add(perf_counter(), chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if chunk.endswith(DONE_EVENT):
                self.delivered = True  # as in `_pipe`


async def send_error(send: Send, exchange: Exchange, exc: GatewayError) -> None:
    body = exc.to_json()
    extra = [(name.lower().encode(), value.encode()) for name, value in exc.headers.items()]
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": json_headers(len(body), exchange.headers() + extra),
        }
    )
    await send({"type": "http.response.body", "body": body})


def user_of(payload: Mapping[str, Any], header: bytes | None) -> str | None:
    """Who is asking, for canary stickiness: the OpenAI `user` field, else a header."""
    user = payload.get("user")
    if isinstance(user, str) and user:
        return user
    return header.decode("latin-1") if header else None
