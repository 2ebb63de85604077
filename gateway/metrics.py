"""Prometheus metrics of the gateway, one registry per app so tests can run several apps."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Upstream latency spans engines' range (ms to minutes); overhead is measured in microseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


class Metrics:
    """Requests, latency and in-flight per backend/route/status, and the gateway's overhead."""

    def __init__(self) -> None:
        # Label children by their labels: backends x routes x statuses, a bounded set.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram, Histogram]] = {}
        self._in_flight: dict[tuple[str, str], Gauge] = {}
        disable_created_metrics()  # type: ignore[no-untyped-call]  # `_created` series double the output and help nobody here
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Requests answered, by backend, route and HTTP status.",
            ["backend", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request received to last byte sent, by backend, route and status.",
            ["backend", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests",
            "Requests being served right now, by backend and route.",
            ["backend", "route"],
            registry=self.registry,
        )
        self.overhead = Histogram(
            "gateway_overhead_seconds",
            "Time spent in the gateway itself (upstream wait excluded), by route.",
            ["route"],
            buckets=OVERHEAD_BUCKETS,
            registry=self.registry,
        )

        self.fallback = Counter(
            "gateway_fallback",
            "Requests served by the fallback while the primary's circuit was open.",
            ["backend"],
            registry=self.registry,
        )
        self.shadow_sampled = Counter(
            "gateway_shadow_sampled", "Requests sampled for shadowing.", registry=self.registry
        )
        self.shadow_completed = Counter(
            "gateway_shadow_completed",
            "Shadow pairs completed (both legs answered or failed).",
            registry=self.registry,
        )
        self.shadow_dropped = Counter(
            "gateway_shadow_dropped",
            "Sampled requests not shadowed, by reason (queue_full, shutdown, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.shadow_failed = Counter(
            "gateway_shadow_failed",
            "Shadow or noise calls that failed (error, timeout, unreadable answer).",
            registry=self.registry,
        )
        self.shadow_agreement = Counter(
            "gateway_shadow_agreement",
            "Compared shadow pairs whose answers are identical (agree) or not (disagree); "
            "pairs with a failed leg or a parity flag are left out, as in the report.",
            ["result"],
            registry=self.registry,
        )
        for result in ("agree", "disagree"):  # both series from the start, so rates start at 0
            self.shadow_agreement.labels(result)

    def observe(
        self, backend: str, route: str, status: int, seconds: float, overhead: float
    ) -> None:
        key = (backend, route, status)
        series = self._series.get(key)
        if series is None:  # prometheus_client's labels() costs more than the observations
            code = str(status)
            series = self._series[key] = (
                self.requests.labels(backend, route, code),
                self.latency.labels(backend, route, code),
                self.overhead.labels(route),
            )
        requests, latency, own = series
        requests.inc()
        latency.observe(seconds)
        own.observe(overhead)

    def in_flight_for(self, backend: str, route: str) -> Gauge:
        """The in-flight gauge of one backend and route (looked up once, then cached)."""
        gauge = self._in_flight.get((backend, route))
        if gauge is None:
            gauge = self._in_flight[(backend, route)] = self.in_flight.labels(backend, route)
        return gauge

    def watch_records(self, recorder: RecorderCounts) -> None:
        """Exposes the shadow-record writer's counters, read at scrape time."""
        self.registry.register(_RecordsCollector(recorder))

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
