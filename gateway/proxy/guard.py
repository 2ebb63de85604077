"""Per-backend protection: admission control and a circuit breaker, around any adapter.

Admission is a bounded in-flight limit and a bounded wait for a bounded number of waiters;
every engine gets the same rules. The circuit:

    closed --(`failures` consecutive failures, or a failed readiness probe)--> open
    open --(after `cooldown` seconds)--> half-open: one request probes the engine
    half-open --(its success)--> closed;  --(its failure)--> open again

A failed readiness probe does not open it while requests are being answered (one was since the
previous probe): an engine too busy to answer its probe in time is serving, not down, and a
whole pool of busy replicas must not turn into 503s for a cooldown.

Overload answers 429 and an open circuit 503, both with `Retry-After`, because the SDKs retry
those after waiting instead of piling onto an engine that cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable

from backends.base import Backend, Completion, EventStream, Health, UpstreamRequest
from backends.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
    Overloaded,
)
from backends.piping import Deliver, pipe
from backends.sampling import Sampling

# Errors that say the engine is unwell (not that the request was bad).
ENGINE_FAILURES = (BackendUnavailable, BackendTimeout, BackendProtocolError)
log = logging.getLogger("gateway.proxy.guard")


class Circuit:
    """The breaker's state machine; `clock` is injectable so it tests without sleeping."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._answered = False  # a request was answered since the last readiness probe

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() >= self._opened_at + self._cooldown else "open"

    def allow(self) -> bool:
        """May a request go to the engine now? In half-open, only one probe at a time."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def retry_after(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(self._opened_at + self._cooldown - self._clock(), 1.0)

    def succeeded(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False
        self._answered = True

    def failed(self) -> None:
        self._failures += 1
        self._probing = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()

    def abandon(self) -> None:
        """The request let through never got an answer (refused by admission, or its client
        left): it proves nothing, so the next request may probe instead."""
        self._probing = False

    def trip(self) -> None:
        """Open now, whatever the count."""
        self._opened_at = self._clock()
        self._probing = False

    def probe_failed(self) -> bool:
        """A readiness probe failed: opens the circuit unless a request was answered since the
        previous probe. True when it opened (or stays open)."""
        answered, self._answered = self._answered, False
        if answered and self._opened_at is None:
            return False
        self.trip()
        return True

    def probe_passed(self) -> None:
        self._answered = False


class Guarded:
    """A `Backend` behind admission control and a circuit breaker.

    Admission is a count of busy slots and a line of waiters, not an `asyncio.Semaphore`: the
    common case (a free slot) is then a compare and an increment, where the semaphore's
    `locked()` and `acquire()` took a measurable share of the CPU (benchmarks/README.md,
    "Figures behind the code's choices"). A freed slot goes straight to the oldest waiter still
    waiting, so a newcomer never jumps the line.
    """

    def __init__(
        self,
        backend: Backend,
        max_concurrency: int,
        queue_timeout: float,
        circuit: Circuit,
        *,
        max_queue: int,
    ) -> None:
        self.inner = backend
        self.name = backend.name
        self.circuit = circuit
        self._capacity = max_concurrency
        self._busy = 0  # slots taken, those handed to a waiter not yet awake included
        # Oldest first; a waiter handed a slot is popped, one cancelled is removed.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._queue_timeout = queue_timeout
        self._max_queue = max_queue
        self._waiting = 0  # waiters counted against `max_queue`, until their wait ends

    @property
    def busy(self) -> int:
        """Slots in use: requests in flight, and streams not yet ended."""
        return self._busy

    def available(self) -> bool:
        return self.circuit.state != "open"

    async def complete(self, request: UpstreamRequest) -> Completion:
        if not self._admit_now():  # inline rather than `await self._admit()`: one frame less
            await self._wait_for_slot()
        try:
            completion = await self.inner.complete(request)
        except ENGINE_FAILURES:
            self.circuit.failed()
            raise
        except GatewayError:
            self.circuit.succeeded()  # the engine answered: the request was at fault
            raise
        except BaseException:  # cancelled: the client left
            self.circuit.abandon()
            raise
        finally:
            self._release()
        self.circuit.succeeded()
        return completion

    async def stream(self, request: UpstreamRequest) -> EventStream:
        if not self._admit_now():  # as in `complete`
            await self._wait_for_slot()
        try:
            events = await self.inner.stream(request)
        except BaseException as exc:
            self._release()
            if isinstance(exc, ENGINE_FAILURES):
                self.circuit.failed()
            elif isinstance(exc, GatewayError):
                self.circuit.succeeded()
            else:
                self.circuit.abandon()
            raise
        return _Held(self, events)

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return self.inner.sampling(request)

    async def health(self) -> Health:
        health = await self.inner.health()
        if health.ready:
            if self.circuit.state != "closed" and self.circuit.allow():
                self.circuit.succeeded()  # the probe is the half-open request
            self.circuit.probe_passed()
        else:
            self.probe_failed()
        return health

    def probe_failed(self) -> None:
        """A readiness probe failed or got no answer: see `Circuit.probe_failed`."""
        was = self.circuit.state
        if self.circuit.probe_failed():
            if was == "closed":  # the detail may quote an address: `/ready` shows it
                log.warning("backend %s failed its readiness probe: circuit open", self.name)
        else:
            log.info("backend %s failed its readiness probe while answering requests: "
                     "circuit kept closed", self.name)  # fmt: skip

    async def close(self) -> None:
        await self.inner.close()

    async def _admit(self) -> None:
        """Takes a slot, waiting in line for one if none is free."""
        if not self._admit_now():
            await self._wait_for_slot()

    def _admit_now(self) -> bool:
        """Takes a free slot if there is one; False: the caller must wait in line for one.

        Raises `BackendUnavailable` while the circuit is open. A free slot means nobody is in
        line: `_release` hands a slot to a live waiter before it ever frees one.
        """
        if not self.circuit.allow():
            raise BackendUnavailable(
                f"backend '{self.name}' is failing; its circuit is open",
                code="circuit_open",
                headers={"Retry-After": f"{self.circuit.retry_after():.0f}"},
            )
        if self._busy < self._capacity:
            self._busy += 1
            return True
        return False

    async def _wait_for_slot(self) -> None:
        """Waits in line, up to `queue_timeout`, for a slot `_release` hands over."""
        # Each waiter holds its request body: counting them bounds memory under a flood.
        if self._waiting >= self._max_queue:
            self.circuit.abandon()
            raise self._overloaded()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            async with asyncio.timeout(self._queue_timeout):  # 3.11's wait_for can drop a cancel
                await waiter
        except BaseException as exc:
            self._leave_line(waiter)
            self.circuit.abandon()
            if isinstance(exc, TimeoutError):
                raise self._overloaded() from None
            raise
        finally:
            self._waiting -= 1

    def _leave_line(self, waiter: asyncio.Future[None]) -> None:
        """A waiter timed out or was cancelled: it must neither keep a slot nor stay in line."""
        if waiter.done() and not waiter.cancelled():
            self._release()  # handed a slot just before the timeout or cancel: pass it on
            return
        # Else timed-out waiters pile up while no slot frees; `_release` may have popped it.
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)

    def _release(self) -> None:
        """Hands the slot to the oldest waiter still waiting, or frees it if there is none."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # done: cancelled, its task is leaving the line
                waiter.set_result(None)
                return
        self._busy -= 1

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"backend '{self.name}' is at its concurrency limit; retry shortly",
            headers={"Retry-After": "1"},
        )


