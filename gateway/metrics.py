"""Prometheus metrics of the gateway, one registry per app so tests can run several apps."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Upstream latency spans engines' range (ms to minutes); overhead is measured in microseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


class Metrics:
    """Requests, latency and in-flight per route/backend/path/status, the gateway's overhead,
    and each route's shadow leg. A route label is a configured route's name ("" for a request
    no route took), so its values stay a bounded set."""

    def __init__(self) -> None:
        # By their labels: routes x backends x paths x statuses, a bounded set.
        self.served: dict[tuple[str, str, str, int], Served] = {}
        self.overhead: dict[str, Buckets] = {}  # by path
        self.in_flight: dict[tuple[str, str, str], InFlight] = {}
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and help nobody here
        self.registry = CollectorRegistry(auto_describe=True)
        # The hot path's series are plain numbers read at scrape time (`_HotCollector`): a
        # prometheus_client child takes a lock per update, 7 per request (benchmarks/README.md,
        # optimisation log), and everything here runs on the one event loop thread.
        self.registry.register(_HotCollector(self))

        self.fallback = Counter(
            "gateway_fallback",
            "Requests served by the fallback while the primary's circuit was open.",
            ["backend"],
            registry=self.registry,
        )
        # Each route's shadow counters (`ShadowCounts`): plain numbers too, bumped about four
        # times per shadowed request.
        self.shadows: dict[str, ShadowCounts] = {}
        self.registry.register(_ShadowCollector(self))

    def observe(
        self, route: str, backend: str, path: str, status: int, seconds: float, overhead: float
    ) -> None:
        key = (route, backend, path, status)
        served = self.served.get(key)
        if served is None:
            served = self.served[key] = Served(LATENCY_BUCKETS)
        served.count += 1
        served.latency.observe(seconds)
        own = self.overhead.get(path)
        if own is None:
            own = self.overhead[path] = Buckets(OVERHEAD_BUCKETS)
        own.observe(overhead)

    def in_flight_for(self, route: str, backend: str, path: str) -> InFlight:
        """The in-flight count of one route, backend and path (made once, then reused)."""
        gauge = self.in_flight.get((route, backend, path))
        if gauge is None:
            gauge = self.in_flight[(route, backend, path)] = InFlight()
        return gauge

    def shadow_for(self, route: str) -> ShadowCounts:
        """One route's shadow counters (made once, then reused)."""
        counts = self.shadows.get(route)
        if counts is None:
            counts = self.shadows[route] = ShadowCounts()
        return counts

    def watch_records(self, recorder: RecorderCounts) -> None:
        """Exposes the shadow-record writer's counters, read at scrape time."""
        self.registry.register(_RecordsCollector(recorder))

    def watch_connections(self, guard: ConnectionCounts) -> None:
        """Exposes the client connections' counts (gateway/http/limits.py)."""
        self.registry.register(_ConnectionsCollector(guard))

    def watch_rate_limits(self, limiter: RateLimitCounts) -> None:
        """Exposes the client limits' refusals and where they are counted (gateway/ratelimit)."""
        self.registry.register(_RateLimitCollector(limiter))

    def watch_conformance(self, conformance: ConformanceResults) -> None:
        """Exposes the conformance probes' latest outcomes, read at scrape time."""
        self.registry.register(_ConformanceCollector(conformance))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Buckets:
    """A histogram's numbers: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "names", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # The `le` labels as prometheus_client's own histograms write them ("1.0", "5e-05").
        self.names = [*map(_go_float, bounds), "+Inf"]
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bucket counts values <= its bound
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' cumulative `le` buckets."""
        return list(zip(self.names, accumulate(self.counts), strict=True))


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped upstream


class Served:
    __slots__ = ("count", "latency")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.count = 0
        self.latency = Buckets(bounds)


class Count:
    """A counter's number, read at scrape time."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class InFlight(Count):
    """A gauge's number: a count that also goes down."""

    __slots__ = ()

    def dec(self) -> None:
        self.value -= 1


class ShadowCounts:
    """One route's shadow leg, counted. `queue_full` and both agreement series exist from the
    start, so their rates start at 0."""

    def __init__(self) -> None:
        self.sampled = Count()
        self.completed = Count()
        self.failed = Count()
        self.agree = Count()
        self.disagree = Count()
        self.drops: dict[str, Count] = {"queue_full": Count()}  # by reason
        self.queue_full = self.drops["queue_full"]

    def dropped(self, reason: str) -> Count:
        """The count of sampled requests not shadowed for `reason` (made once, then reused)."""
        count = self.drops.get(reason)
        if count is None:
            count = self.drops[reason] = Count()
        return count


