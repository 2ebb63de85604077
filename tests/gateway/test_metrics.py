"""gateway.metrics: the hot path's and the shadow leg's series, kept as plain numbers, read as
Prometheus text."""

from __future__ import annotations

import asyncio
import multiprocessing
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backends.errors import RateLimited
from gateway.http.limits import ConnectionGuard, ConnectionLimits, Phase
from gateway.metrics import LATENCY_BUCKETS, Metrics
from gateway.numbers import SharedNumbers
from gateway.ratelimit.config import RateLimits
from gateway.ratelimit.limiter import RateLimiter, RatePolicy
from gateway.records.sqlite import SqliteStore
from gateway.records.store import Recorder, RecorderOptions

CHAT = "/v1/chat/completions"


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_requests_latency_and_overhead_by_their_labels() -> None:
    metrics = Metrics()
    for seconds in (0.004, 0.005, 0.2, 500.0):  # 0.005 is a bound: its bucket counts it
        metrics.observe("qwen3-chat", "vllm", CHAT, 200, seconds, 0.0001)
    metrics.observe("qwen3-chat", "vllm", CHAT, 502, 0.05, 0.003)
    got = samples(metrics)
    ok = {"route": "qwen3-chat", "backend": "vllm", "path": CHAT, "status": "200"}
    assert got[key("gateway_requests_total", **ok)] == 4
    assert got[key("gateway_requests_total", **{**ok, "status": "502"})] == 1
    buckets = [
        got[key("gateway_request_duration_seconds_bucket", **ok, le=le)]
        for le in ("0.005", "0.01", "0.25", "120.0", "+Inf")
    ]
    assert buckets == [2, 2, 3, 3, 4]
    assert got[key("gateway_request_duration_seconds_count", **ok)] == 4
    assert got[key("gateway_request_duration_seconds_sum", **ok)] == 0.004 + 0.005 + 0.2 + 500.0
    assert got[key("gateway_overhead_seconds_count", path=CHAT)] == 5
    assert got[key("gateway_overhead_seconds_bucket", path=CHAT, le="0.0001")] == 4
    # Two latency series (their bounds and +Inf), one overhead series (10 bounds and +Inf).
    bucket_series = [name for name, _ in got if name.endswith("_bucket")]
    assert len(bucket_series) == 2 * (len(LATENCY_BUCKETS) + 1) + 11


def test_in_flight_counts_up_and_down() -> None:
    metrics = Metrics()
    gauge = metrics.in_flight_for("chat", "vllm", CHAT)
    assert metrics.in_flight_for("chat", "vllm", CHAT) is gauge
    gauge.inc()
    gauge.inc()
    gauge.dec()
    metrics.in_flight_for("chat", "triton", CHAT)
    got = samples(metrics)
    assert got[key("gateway_in_flight_requests", route="chat", backend="vllm", path=CHAT)] == 1
    assert got[key("gateway_in_flight_requests", route="chat", backend="triton", path=CHAT)] == 0


def test_shadow_counters_start_at_zero_and_count_by_route_reason_and_result() -> None:
    metrics = Metrics()
    counts = metrics.shadow_for("chat")
    assert metrics.shadow_for("chat") is counts
    fresh = samples(metrics)
    assert fresh[key("gateway_shadow_sampled_total", route="chat")] == 0
    assert fresh[key("gateway_shadow_dropped_total", route="chat", reason="queue_full")] == 0
    assert fresh[key("gateway_shadow_agreement_total", route="chat", result="agree")] == 0
    assert fresh[key("gateway_shadow_agreement_total", route="chat", result="disagree")] == 0
    for _ in range(3):
        counts.sampled.inc()
    counts.completed.inc()
    counts.failed.inc()
    counts.agree.inc()
    counts.queue_full.inc()
    counts.dropped("shutdown").inc(4)
    assert counts.dropped("shutdown") is counts.dropped("shutdown")
    metrics.shadow_for("tagger").sampled.inc()
    got = samples(metrics)
    assert got[key("gateway_shadow_sampled_total", route="chat")] == 3
    assert got[key("gateway_shadow_sampled_total", route="tagger")] == 1
    assert got[key("gateway_shadow_completed_total", route="chat")] == 1
    assert got[key("gateway_shadow_failed_total", route="chat")] == 1
    assert got[key("gateway_shadow_agreement_total", route="chat", result="agree")] == 1
    assert got[key("gateway_shadow_dropped_total", route="chat", reason="queue_full")] == 1
    assert got[key("gateway_shadow_dropped_total", route="chat", reason="shutdown")] == 4
    text = metrics.render().decode()
    assert "# TYPE gateway_shadow_dropped_total counter" in text
    assert "# HELP gateway_shadow_sampled_total Requests sampled for shadowing, by route." in text


