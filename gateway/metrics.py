"""Prometheus metrics of the gateway, one registry per app so tests can run several apps.

Every number lives in a `gateway.numbers` store: plain lists in one process, or memory-mapped
files that every worker of a `gateway serve --workers N` group writes its own of, and that a
scrape, in whichever worker it lands, adds up. So one scrape gives the whole group's counters
and histograms, and its gauges summed over the live workers. The connection guard
(gateway/http/limits.py) and the rate limiter (gateway/ratelimit) count in the same store,
handed `Metrics.numbers`; a store's or Redis's state is kept as "down", so a scrape says "up"
only while no live worker finds it down.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest

from backends.pool.stats import EndpointStats, Tally
from gateway.exposition import (
    LATENCY_BUCKETS,
    OVERHEAD_BUCKETS,
    ConformanceFamily,
    ConformanceResults,
    Families,
)
from gateway.numbers import Cells, LocalNumbers, Numbers

__all__ = ["LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "Count", "Metrics"]
# Endpoints one backend may name in labels; past them (a DNS name whose pods came and went
# for months), "other": the series stay a bounded set.
MAX_ENDPOINT_LABELS = 64
SHADOW_COUNTS = ("sampled", "completed", "failed", "agree", "disagree")
RECORD_RESULTS = ("written", "dropped", "failed")


class Count:
    """One number of the store: a counter, or with `dec`/`set` a gauge."""

    __slots__ = ("cells",)

    def __init__(self, cells: Cells) -> None:
        self.cells = cells

    @property
    def value(self) -> float:
        return self.cells[0]

    def inc(self, amount: float = 1.0) -> None:
        self.cells[0] += amount

    def dec(self, amount: float = 1.0) -> None:
        self.cells[0] -= amount

    def set(self, value: float) -> None:
        self.cells[0] = value


InFlight = Count


class Metrics:
    """Requests, latency and in-flight per route/backend/path/status, the gateway's overhead,
    each route's shadow leg, the shadow records and each pool's endpoints. A route label is a
    configured route's name ("" for a request no route took), so its values stay a bounded set.
    """

    def __init__(self, numbers: Numbers | None = None) -> None:
        self.numbers = numbers if numbers is not None else LocalNumbers()
        # By their labels: routes x backends x paths x statuses, a bounded set. A served
        # series is one run of numbers: [count, a count per latency bucket and +Inf, sum].
        self.served: dict[tuple[str, str, str, int], Cells] = {}
        self.overhead: dict[str, Cells] = {}  # by path: a count per bucket and +Inf, sum
        self.in_flight: dict[tuple[str, str, str], Count] = {}
        self.shadows: dict[str, ShadowCounts] = {}
        self.records = RecordCounts(self._count)
        self._fallback: dict[str, Count] = {}
        self._endpoints: dict[str, set[str]] = {}  # endpoint labels made, by backend
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and help nobody here
        self.registry = CollectorRegistry(auto_describe=True)
        # Plain numbers read at scrape time: a prometheus_client child takes a lock per update,
        # 7 per request (benchmarks/README.md, optimisation log).
        self.registry.register(Families(self.numbers))

    def _count(self, *key: str) -> Count:
        return Count(self.numbers.cells(key, 1))

    def observe(
        self, route: str, backend: str, path: str, status: int, seconds: float, overhead: float
    ) -> None:
        key = (route, backend, path, status)
        served = self.served.get(key)
        if served is None:
            served = self.served[key] = self.numbers.cells(
                ("served", route, backend, path, str(status)), len(LATENCY_BUCKETS) + 3
            )
        served[0] += 1
        served[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1  # a bucket counts values <= it
        served[len(LATENCY_BUCKETS) + 2] += seconds
        own = self.overhead.get(path)
        if own is None:
            own = self.overhead[path] = self.numbers.cells(
                ("overhead", path), len(OVERHEAD_BUCKETS) + 2
            )
        own[bisect_left(OVERHEAD_BUCKETS, overhead)] += 1
        own[len(OVERHEAD_BUCKETS) + 1] += overhead

    def in_flight_for(self, route: str, backend: str, path: str) -> Count:
        """The in-flight count of one route, backend and path (made once, then reused)."""
        gauge = self.in_flight.get((route, backend, path))
        if gauge is None:
            gauge = self.in_flight[(route, backend, path)] = self._count(
                "in_flight", route, backend, path
            )
        return gauge

    def fallback_for(self, backend: str) -> Count:
        """Requests the fallback `backend` served (made once, then reused)."""
        count = self._fallback.get(backend)
        if count is None:
            count = self._fallback[backend] = self._count("fallback", backend)
        return count

    def shadow_for(self, route: str) -> ShadowCounts:
        """One route's shadow counters (made once, then reused)."""
        counts = self.shadows.get(route)
        if counts is None:
            counts = self.shadows[route] = ShadowCounts(route, self._count)
        return counts

    # backends.pool.stats.PoolStats

    def endpoint(self, backend: str, endpoint: str) -> EndpointStats:
        seen = self._endpoints.setdefault(backend, set())
        if endpoint not in seen and len(seen) >= MAX_ENDPOINT_LABELS:
            endpoint = "other"
        seen.add(endpoint)
        return EndpointStats(
            in_flight=self._count("endpoint_in_flight", backend, endpoint),
            out=self._count("endpoint_out", backend, endpoint),
            ejections=self._count("endpoint_ejections", backend, endpoint),
            answered=self._count("endpoint_calls", backend, endpoint, "answered"),
            failed=self._count("endpoint_calls", backend, endpoint, "failed"),
        )

    def retries(self, backend: str) -> Tally:
        return self._count("pool_retries", backend)

    def watch_conformance(self, conformance: ConformanceResults) -> None:
        """Exposes the conformance probes' latest outcomes, read at scrape time: this
        worker's own probes (every worker probes the same backends)."""
        self.registry.register(ConformanceFamily(conformance))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ShadowCounts:
    """One route's shadow leg, counted. `queue_full` and both agreement series exist from the
    start, so their rates start at 0."""

    def __init__(self, route: str, count: Callable[..., Count]) -> None:
        self._route = route
        self._count = count
        self.sampled, self.completed, self.failed, self.agree, self.disagree = (
            count("shadow", route, name) for name in SHADOW_COUNTS
        )
        self.drops: dict[str, Count] = {}  # by reason
        self.queue_full = self.dropped("queue_full")

    def dropped(self, reason: str) -> Count:
        """The count of sampled requests not shadowed for `reason` (made once, then reused)."""
        count = self.drops.get(reason)
        if count is None:
            count = self.drops[reason] = self._count("shadow_dropped", self._route, reason)
        return count


class RecordCounts:
    """The shadow-record writer's counts (`gateway.records.store.Recorder`)."""

    def __init__(self, count: Callable[..., Count]) -> None:
        self.written, self.dropped, self.failed = (count("records", r) for r in RECORD_RESULTS)
        self.pending = count("records_pending")
        # 1 while the store is unavailable: a scrape says "up" only if no live worker is down.
        self.store_down = count("records_store_down")
