"""Shadow traffic: sampled requests mirrored to a candidate backend, off the hot path.

The client's answer never waits for, nor depends on, the candidate: the hot path only decides
to sample (a random draw), checks admission (one integer comparison) and starts a task. That
task calls the candidate with the same body, in the same streaming mode, waits for the
primary's outcome, which the proxy hands over when the client's answer is done, and records
the pair (`gateway.shadow.pairing`). A fraction of sampled requests also goes to the primary a
second time: the noise floor. The leg is bounded: at most `max_in_flight` calls run, `queue` more
wait, the rest are dropped and counted; one timer ends the calls past the shadow timeout.
Admission is counted when `mirror` returns, not when the task first runs, so a burst of
requests cannot overfill the queue. Given a `StreamReader`, streamed calls are read in its child
process (`gateway.shadow.reader`), out of the relay's turns.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol

from backends.base import Backend, TokenIds, UpstreamRequest
from backends.errors import GatewayError
from backends.transport.turns import OnePerTurn
from gateway.metrics import ShadowCounts
from gateway.shadow import legs
from gateway.shadow.compare import agrees, failed
from gateway.shadow.legs import Parser
from gateway.shadow.pairing import PrimaryOutcome, pair_of, params_of, primary_leg
from gateway.shadow.pairs import Leg, PairKind, PairRecord, Params
from gateway.shadow.reader import StreamReader, read_events

log = logging.getLogger("gateway.shadow.leg")
SWEEPS_PER_TIMEOUT = 4  # `ShadowLeg._sweep` runs every quarter of a shadow timeout
PRIMARY_WAIT_TIMEOUTS = 4  # shadow timeouts a finished call waits for its primary's answer


# A leg, the token ids its engine gave, and the endpoint of a replica pool that answered.
Answered = tuple[Leg, TokenIds | None, str | None]


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


@dataclass(slots=True, eq=False)  # by identity: the leg keeps the waiting ones in a set
class Mirror:
    """The hot path's handle on one shadowed request."""

    outcome: asyncio.Future[PrimaryOutcome]
    stream: bool
    started: float = field(default_factory=perf_counter)
    admitted: bool = True  # holds one of the leg's places until its calls are done
    task: asyncio.Task[None] | None = None  # the leg's task running its calls
    calls_until: float = 0.0  # loop time its calls time out (`ShadowLeg._sweep`)
    timed_out: bool = False  # its calls were ended by the shadow timeout
    waiting_since: float = 0.0  # loop time its calls ended and the wait for the primary began

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
        counts: ShadowCounts,
        draw: Callable[[], float] = random.random,
        task_schemas: Mapping[str, dict[str, Any]] | None = None,
        reader: StreamReader | None = None,
    ) -> None:
        self.primary = primary
        self.candidate = candidate
        self._config = config
        self._sink = sink
        self._counts = counts  # the route's shadow counters
        self.route = ""  # the route's name, once known (`gateway.proxy.routing`), for the pairs
        self._draw = draw
        self._task_schemas = task_schemas or {}  # output schemas of task aliases, by alias
        self.admitted = 0  # shadows running or waiting for a place to run
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._calling: set[Mirror] = set()  # calls under way
        self._waiting: set[Mirror] = set()  # calls done, the primary's outcome not yet in
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing = False
        self._turns = OnePerTurn()  # streamed legs are read and paired one per loop turn
        self._reader = reader  # where streamed calls are read, if not in this process

    def mirror(
        self,
        upstream: UpstreamRequest,
        parse: Parser | None = None,
        prompt_version: str | None = None,
    ) -> Mirror | None:
        """Starts the shadow of one request, or returns None (not sampled, or dropped).

        `parse` and `prompt_version` come with a task alias: its answers are read by the task,
        and its output schema (given at construction) is the pair's schema.
        """
        if self._config.rate <= 0.0 or self._draw() >= self._config.rate:
            return None
        self._counts.sampled.inc()
        if self.admitted >= self._config.max_in_flight + self._config.queue:
            self._counts.queue_full.inc()
            return None
        self.admitted += 1
        task_schema = self._task_schemas.get(upstream.public_model) if prompt_version else None
        params = params_of(upstream.payload, task_schema)
        mirror = Mirror(asyncio.get_running_loop().create_future(), upstream.stream)
        noise = self._config.noise_rate > 0.0 and self._draw() < self._config.noise_rate
        task = asyncio.create_task(
            self._run(mirror, upstream, params, parse, prompt_version, noise)
        )
        mirror.task = task
        self._tasks.add(task)
        # Also when cancelled before it ever ran, so its place is never lost.
        task.add_done_callback(lambda done: self._done(done, mirror))
        return mirror

    def _done(self, task: asyncio.Task[None], mirror: Mirror) -> None:
        self._tasks.discard(task)
        self._release(mirror)

    def _release(self, mirror: Mirror) -> None:
        if mirror.admitted:
            mirror.admitted = False
            self.admitted -= 1

    async def close(self, deadline: float) -> None:
        """Lets running shadows finish until `deadline` (seconds), then cancels the rest."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=deadline)
            self._closing = True  # what is cancelled now is counted as a shutdown drop only
            for task in pending:
                task.cancel()
            if pending:
                self._counts.dropped("shutdown").inc(len(pending))
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _run(
        self,
        mirror: Mirror,
        upstream: UpstreamRequest,
        params: Params,
        parse: Parser | None,
        prompt_version: str | None,
        noise: bool,
    ) -> None:
        try:
            try:
                async with self._slots:
                    results = await self._calls(mirror, upstream, parse, noise)
            finally:
                self._release(mirror)
            outcome = await self._primary_outcome(mirror)
            if mirror.stream:  # streams end together at an engine's step: one pair per turn
                await self._turns.next()
        except (TimeoutError, asyncio.CancelledError):
            if not self._closing:
                self._counts.dropped("primary_unfinished").inc()
            return
        except Exception as exc:  # a bug must not escape into the event loop's log as text
            log.error("shadow leg failed: %s", type(exc).__name__)
            self._counts.failed.inc()
            return
        primary = primary_leg(self.primary.name, outcome, mirror.stream, parse)
        sampling = self.primary.sampling(upstream)
        primary = legs.with_evidence(primary, outcome.ids, sampling, outcome.endpoint)
        kinds: tuple[PairKind, ...] = ("shadow", "noise")
        keep_text = self._config.keep_text
        for kind, (leg, ids, _) in zip(kinds, results, strict=False):
            prompts = (_prompt(outcome.ids), _prompt(ids))
            pair = pair_of(
                kind, upstream, params, primary, leg, prompt_version, keep_text, prompts,
                self.route or None,
            )  # fmt: skip
            if kind == "shadow":
                count_agreement(self._counts, pair)
            self._sink.record(pair)

    async def _calls(
        self, mirror: Mirror, upstream: UpstreamRequest, parse: Parser | None, noise: bool
    ) -> list[Answered]:
        """The shadow call, and the noise call if drawn; `_sweep` ends them after 1 to 1.25
        shadow timeouts (`longest_call`; both, when one is late: a noise answer is then lost)."""
        loop = asyncio.get_running_loop()
        started = perf_counter()
        mirror.calls_until = loop.time() + self._config.timeout
        self._calling.add(mirror)
        self._arm(loop)
        try:
            shadow = self._call(self.candidate, upstream, "shadow", parse)
            if not noise:  # most shadows: awaited here, no task of its own to schedule
                return [await shadow]
            noisy = self._call(self.primary, upstream, "noise", parse)
            return list(await asyncio.gather(shadow, noisy))
        except asyncio.CancelledError:
            if not mirror.timed_out or mirror.task is None:
                raise  # not the timeout's: shutdown
            mirror.task.uncancel()
            called = [self.candidate, self.primary] if noise else [self.candidate]
            self._counts.failed.inc(len(called))
            timed_out = [legs.failed(b.name, 504, "shadow timeout", _ms(started)) for b in called]
            return [(leg, None, None) for leg in timed_out]
        finally:
            self._calling.discard(mirror)

    async def _primary_outcome(self, mirror: Mirror) -> PrimaryOutcome:
        """What the proxy handed over; cancelled by `_sweep` after 4 to 4.25 shadow timeouts."""
        if mirror.outcome.done():
            return mirror.outcome.result()
        loop = asyncio.get_running_loop()
        mirror.waiting_since = loop.time()
        self._waiting.add(mirror)
        self._arm(loop)
        try:
            return await mirror.outcome
        finally:
            self._waiting.discard(mirror)

    @property
    def longest_call(self) -> float:
        """Seconds a call may run before `_sweep` ends it: the timeout and one sweep period."""
        return self._config.timeout * (1 + 1 / SWEEPS_PER_TIMEOUT)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None:
            period = self._config.timeout / SWEEPS_PER_TIMEOUT
            self._sweeper = loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        """Ends the calls past the shadow timeout, and gives up on primaries awaited for 4 of
        them (a bug, or a stream still running). One timer for all, every quarter of a shadow
        timeout, while any are under way: an `asyncio.timeout` per call and per wait cost
        a timer made and cancelled each time (benchmarks/README.md, optimisation log)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for mirror in [m for m in self._calling if m.calls_until <= now and not m.timed_out]:
            if mirror.task is not None:
                mirror.timed_out = True
                mirror.task.cancel()  # `_calls` turns it into failed legs
        given_up = now - PRIMARY_WAIT_TIMEOUTS * self._config.timeout
        for mirror in [m for m in self._waiting if m.waiting_since <= given_up]:
            mirror.outcome.cancel()  # a no-op once it is done; its waiter counts the drop
        self._sweeper = None
        if self._calling or self._waiting:
            self._arm(loop)

    async def _call(
        self, backend: Backend, upstream: UpstreamRequest, tag: str, parse: Parser | None
    ) -> Answered:
        """One shadow or noise call, read into a `Leg` with what its engine ran; a failed one
        (an error, the timeout, an unreadable answer) is counted in
        `gateway_shadow_failed_total`."""
        leg, ids, endpoint = await self._answer(backend, upstream, tag, parse)
        if failed(leg):
            self._counts.failed.inc()
        return legs.with_evidence(leg, ids, backend.sampling(upstream), endpoint), ids, endpoint

    async def _answer(
        self, backend: Backend, upstream: UpstreamRequest, tag: str, parse: Parser | None
    ) -> Answered:
        request = upstream.tagged(tag).with_token_ids()
        started = perf_counter()
        try:
            if not upstream.stream:
                completion = await backend.complete(request)
                body, answer = completion.body, completion.answer
                leg = legs.from_body(backend.name, body, _ms(started), parse, answer)
                return leg, completion.ids, completion.endpoint
            if self._reader is not None and parse is None:  # a task's parser stays here
                answered = await self._reader.read(backend.name, request, started)
                await self._turns.next()  # paired when the streams ending now were relayed
                return answered
            chunks, ended, events = await read_events(backend, request)
            await self._turns.next()  # read when the other streams ending now have been relayed
            leg = legs.from_events(backend.name, chunks, started, ended, parse)
            return leg, events.ids, events.endpoint
        except GatewayError as exc:
            leg = legs.failed(backend.name, exc.status_code, exc.message, _ms(started))
            return leg, None, exc.endpoint


def count_agreement(counts: ShadowCounts, pair: PairRecord) -> None:
    """Agreement as the report counts it: only pairs whose legs both answered the same
    request; a failed leg is counted as failed (in `_call`), never as a disagreement."""
    counts.completed.inc()
    agreed = agrees(pair)
    if agreed is not None:
        (counts.agree if agreed else counts.disagree).inc()


def _prompt(ids: TokenIds | None) -> tuple[int, ...] | None:
    return None if ids is None else ids.prompt


def _ms(started: float) -> float:
    return (perf_counter() - started) * 1000.0
