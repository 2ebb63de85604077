"""Shadow traffic: sampled requests mirrored to a candidate backend, off the hot path.

The client's answer never waits for, nor depends on, the candidate: the hot path only decides
to sample (a random draw), checks admission (two integer comparisons) and starts a task. That
task calls the candidate with the same body, in the same streaming mode, waits for the
primary's outcome, which the proxy hands over when the client's answer is done, and records
the pair. A fraction of sampled requests also goes to the primary a second time: the noise
floor. The leg is bounded: at most `max_in_flight` calls run, `queue` more wait, the rest are
dropped and counted; each call has its own timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from time import perf_counter
from typing import Any, Protocol

from backends.base import Backend, UpstreamRequest
from gateway import legs
from gateway.compare import Role, schema_valid
from gateway.errors import GatewayError
from gateway.legs import Parser
from gateway.metrics import Metrics
from gateway.pairs import Leg, PairKind, PairRecord, Params, sha256

log = logging.getLogger("gateway.shadow")
ROLES: tuple[Role, ...] = ("primary", "candidate")


class Sink(Protocol):
    """Where finished pairs go (the recorder); must never block or raise."""

    def record(self, pair: PairRecord) -> None: ...


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    rate: float
    noise_rate: float
    max_in_flight: int
    queue: int
    timeout: float
    keep_text: bool


@dataclass(slots=True)
class PrimaryOutcome:
    """What the client got, captured by the proxy as cheaply as possible (parsed later)."""

    status: int
    started: float
    ended: float = 0.0
    body: bytes | None = None
    chunks: list[tuple[float, bytes]] = field(default_factory=list)
    error: str | None = None


@dataclass(slots=True)
class Mirror:
    """The hot path's handle on one shadowed request."""

    outcome: asyncio.Future[PrimaryOutcome]
    stream: bool
    started: float = field(default_factory=perf_counter)

    def finish(self, outcome: PrimaryOutcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)


