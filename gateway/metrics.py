"""Prometheus metrics of the gateway, one registry per app so tests can run several apps.

Every number lives in a `gateway.numbers` store: plain lists in one process, or memory-mapped
files that every worker of a `gateway serve --workers N` group writes its own of, and that a
scrape, in whichever worker it lands, adds up. So one scrape gives the whole group's counters
and histograms, and its gauges summed over the live workers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from itertools import accumulate
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from backends.pool.stats import EndpointStats, Tally
from gateway.numbers import Cells, Key, LocalNumbers, Numbers, Total

# Upstream latency spans engines' range (ms to minutes); overhead is measured in microseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)
# Endpoints one backend may name in labels; past them (a DNS name whose pods came and went
# for months), "other": the series stay a bounded set.
MAX_ENDPOINT_LABELS = 64
SHADOW_COUNTS = ("sampled", "completed", "failed", "agree", "disagree")
RECORD_RESULTS = ("written", "dropped", "failed")
ENDPOINT_OUTCOMES = ("answered", "failed")


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
        self.registry.register(_Collector(self))

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
        self.registry.register(_ConformanceCollector(conformance))

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


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped upstream


def _buckets(bounds: tuple[float, ...], counts: list[float]) -> list[tuple[str, float]]:
    """Prometheus' cumulative `le` buckets, named as prometheus_client names them."""
    names = [*map(_go_float, bounds), "+Inf"]
    return list(zip(names, accumulate(counts), strict=True))


