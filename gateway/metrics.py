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
    """Requests, latency and in-flight per backend/route/status, and the gateway's overhead."""

    def __init__(self) -> None:
        # By their labels: backends x routes x statuses, a bounded set.
        self.served: dict[tuple[str, str, int], Served] = {}
        self.overhead: dict[str, Buckets] = {}  # by route
        self.in_flight: dict[tuple[str, str], InFlight] = {}
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
        # The shadow leg's counters: plain numbers too (`_ShadowCollector`), bumped about four
        # times per shadowed request. `queue_full` and both agreement series exist from the
        # start, so their rates start at 0.
        self.shadow_sampled = Count()
        self.shadow_completed = Count()
        self.shadow_failed = Count()
        self.shadow_agree = Count()
        self.shadow_disagree = Count()
        self.shadow_drops: dict[str, Count] = {"queue_full": Count()}  # by reason
        self.shadow_queue_full = self.shadow_drops["queue_full"]
        self.registry.register(_ShadowCollector(self))

    def observe(
        self, backend: str, route: str, status: int, seconds: float, overhead: float
    ) -> None:
        served = self.served.get((backend, route, status))
        if served is None:
            served = self.served[(backend, route, status)] = Served(LATENCY_BUCKETS)
        served.count += 1
        served.latency.observe(seconds)
        own = self.overhead.get(route)
        if own is None:
            own = self.overhead[route] = Buckets(OVERHEAD_BUCKETS)
        own.observe(overhead)

    def in_flight_for(self, backend: str, route: str) -> InFlight:
        """The in-flight count of one backend and route (made once, then reused)."""
        gauge = self.in_flight.get((backend, route))
        if gauge is None:
            gauge = self.in_flight[(backend, route)] = InFlight()
        return gauge

    def shadow_dropped(self, reason: str) -> Count:
        """The count of sampled requests not shadowed for `reason` (made once, then reused)."""
        count = self.shadow_drops.get(reason)
        if count is None:
            count = self.shadow_drops[reason] = Count()
        return count

    def watch_records(self, recorder: RecorderCounts) -> None:
        """Exposes the shadow-record writer's counters, read at scrape time."""
        self.registry.register(_RecordsCollector(recorder))

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


class _HotCollector(Collector):
    """The hot path's series, in the names and help texts they always had."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        labels = ["backend", "route", "status"]
        requests = CounterMetricFamily(
            "gateway_requests",
            "Requests answered, by backend, route and HTTP status.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time from request received to last byte sent, by backend, route and status.",
            labels=labels,
        )
        for (backend, route, status), served in list(metrics.served.items()):
            names = [backend, route, str(status)]
            requests.add_metric(names, served.count)
            latency.add_metric(names, served.latency.cumulative(), served.latency.total)
        in_flight = GaugeMetricFamily(
            "gateway_in_flight_requests",
            "Requests being served right now, by backend and route.",
            labels=["backend", "route"],
        )
        for (backend, route), gauge in list(metrics.in_flight.items()):
            in_flight.add_metric([backend, route], gauge.value)
        overhead = HistogramMetricFamily(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself (upstream wait excluded), by route.",
            labels=["route"],
        )
        for route, buckets in list(metrics.overhead.items()):
            overhead.add_metric([route], buckets.cumulative(), buckets.total)
        yield from (requests, latency, in_flight, overhead)


class _ShadowCollector(Collector):
    """The shadow leg's series, in the names and help texts they always had."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        yield CounterMetricFamily(
            "gateway_shadow_sampled", "Requests sampled for shadowing.",
            value=metrics.shadow_sampled.value,
        )  # fmt: skip
        yield CounterMetricFamily(
            "gateway_shadow_completed", "Shadow pairs completed (both legs answered or failed).",
            value=metrics.shadow_completed.value,
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "gateway_shadow_dropped",
            "Sampled requests not shadowed, by reason (queue_full, shutdown, ...).",
            labels=["reason"],
        )
        for reason, count in list(metrics.shadow_drops.items()):
            dropped.add_metric([reason], count.value)
        yield dropped
        yield CounterMetricFamily(
            "gateway_shadow_failed",
            "Shadow or noise calls that failed (error, timeout, unreadable answer).",
            value=metrics.shadow_failed.value,
        )
        agreement = CounterMetricFamily(
            "gateway_shadow_agreement",
            "Compared shadow pairs whose answers are identical (agree) or not (disagree); "
            "pairs with a failed leg or a parity flag are left out, as in the report.",
            labels=["result"],
        )
        agreement.add_metric(["agree"], metrics.shadow_agree.value)
        agreement.add_metric(["disagree"], metrics.shadow_disagree.value)
        yield agreement


class RecorderCounts(Protocol):
    written: int
    dropped: int
    failed: int

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
