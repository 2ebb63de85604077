"""Admission by client limits, with OpenAI's answer when a limit is reached.

`RateLimiter` lives as long as the process: it holds the counts, in this process or in Redis
(`GATEWAY_RATE_LIMIT_URL`), and knows whether Redis is reachable; when it is not, requests are
counted in this process (each process then allows the whole limit, so N processes allow N
times it) until a probe finds Redis again. `RatePolicy` is one configuration's limits (every
key, and each route), rebuilt on reload over the same counts.

A request is counted against its API key on every route (`GATEWAY_RATE_LIMITS`) and on its
route (a route's `rate_limits`). Answers carry OpenAI's headers, for the tighter budget:
`x-ratelimit-limit-requests`, `-remaining-requests`, `-reset-requests` (time until the budget
is full again), the same for tokens; a refusal is 429 `rate_limit_exceeded` with them and
`Retry-After`.

Example::

    grant = await policy.admit(key_digest, "qwen3-chat")   # or raises RateLimited (429)
    ...  # serve; grant.headers go on the answer
    await policy.release(grant, tokens=57)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from backends.errors import RateLimited
from gateway.numbers import Cells, LocalNumbers, Numbers
from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.counters import Budget, Counters, Level, Limit, LocalCounters, Verdict

log = logging.getLogger("gateway.ratelimit")

PROBE_INTERVAL = 1.0  # seconds between probes of an unreachable Redis
Header = tuple[bytes, bytes]


@dataclass(slots=True)
class Grant:
    """An admitted request: what it counts against, where, and the headers its answer gets."""

    budgets: Sequence[Budget]
    lease: str
    counters: Counters
    headers: list[Header]


class RateLimiter:
    """The process's counts; shared through Redis when a URL is given (needs the extra).
    What it refused, and whether Redis is down, are counted in `numbers`: the metrics' store,
    added up over a worker group at a scrape (`gateway.numbers`), or plain ones of its own."""

    def __init__(
        self, url: str | None = None, lease_ttl: float = 660.0, numbers: Numbers | None = None
    ) -> None:
        self.local = LocalCounters()
        self.shared = None
        self._numbers = numbers if numbers is not None else LocalNumbers()
        self._refused: dict[tuple[str, str], Cells] = {}  # by (route, limit)
        self._down: Cells | None = None  # 1 while Redis is unreachable; only when shared
        if url is not None:
            from gateway.ratelimit.shared import RedisCounters

            self.shared = RedisCounters(url, lease_ttl)
            self._down = self._numbers.cells(("rate_limit_shared_down",), 1)
        self.down_since: float | None = None  # wall-clock time Redis was found unreachable
        self._leases = itertools.count()
        self._probe: asyncio.Task[None] | None = None

    @property
    def shared_up(self) -> bool:
        """Limits are counted in Redis now (a URL is set and it is reachable)."""
        return self._down is not None and not self._down[0]

    @shared_up.setter
    def shared_up(self, up: bool) -> None:
        if self._down is not None:
            self._down[0] = 0.0 if up else 1.0

    @property
    def refused(self) -> dict[tuple[str, str], int]:
        """Requests refused, by (route, limit)."""
        return {key: int(cells[0]) for key, cells in self._refused.items()}

    @property
    def shares(self) -> bool:
        """Limits are meant to be shared (a Redis URL is set), whether or not it is up."""
        return self.shared is not None

    async def admit(self, budgets: Sequence[Budget], route: str) -> Grant:
        lease = f"{id(self):x}-{next(self._leases)}"
        counters: Counters = self.local
        verdict: Verdict | None = None
        if self.shared is not None and self.shared_up:
            try:
                verdict = await self.shared.admit(budgets, lease)
                counters = self.shared
            except Exception as exc:  # SharedUnavailable; the shared module may be absent
                self._went_down(exc)
        if verdict is None:
            verdict = self.local.admit_now(budgets)
        if not verdict.admitted:
            key = (route, verdict.limit)
            cells = self._refused.get(key)
            if cells is None:
                cells = self._refused[key] = self._numbers.cells(("rate_limited", *key), 1)
            cells[0] += 1
            raise _refusal(budgets[verdict.refused_by], verdict)
        return Grant(budgets, lease, counters, _headers(verdict))

    async def release(self, grant: Grant, tokens: int) -> None:
        try:
            await grant.counters.release(grant.budgets, grant.lease, tokens)
        except Exception as exc:
            self._went_down(exc)

    def status(self) -> dict[str, object]:
        """For `/ready`: where requests are counted now, and since when Redis is down."""
        if self.shared is None:
            return {"counted": "in this process"}
        if self.shared_up:
            return {"counted": "shared (Redis)"}
        return {
            "counted": "in this process: Redis is unreachable, each process allows the whole "
            "limit until it is back",
            "redis_down_since": self.down_since,
        }

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self.shared is not None:
            await self.shared.close()

    def _went_down(self, exc: Exception) -> None:
        if not self.shared_up:
            return
        self.shared_up = False
        self.down_since = time.time()
        log.warning(
            "rate limits: Redis unreachable (%s); counting in this process until it is back",
            type(exc).__name__ if not exc.args else exc.args[0],
        )
        self._probe = asyncio.ensure_future(self._until_back())

    async def _until_back(self) -> None:
        assert self.shared is not None
        await self.shared.forget_connections()
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                await self.shared.ping()
            except Exception:  # noqa: S112 - still down: probe again
                continue
            self.shared_up, self.down_since = True, None
            log.warning("rate limits: Redis is back; limits are shared again")
            return


class RatePolicy:
    """One configuration's limits: every key's (`keys`) and each route's (`routes`, by name)."""

    def __init__(
        self, limiter: RateLimiter, keys: RateLimits, routes: Mapping[str, RateLimits]
    ) -> None:
        self.limiter = limiter
        self._keys = keys if keys.is_set else None
        self._routes = {name: limits for name, limits in routes.items() if limits.is_set}
        self._budgets: dict[tuple[bytes, str], list[Budget]] = {}  # keys x routes: bounded

    @property
    def enabled(self) -> bool:
        return self._keys is not None or bool(self._routes)

    async def admit(self, key: bytes, route: str) -> Grant | None:
        """`key`: the client key's digest (b"" without keys). None: no limit applies."""
        budgets = self._budgets.get((key, route))
        if budgets is None:
            budgets = self._budgets[(key, route)] = self._budgets_of(key, route)
        if not budgets:
            return None
        return await self.limiter.admit(budgets, route)

    async def release(self, grant: Grant, tokens: int) -> None:
        await self.limiter.release(grant, tokens)

    def _budgets_of(self, key: bytes, route: str) -> list[Budget]:
        who = key.hex()[:16] or "anonymous"  # a digest's prefix: enough to tell keys apart
        budgets = []
        if self._keys is not None:
            budgets.append(Budget(f"key:{who}", self._keys, "this API key"))
        limits = self._routes.get(route)
        if limits is not None:
            budgets.append(Budget(f"route:{route}:{who}", limits, f"this API key on '{route}'"))
        return budgets