class _HotCollector(Collector):
    """The hot path's series, in the names and help texts they always had."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
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
        for (route, backend, path, status), served in list(metrics.served.items()):
            names = [route, backend, path, str(status)]
            requests.add_metric(names, served.count)
            latency.add_metric(names, served.latency.cumulative(), served.latency.total)
        in_flight = GaugeMetricFamily(
            "gateway_in_flight_requests",
            "Requests being served right now, by route, backend and path.",
            labels=["route", "backend", "path"],
        )
        for (route, backend, path), gauge in list(metrics.in_flight.items()):
            in_flight.add_metric([route, backend, path], gauge.value)
        overhead = HistogramMetricFamily(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself (upstream wait excluded), by path.",
            labels=["path"],
        )
        for path, buckets in list(metrics.overhead.items()):
            overhead.add_metric([path], buckets.cumulative(), buckets.total)
        yield from (requests, latency, in_flight, overhead)


class _ShadowCollector(Collector):
    """The shadow leg's series, in the names and help texts they always had."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        families = {
            name: CounterMetricFamily(f"gateway_shadow_{name}", text, labels=["route"])
            for name, text in (
                ("sampled", "Requests sampled for shadowing, by route."),
                ("completed", "Shadow pairs completed (both legs answered or failed)."),
                ("failed", "Shadow or noise calls that failed (error, timeout, unreadable)."),
            )
        }
        dropped = CounterMetricFamily(
            "gateway_shadow_dropped",
            "Sampled requests not shadowed, by route and reason (queue_full, shutdown, ...).",
            labels=["route", "reason"],
        )
        agreement = CounterMetricFamily(
            "gateway_shadow_agreement",
            "Compared shadow pairs whose answers are identical (agree) or not (disagree); "
            "pairs with a failed leg or a parity flag are left out, as in the report.",
            labels=["route", "result"],
        )
        for route, counts in list(self._metrics.shadows.items()):
            for name, family in families.items():
                family.add_metric([route], getattr(counts, name).value)
            for reason, count in list(counts.drops.items()):
                dropped.add_metric([route, reason], count.value)
            agreement.add_metric([route, "agree"], counts.agree.value)
            agreement.add_metric([route, "disagree"], counts.disagree.value)
        yield from (*families.values(), dropped, agreement)


class RecorderCounts(Protocol):
    written: int
    dropped: int
    failed: int
    store_up: bool

    @property
    def pending(self) -> int: ...


class _RecordsCollector(Collector):
    def __init__(self, recorder: RecorderCounts) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            "gateway_shadow_records", "Shadow pairs by fate: written, dropped, failed.",
            labels=["result"],
        )  # fmt: skip
        for result in ("written", "dropped", "failed"):
            counts.add_metric([result], getattr(self._recorder, result))
        yield counts
        yield GaugeMetricFamily(
            "gateway_shadow_records_pending", "Pairs waiting to be written.",
            value=self._recorder.pending,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "gateway_shadow_records_store_up",
            "1 while the records store takes writes; 0 while it is unavailable (pairs wait).",
            value=int(self._recorder.store_up),
        )


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


class ConnectionCounts(Protocol):
    """What the server's connection guard counts (`gateway.http.limits.ConnectionGuard`)."""

    open: int
    refused: int
    timed_out: dict[str, int]


class _ConnectionsCollector(Collector):
    def __init__(self, guard: ConnectionCounts) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        guard = self._guard
        yield GaugeMetricFamily(
            "gateway_client_connections", "Client connections open in this process.",
            value=guard.open,
        )  # fmt: skip
        yield CounterMetricFamily(
            "gateway_client_connections_refused",
            "Client connections closed on arrival: the process was at GATEWAY_MAX_CONNECTIONS.",
            value=guard.refused,
        )
        timed_out = CounterMetricFamily(
            "gateway_client_timeouts",
            "Requests refused with 408 for arriving too slowly, by phase: head, body_read "
            "(a silence in the body) or body (GATEWAY_CLIENT_*_TIMEOUT).",
            labels=["phase"],
        )
        for phase, count in guard.timed_out.items():
            timed_out.add_metric([phase], count)
        yield timed_out


class RateLimitCounts(Protocol):
    """What the client limiter counts (`gateway.ratelimit.limiter.RateLimiter`)."""

    refused: dict[tuple[str, str], int]
    shared_up: bool

    @property
    def shares(self) -> bool: ...


class _RateLimitCollector(Collector):
    def __init__(self, limiter: RateLimitCounts) -> None:
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "gateway_rate_limited",
            "Requests refused with 429 for a client's own limits, by route and limit "
            "(requests, tokens, concurrent).",
            labels=["route", "limit"],
        )
        for (route, limit), count in list(self._limiter.refused.items()):
            refused.add_metric([route, limit], count)
        yield refused
        if self._limiter.shares:
            yield GaugeMetricFamily(
                "gateway_rate_limit_shared",
                "1 while limits are counted in Redis (GATEWAY_RATE_LIMIT_URL); 0 while Redis "
                "is unreachable and each process counts alone.",
                value=int(self._limiter.shared_up),
            )