class _Collector(Collector):
    """Every series of the store, added up over the group, in the names and help texts they
    always had."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        by_kind: dict[str, list[tuple[Key, Total]]] = {}
        for key, total in self._metrics.numbers.totals().items():
            by_kind.setdefault(key[0], []).append((key[1:], total))
        yield from _served(by_kind.get("served", []))
        yield from _overhead_and_in_flight(by_kind)
        yield from _shadow(by_kind)
        yield from _records(by_kind)
        yield from _endpoints(by_kind)


def _served(series: list[tuple[Key, Total]]) -> Iterator[Metric]:
    labels = ["route", "backend", "path", "status"]
    requests = CounterMetricFamily(
        "gateway_requests",
        "Requests answered, by route (model), backend, path and HTTP status.",
        labels=labels,
    )
    latency = HistogramMetricFamily(
        "gateway_request_duration_seconds",
        "Time from request received to last byte sent, by route, backend, path and status.",
        labels=labels,
    )
    size = len(LATENCY_BUCKETS) + 1
    for names, total in series:
        requests.add_metric(list(names), total.all[0])
        counts, seconds = total.all[1 : 1 + size], total.all[1 + size]
        latency.add_metric(list(names), _buckets(LATENCY_BUCKETS, counts), seconds)
    yield from (requests, latency)


def _overhead_and_in_flight(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    in_flight = GaugeMetricFamily(
        "gateway_in_flight_requests",
        "Requests being served right now, by route, backend and path.",
        labels=["route", "backend", "path"],
    )
    for names, total in by_kind.get("in_flight", []):
        in_flight.add_metric(list(names), total.live[0])
    overhead = HistogramMetricFamily(
        "gateway_overhead_seconds",
        "Time spent in the gateway itself (upstream wait excluded), by path.",
        labels=["path"],
    )
    size = len(OVERHEAD_BUCKETS) + 1
    for names, total in by_kind.get("overhead", []):
        counts = total.all[:size]
        overhead.add_metric(list(names), _buckets(OVERHEAD_BUCKETS, counts), total.all[size])
    fallback = CounterMetricFamily(
        "gateway_fallback",
        "Requests served by the fallback while the primary's circuit was open.",
        labels=["backend"],
    )
    for names, total in by_kind.get("fallback", []):
        fallback.add_metric(list(names), total.all[0])
    yield from (in_flight, overhead, fallback)


def _shadow(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    families = {
        name: CounterMetricFamily(f"gateway_shadow_{name}", text, labels=["route"])
        for name, text in (
            ("sampled", "Requests sampled for shadowing, by route."),
            ("completed", "Shadow pairs completed (both legs answered or failed)."),
            ("failed", "Shadow or noise calls that failed (error, timeout, unreadable)."),
        )
    }
    agreement = CounterMetricFamily(
        "gateway_shadow_agreement",
        "Compared shadow pairs whose answers are identical (agree) or not (disagree); "
        "pairs with a failed leg or a parity flag are left out, as in the report.",
        labels=["route", "result"],
    )
    for (route, name), total in by_kind.get("shadow", []):
        if name in families:
            families[name].add_metric([route], total.all[0])
        else:
            agreement.add_metric([route, name], total.all[0])
    dropped = CounterMetricFamily(
        "gateway_shadow_dropped",
        "Sampled requests not shadowed, by route and reason (queue_full, shutdown, ...).",
        labels=["route", "reason"],
    )
    for names, total in by_kind.get("shadow_dropped", []):
        dropped.add_metric(list(names), total.all[0])
    yield from (*families.values(), dropped, agreement)


def _records(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    counts = CounterMetricFamily(
        "gateway_shadow_records", "Shadow pairs by fate: written, dropped, failed.",
        labels=["result"],
    )  # fmt: skip
    for names, total in by_kind.get("records", []):
        counts.add_metric(list(names), total.all[0])
    pending = sum(total.live[0] for _, total in by_kind.get("records_pending", []))
    yield counts
    yield GaugeMetricFamily(
        "gateway_shadow_records_pending", "Pairs waiting to be written.", value=pending
    )


def _endpoints(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    """A replica pool's endpoints (backends/pool), by backend and endpoint (host:port)."""
    labels = ["backend", "endpoint"]
    in_flight = GaugeMetricFamily(
        "gateway_endpoint_in_flight", "Calls under way on each endpoint of a pool.", labels=labels
    )
    out = GaugeMetricFamily(
        "gateway_endpoint_out",
        "1 while an endpoint is out of rotation (ejected, or its readiness probe failed) in "
        "any worker.",
        labels=labels,
    )
    ejections = CounterMetricFamily(
        "gateway_endpoint_ejections", "Times an endpoint's failures ejected it.", labels=labels
    )
    calls = CounterMetricFamily(
        "gateway_endpoint_calls",
        "Calls to each endpoint by outcome: answered (an engine's 4xx included) or failed.",
        labels=[*labels, "outcome"],
    )
    retries = CounterMetricFamily(
        "gateway_pool_retries",
        "Calls sent again to another endpoint after a failure that was safe to repeat.",
        labels=["backend"],
    )
    for kind, family, pick in (
        ("endpoint_in_flight", in_flight, _live), ("endpoint_out", out, _peak),
        ("endpoint_ejections", ejections, _all), ("endpoint_calls", calls, _all),
        ("pool_retries", retries, _all),
    ):  # fmt: skip
        for names, total in by_kind.get(kind, []):
            family.add_metric(list(names), pick(total))
    yield from (in_flight, out, ejections, calls, retries)


def _all(total: Total) -> float:
    return total.all[0]


def _live(total: Total) -> float:
    return total.live[0]


def _peak(total: Total) -> float:
    return total.peak[0]


class ConformanceResults(Protocol):
    """What the conformance probes found (`gateway.probes.Conformance`), read at scrape time."""

    @property
    def results(self) -> Mapping[str, Mapping[str, Any]]: ...


class _ConformanceCollector(Collector):
    def __init__(self, conformance: ConformanceResults) -> None:
        self._conformance = conformance

    def collect(self) -> Iterator[Metric]:
        found = GaugeMetricFamily(
            "gateway_conformance",
            "1 for each backend's latest conformance probe outcome (pass, fail, refused, error).",
            labels=["backend", "check", "outcome"],
        )
        for backend, checks in self._conformance.results.items():
            for check, result in checks.items():
                found.add_metric([backend, check, result.outcome], 1)
        yield found