NAMES: dict[Limit, str] = {
    "requests": "requests per minute",
    "tokens": "tokens per minute",
    "concurrent": "requests in flight",
}


def _refusal(budget: Budget, verdict: Verdict) -> RateLimited:
    limits = budget.limits
    most = {
        "requests": limits.requests_per_minute,
        "tokens": limits.tokens_per_minute,
        "concurrent": limits.concurrent,
    }[verdict.limit]
    wait = max(math.ceil(verdict.retry_after), 1)
    error = RateLimited(
        f"Rate limit reached for {NAMES[verdict.limit]} on {budget.label}: limit {most}. "
        f"Please try again in {wait}s.",
        headers={"Retry-After": str(wait)},
    )
    error.error_type = "tokens" if verdict.limit == "tokens" else "requests"  # as OpenAI's
    for name, value in _refused_headers(budget, verdict):
        error.headers[name] = value
    return error


def _refused_headers(budget: Budget, verdict: Verdict) -> list[tuple[str, str]]:
    """The refusing budget's limit, nothing remaining of it, and when it is available again."""
    limits = budget.limits
    headers = []
    if limits.requests_per_minute is not None:
        reset = verdict.retry_after if verdict.limit == "requests" else 0.0
        headers += _triple("requests", limits.requests_per_minute, 0, reset)
    if limits.tokens_per_minute is not None:
        reset = verdict.retry_after if verdict.limit == "tokens" else 0.0
        headers += _triple("tokens", limits.tokens_per_minute, 0, reset)
    return headers


def _headers(verdict: Verdict) -> list[Header]:
    """The tighter budget's numbers for requests and for tokens, as bytes for the answer."""
    headers: list[tuple[str, str]] = []
    for kind, levels in (("requests", verdict.requests), ("tokens", verdict.tokens)):
        known = [level for level in levels if level is not None]
        if known:
            tightest = min(known, key=_left)
            headers += _triple(kind, tightest.limit, tightest.remaining, tightest.reset)
    return [(name.encode(), value.encode()) for name, value in headers]


def _left(level: Level) -> float:
    return level.remaining / level.limit


def _triple(kind: str, limit: int, remaining: int, reset: float) -> list[tuple[str, str]]:
    return [
        (f"x-ratelimit-limit-{kind}", str(limit)),
        (f"x-ratelimit-remaining-{kind}", str(remaining)),
        (f"x-ratelimit-reset-{kind}", duration(reset)),
    ]


def duration(seconds: float) -> str:
    """As OpenAI writes durations in its headers: whole milliseconds under a second, else
    seconds, after whole minutes (`1s`, `1.5s`, `6m0s`)."""
    seconds = round(seconds, 3)
    if seconds < 1:
        return f"{max(round(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text