def _scraped(metrics: Metrics) -> dict[str, float]:
    got = samples(metrics)
    return {
        "open": got[key("gateway_client_connections")],
        "refused": got[key("gateway_client_connections_refused_total")],
        "head": got[key("gateway_client_timeouts_total", phase="head")],
        "body": got[key("gateway_client_timeouts_total", phase="body")],
        "limited": got[key("gateway_rate_limited_total", route="chat", limit="requests")],
        "store_up": got[key("gateway_shadow_records_store_up")],
        "shared": got[key("gateway_rate_limit_shared")],
    }


def _count_clients(metrics: Metrics, connections: int, phases: list[Phase], refusals: int) -> None:
    """What a worker's connection guard and rate limiter count, done for real."""
    guard = ConnectionGuard(ConnectionLimits(max_connections=1), numbers=metrics.numbers)
    for _ in range(connections):
        guard.admits()  # past the first: refused at the cap
    for phase in phases:
        guard.timed_out_in(phase)
    limits = RatePolicy(RateLimiter(numbers=metrics.numbers), RateLimits(requests_per_minute=1), {})

    async def refuse() -> None:
        await limits.admit(b"k" * 32, "chat")
        for _ in range(refusals):
            with pytest.raises(RateLimited):
                await limits.admit(b"k" * 32, "chat")

    asyncio.run(refuse())


def a_worker_with_its_store_and_redis_down(folder: str, ready: Event, done: Event) -> None:
    metrics = Metrics(SharedNumbers(Path(folder)))
    _count_clients(metrics, connections=2, phases=["head", "head"], refusals=3)
    options = RecorderOptions(queue=10, batch=10, keep_text=False)
    recorder = Recorder(SqliteStore(Path(folder) / "pairs.db"), options, counts=metrics.records)
    recorder.store_up = False  # as its writer sets it when the store is unavailable
    down = RateLimiter("redis://127.0.0.1:1/0", numbers=metrics.numbers)
    down.shared_up = False  # as RateLimiter._went_down sets it
    ready.set()
    done.wait(30)


def test_client_limits_and_stores_state_add_up_over_a_worker_group(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    ready, done = spawn.Event(), spawn.Event()
    worker = spawn.Process(
        target=a_worker_with_its_store_and_redis_down, args=(str(tmp_path), ready, done)
    )
    worker.start()
    try:
        assert ready.wait(30)
        metrics = Metrics(SharedNumbers(tmp_path))
        _count_clients(metrics, connections=1, phases=["body"], refusals=1)
        RateLimiter("redis://127.0.0.1:1/0", numbers=metrics.numbers)  # up, as far as it knows
        both = {"open": 2, "refused": 1, "head": 2, "body": 1, "limited": 4}
        assert _scraped(metrics) == {**both, "store_up": 0, "shared": 0}  # down in one worker
    finally:
        done.set()
        worker.join(30)
    # Counters keep the exited worker's counts; gauges and states are the live workers' only.
    assert _scraped(metrics) == {**both, "open": 1, "store_up": 1, "shared": 1}