class ShadowLeg:
    """Mirrors a sample of the primary's traffic to `candidate` and records the pairs."""

    def __init__(
        self,
        primary: Backend,
        candidate: Backend,
        config: ShadowConfig,
        sink: Sink,
        metrics: Metrics,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.primary = primary
        self.candidate = candidate
        self._config = config
        self._sink = sink
        self._metrics = metrics
        self._draw = draw
        self._running = 0
        self._waiting = 0
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def mirror(
        self,
        upstream: UpstreamRequest,
        parse: Parser | None = None,
        prompt_version: str | None = None,
    ) -> Mirror | None:
        """Starts the shadow of one request, or returns None (not sampled, or dropped)."""
        if self._config.rate <= 0.0 or self._draw() >= self._config.rate:
            return None
        params = params_of(upstream.payload)
        self._metrics.shadow_sampled.inc()
        if self._running + self._waiting >= self._config.max_in_flight + self._config.queue:
            self._metrics.shadow_dropped.labels("queue_full").inc()
            return None
        mirror = Mirror(asyncio.get_running_loop().create_future(), upstream.stream)
        noise = self._draw() < self._config.noise_rate
        task = asyncio.create_task(
            self._run(mirror, upstream, params, parse, prompt_version, noise)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return mirror

    async def close(self, deadline: float) -> None:
        """Lets running shadows finish until `deadline` (seconds), then cancels the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
            for task in pending:
                task.cancel()
            if pending:
                self._metrics.shadow_dropped.labels("shutdown").inc(len(pending))

    async def _run(
        self,
        mirror: Mirror,
        upstream: UpstreamRequest,
        params: Params,
        parse: Parser | None,
        prompt_version: str | None,
        noise: bool,
    ) -> None:
        self._waiting += 1
        try:
            async with self._slots:
                self._waiting -= 1
                self._running += 1
                try:
                    calls = [self._call(self.candidate, upstream, "shadow", parse)]
                    if noise:
                        calls.append(self._call(self.primary, upstream, "noise", parse))
                    results = await asyncio.gather(*calls)
                finally:
                    self._running -= 1
            outcome = await asyncio.wait_for(mirror.outcome, self._config.timeout * 4)
        except (TimeoutError, asyncio.CancelledError):
            self._metrics.shadow_dropped.labels("primary_unfinished").inc()
            return
        except Exception as exc:  # a bug must not escape into the event loop's log as text
            log.error("shadow leg failed: %s", type(exc).__name__)
            self._metrics.shadow_failed.inc()
            return
        primary = _primary_leg(self.primary.name, outcome, mirror.stream, parse)
        kinds: tuple[PairKind, ...] = ("shadow", "noise")
        for kind, leg in zip(kinds, results, strict=False):
            self._record(kind, upstream, params, primary, leg, prompt_version)

    async def _call(
        self, backend: Backend, upstream: UpstreamRequest, tag: str, parse: Parser | None
    ) -> Leg:
        request = replace(upstream, request_id=f"{upstream.request_id}-{tag}")
        started = perf_counter()
        try:
            async with asyncio.timeout(self._config.timeout):
                if not upstream.stream:
                    completion = await backend.complete(request)
                    return legs.from_body(
                        backend.name, completion.body, (perf_counter() - started) * 1000, parse
                    )
                chunks: list[tuple[float, bytes]] = []
                events = await backend.stream(request)
                try:
                    async for chunk in events:
                        chunks.append((perf_counter(), chunk))
                finally:
                    await events.aclose()
                return legs.from_events(backend.name, chunks, started, perf_counter(), parse)
        except GatewayError as exc:
            self._metrics.shadow_failed.inc()
            return legs.failed(backend.name, exc.status_code, exc.message, _ms(started))
        except TimeoutError:
            self._metrics.shadow_failed.inc()
            return legs.failed(backend.name, 504, "shadow timeout", _ms(started))

    def _record(
        self,
        kind: PairKind,
        upstream: UpstreamRequest,
        params: Params,
        primary: Leg,
        other: Leg,
        prompt_version: str | None,
    ) -> None:
        if kind == "shadow":
            self._metrics.shadow_completed.inc()
            agreed = primary.text is not None and primary.text == other.text
            self._metrics.shadow_agreement.labels("agree" if agreed else "disagree").inc()
        pair = PairRecord(
            pair_id=uuid.uuid4().hex,
            created_at=time.time(),
            kind=kind,
            public_model=upstream.public_model,
            route=upstream.route.path,
            request_hash=sha256(upstream.raw),
            request=upstream.raw.decode("utf-8", "replace") if self._config.keep_text else None,
            params=params,
            primary=primary,
            candidate=other,
            prompt_version=prompt_version,
        )
        if params.schema is not None or params.response_format == "json_object":
            # Judged now, while the text exists: the hashes mode stores no text to judge later.
            verdicts = {f"{role}_schema_valid": schema_valid(pair, role) for role in ROLES}
            pair = replace(pair, extra={**pair.extra, **verdicts})
        self._sink.record(pair)


def params_of(payload: Mapping[str, Any]) -> Params:
    """The decoding parameters a request asked for, for the parity check."""
    response_format = payload.get("response_format") or {}
    schema = None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    stop = payload.get("stop") or ()
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return Params(
        stream=bool(payload.get("stream")),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=payload.get("temperature"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        schema=schema if isinstance(schema, dict) else None,
        response_format=response_format.get("type"),
    )


def _primary_leg(name: str, outcome: PrimaryOutcome, stream: bool, parse: Parser | None) -> Leg:
    e2e = (outcome.ended - outcome.started) * 1000.0
    if outcome.error is not None or outcome.status != 200:
        return legs.failed(name, outcome.status, outcome.error or "failed", e2e)
    if stream:
        return legs.from_events(name, outcome.chunks, outcome.started, outcome.ended, parse)
    return legs.from_body(name, outcome.body or b"", e2e, parse)


def _ms(started: float) -> float:
    return (perf_counter() - started) * 1000.0
