"""The Prometheus families of the gateway's numbers, added up over a worker group at scrape
time (`gateway.numbers`), in the names and help texts they always had."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import accumulate
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.numbers import Key, Numbers, Total

# Upstream latency spans engines' range (ms to minutes); overhead is measured in microseconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05)


def _go_float(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]  # untyped upstream


def _buckets(bounds: tuple[float, ...], counts: list[float]) -> list[tuple[str, float]]:
    """Prometheus' cumulative `le` buckets, named as prometheus_client names them."""
    names = [*map(_go_float, bounds), "+Inf"]
    return list(zip(names, accumulate(counts), strict=True))


class Families(Collector):
    """Every series of the store, added up over the group."""

    def __init__(self, numbers: Numbers) -> None:
        self._numbers = numbers

    def collect(self) -> Iterator[Metric]:
        by_kind: dict[str, list[tuple[Key, Total]]] = {}
        for key, total in self._numbers.totals().items():
            by_kind.setdefault(key[0], []).append((key[1:], total))
        yield from _served(by_kind.get("served", []))
        yield from _overhead_and_in_flight(by_kind)
        yield from _shadow(by_kind)
        yield from _records(by_kind)
        yield from _endpoints(by_kind)
        yield from _clients(by_kind)
        yield from _rate_limits(by_kind)


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
    down = max((total.peak[0] for _, total in by_kind.get("records_store_down", [])), default=0)
    yield GaugeMetricFamily(
        "gateway_shadow_records_store_up",
        "1 while the records store takes writes; 0 while it is unavailable (pairs wait) to "
        "any worker.",
        value=1 - down,
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


def _clients(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    """The client connections' counts (gateway/http/limits.py), once a guard counts them."""
    if "client_connections" not in by_kind:
        return
    yield GaugeMetricFamily(
        "gateway_client_connections", "Client connections open, over the group's workers.",
        value=sum(total.live[0] for _, total in by_kind["client_connections"]),
    )  # fmt: skip
    yield CounterMetricFamily(
        "gateway_client_connections_refused",
        "Client connections closed on arrival: their worker was at GATEWAY_MAX_CONNECTIONS.",
        value=sum(total.all[0] for _, total in by_kind.get("client_connections_refused", [])),
    )
    timed_out = CounterMetricFamily(
        "gateway_client_timeouts",
        "Requests refused with 408 for arriving too slowly, by phase: head, body_read "
        "(a silence in the body) or body (GATEWAY_CLIENT_*_TIMEOUT).",
        labels=["phase"],
    )
    for names, total in by_kind.get("client_timeouts", []):
        timed_out.add_metric(list(names), total.all[0])
    yield timed_out


def _rate_limits(by_kind: Mapping[str, list[tuple[Key, Total]]]) -> Iterator[Metric]:
    """The client limits' refusals, and where they are counted (gateway/ratelimit)."""
    refused = CounterMetricFamily(
        "gateway_rate_limited",
        "Requests refused with 429 for a client's own limits, by route and limit "
        "(requests, tokens, concurrent).",
        labels=["route", "limit"],
    )
    for names, total in by_kind.get("rate_limited", []):
        refused.add_metric(list(names), total.all[0])
    yield refused
    down = by_kind.get("rate_limit_shared_down")
    if down:  # only when limits are meant to be shared (GATEWAY_RATE_LIMIT_URL)
        yield GaugeMetricFamily(
            "gateway_rate_limit_shared",
            "1 while limits are counted in Redis (GATEWAY_RATE_LIMIT_URL); 0 while Redis "
            "is unreachable to any worker, which then counts alone.",
            value=1 - max(total.peak[0] for _, total in down),
        )


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


class ConformanceFamily(Collector):
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