class _Held:
    """An engine's stream holding its slot until it ends, pulled or piped (`backends.piping`):
    a failure mid-stream counts against the engine, a client leaving is no verdict on it."""

    def __init__(self, guard: Guarded, events: EventStream) -> None:
        self._guard = guard
        self._events = events
        self.ids = events.ids
        self.endpoint = events.endpoint
        self._open = True  # the slot is held, the verdict not given
        self._pulled: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._pulled is None:
            self._pulled = self._pull()
        return self._pulled

    async def pipe(self, deliver: Deliver) -> bool:
        circuit = self._guard.circuit
        try:
            ended = await pipe(self._events, deliver)
        except ENGINE_FAILURES:
            self._end(circuit.failed)
            raise
        except BaseException:  # the client left (or a request error): no verdict on the engine
            self._end(circuit.abandon)
            raise
        if ended:
            self._end(circuit.succeeded)
        return ended

    async def aclose(self) -> None:
        try:
            if self._pulled is not None:
                await self._pulled.aclose()
        finally:
            self._end(self._guard.circuit.abandon)  # never read to its end (or done already)
            await self._events.aclose()

    async def _pull(self) -> AsyncGenerator[bytes, None]:
        circuit = self._guard.circuit
        try:
            async for chunk in self._events:
                yield chunk
        except ENGINE_FAILURES:
            self._end(circuit.failed)
            raise
        except BaseException:
            self._end(circuit.abandon)
            raise
        else:
            self._end(circuit.succeeded)
        finally:
            await self._events.aclose()

    def _end(self, verdict: Callable[[], None]) -> None:
        """Gives the circuit its verdict and frees the slot, once."""
        if self._open:
            self._open = False
            verdict()
            self._guard._release()
