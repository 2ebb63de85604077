"""Where a client's use is counted: the `Counters` protocol, and its in-process implementation.

Each budget (`Budget`: one API key, on every route or on one) has two token buckets and a
count of requests in flight. A bucket holds up to a minute's allowance and refills
continuously, so a client may burst up to its limit and then keeps to the limit's rate:

    requests: a request takes 1; refused when less than 1 is left
    tokens:   refused while the bucket is empty or in debt; an answer's usage is taken
              afterwards, and may leave the bucket in debt (the next minute pays for it)

A request is admitted only when every budget it counts against admits it; then each takes.
`gateway.ratelimit.shared` keeps the same counts in Redis, for several processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gateway.ratelimit.config import RateLimits

Limit = Literal["requests", "tokens", "concurrent"]
LIMITS: tuple[Limit, ...] = ("requests", "tokens", "concurrent")


@dataclass(frozen=True, slots=True)
class Budget:
    """One counted budget: `name` is where it is kept (never a key: its digest's prefix)."""

    name: str
    limits: RateLimits
    label: str  # how a message names it: "this API key", "this API key on 'qwen3-chat'"


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket after the request: what is left, and seconds until it is full again."""

    limit: int
    remaining: int
    reset: float


@dataclass(slots=True)
class Verdict:
    """Admitted or not; if not, which budget and limit refused and when to try again; and
    each budget's buckets (None where that limit is unset)."""

    admitted: bool
    refused_by: int = -1  # index of the budget that refused
    limit: Limit = "requests"
    retry_after: float = 0.0
    requests: list[Level | None] = field(default_factory=list)
    tokens: list[Level | None] = field(default_factory=list)


class Counters(Protocol):
    """Counts use. Implementations: `LocalCounters`, `gateway.ratelimit.shared.RedisCounters`."""

    async def admit(self, budgets: Sequence[Budget], lease: str) -> Verdict:
        """Takes one request from every budget, and `lease` in flight, or nothing at all."""
        ...

    async def release(self, budgets: Sequence[Budget], lease: str, tokens: int) -> None:
        """The request holding `lease` ended having used `tokens`."""
        ...


class Bucket:
    """A token bucket of `per_minute`, full at first, refilling continuously."""

    __slots__ = ("level", "updated")

    def __init__(self, per_minute: int, now: float) -> None:
        self.level = float(per_minute)
        self.updated = now

    def refill(self, per_minute: int, now: float) -> float:
        self.level = min(float(per_minute), self.level + (now - self.updated) * per_minute / 60)
        self.updated = now
        return self.level

    def snapshot(self, per_minute: int) -> Level:
        left = max(math.floor(self.level), 0)
        return Level(per_minute, left, (per_minute - self.level) * 60 / per_minute)


class Held:
    """One budget's state in this process."""

    __slots__ = ("in_flight", "requests", "tokens")

    def __init__(self) -> None:
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self.in_flight = 0


class LocalCounters:
    """Counts in this process only: exact, and costs a few dictionary lookups per request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._held: dict[str, Held] = {}  # by budget name: keys x routes, a bounded set

    async def admit(self, budgets: Sequence[Budget], lease: str) -> Verdict:
        return self.admit_now(budgets)

    def admit_now(self, budgets: Sequence[Budget]) -> Verdict:
        now = self._clock()
        held = [self._held_for(budget, now) for budget in budgets]
        for index, (budget, state) in enumerate(zip(budgets, held, strict=True)):
            refused = _refusal(budget.limits, state, now)
            if refused is not None:
                return Verdict(False, index, refused[0], refused[1])
        verdict = Verdict(True)
        for budget, state in zip(budgets, held, strict=True):
            limits = budget.limits
            requests = tokens = None
            if state.requests is not None and limits.requests_per_minute is not None:
                state.requests.level -= 1
                requests = state.requests.snapshot(limits.requests_per_minute)
            if state.tokens is not None and limits.tokens_per_minute is not None:
                tokens = state.tokens.snapshot(limits.tokens_per_minute)
            state.in_flight += 1
            verdict.requests.append(requests)
            verdict.tokens.append(tokens)
        return verdict

    async def release(self, budgets: Sequence[Budget], lease: str, tokens: int) -> None:
        now = self._clock()
        for budget in budgets:
            state = self._held.get(budget.name)
            if state is None:
                continue
            state.in_flight = max(state.in_flight - 1, 0)
            per_minute = budget.limits.tokens_per_minute
            if state.tokens is not None and per_minute is not None and tokens > 0:
                state.tokens.refill(per_minute, now)
                state.tokens.level -= tokens

    def _held_for(self, budget: Budget, now: float) -> Held:
        state = self._held.get(budget.name)
        if state is None:
            state = self._held[budget.name] = Held()
        limits = budget.limits
        if limits.requests_per_minute is not None:
            if state.requests is None:
                state.requests = Bucket(limits.requests_per_minute, now)
            state.requests.refill(limits.requests_per_minute, now)
        if limits.tokens_per_minute is not None:
            if state.tokens is None:
                state.tokens = Bucket(limits.tokens_per_minute, now)
            state.tokens.refill(limits.tokens_per_minute, now)
        return state


def _refusal(limits: RateLimits, state: Held, now: float) -> tuple[Limit, float] | None:
    """Which limit refuses a request now, and in how many seconds it would not."""
    per_minute = limits.requests_per_minute
    if state.requests is not None and per_minute is not None and state.requests.level < 1:
        return "requests", (1 - state.requests.level) * 60 / per_minute
    per_minute = limits.tokens_per_minute
    if state.tokens is not None and per_minute is not None and state.tokens.level <= 0:
        return "tokens", (1 - state.tokens.level) * 60 / per_minute
    if limits.concurrent is not None and state.in_flight >= limits.concurrent:
        return "concurrent", 1.0
    return None
