"""gateway.metrics: the hot path's and the shadow leg's series, kept as plain numbers, read as
Prometheus text."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import LATENCY_BUCKETS, Metrics

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
