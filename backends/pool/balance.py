"""Which endpoint of a pool takes a request, and which endpoints are in rotation.

    in rotation: ready (its last readiness probe passed) and not ejected
    ejected:     `eject_failures` consecutive engine failures; out for `eject_cooldown`
                 seconds, then back on probation, where one failure ejects it again and one
                 success clears it. Never more than `max_ejected_percent` of the pool at once
                 (rounded down): past that share, a failing endpoint stays in.

When no endpoint is in rotation, requests go to any that is not ejected, then to any at all:
the pool's own readiness (no endpoint ready) is what opens the backend's circuit above it.

Picking, among the endpoints in rotation: with an affinity key, the first in the key's
rendezvous order whose requests in flight are under `affinity_max_load` times the mean (plus
one); else power of two choices (two drawn at random, the one with fewer in flight), or round
robin. Pure state and arithmetic, with the clock and the draw injectable, so it tests (and the
routing benchmark simulates) without servers.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from backends.base import Backend
from backends.pool.affinity import digest, score
from backends.pool.stats import EndpointStats

Balance = Literal["p2c", "round_robin"]


@dataclass(eq=False, slots=True)
class Endpoint:
    """One endpoint of a pool: its adapter, and what balancing and ejection know of it."""

    name: str  # host:port, the label metrics and records name it by
    backend: Backend
    stats: EndpointStats
    active: int = 0  # requests and streams under way on it, from this process
    ready: bool = True  # the last readiness probe's verdict (none yet: ready)
    failures: int = 0  # consecutive engine failures
    ejected_until: float = 0.0
    probation: bool = False  # back from an ejection: one failure ejects it again
    leaving: bool = False  # DNS no longer lists it: it drains, then closes
    salt: int = field(init=False)

    def __post_init__(self) -> None:
        self.salt = digest(self.name)

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until


@dataclass(frozen=True, slots=True)
class Rules:
    balance: Balance = "p2c"
    affinity_max_load: float = 1.25
    eject_failures: int = 3
    eject_cooldown: float = 10.0
    max_ejected_percent: int = 50


class Balancer:
    """The endpoints of one pool, the rules that pick among them and eject them."""

    def __init__(
        self,
        rules: Rules,
        clock: Callable[[], float] = time.monotonic,
        draw: random.Random | None = None,
    ) -> None:
        self.rules = rules
        self.members: list[Endpoint] = []  # leaving ones are not members
        self._clock = clock
        self._random = draw or random.Random()
        self._turn = 0

    def join(self, endpoint: Endpoint) -> None:
        self.members.append(endpoint)

    def leave(self, endpoint: Endpoint) -> None:
        endpoint.leaving = True
        self.members.remove(endpoint)

    def rotation(self, exclude: Sequence[Endpoint] = ()) -> list[Endpoint]:
        """The endpoints a request may go to now, best first; never empty while any member."""
        now = self._clock()
        members = [e for e in self.members if e not in exclude] or self.members
        fit = [e for e in members if e.ready and not e.ejected(now)]
        return fit or [e for e in members if not e.ejected(now)] or members

    def pick(self, key: int | None = None, exclude: Sequence[Endpoint] = ()) -> Endpoint | None:
        """The endpoint for a request with affinity `key` (None: no affinity), avoiding those
        already tried; None when the pool has no endpoint at all."""
        candidates = self.rotation(exclude)
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        if key is not None:
            return self._by_affinity(key, candidates)
        if self.rules.balance == "round_robin":
            self._turn += 1
            return candidates[self._turn % len(candidates)]
        count, draw = len(candidates), self._random.random
        first = int(draw() * count)
        second = int(draw() * (count - 1))
        second += second >= first  # two different endpoints
        a, b = candidates[first], candidates[second]
        return b if b.active < a.active else a

    def _by_affinity(self, key: int, candidates: list[Endpoint]) -> Endpoint:
        """Bounded-load rendezvous: the key's first endpoint unless its requests in flight reach
        `affinity_max_load` times the mean plus one, then the next in the key's order (the
        least loaded is always under that bound, as the bound is at least 1)."""
        mean = sum(e.active for e in candidates) / len(candidates)
        bound = self.rules.affinity_max_load * (mean + 1.0)
        ranked = sorted(candidates, key=lambda e: score(key, e.salt), reverse=True)
        for endpoint in ranked:
            if endpoint.active < bound:
                return endpoint
        return ranked[0]

    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.failures = 0
        endpoint.probation = False

    def failed(self, endpoint: Endpoint) -> bool:
        """Counts an engine failure; True when it ejected the endpoint."""
        endpoint.failures += 1
        now = self._clock()
        if endpoint.ejected(now) or endpoint.leaving:
            return False
        if not endpoint.probation and endpoint.failures < self.rules.eject_failures:
            return False
        if self.ejected_count(now) >= self.max_ejected():
            return False
        endpoint.ejected_until = now + self.rules.eject_cooldown
        endpoint.probation = True
        return True

    def ejected_count(self, now: float | None = None) -> int:
        at = self._clock() if now is None else now
        return sum(e.ejected(at) for e in self.members)

    def max_ejected(self) -> int:
        return len(self.members) * self.rules.max_ejected_percent // 100

    def out_of_rotation(self, endpoint: Endpoint) -> bool:
        return not endpoint.ready or endpoint.ejected(self._clock())
