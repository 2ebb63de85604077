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
        metrics.observe("vllm", CHAT, 200, seconds, 0.0001)
    metrics.observe("vllm", CHAT, 502, 0.05, 0.003)
    got = samples(metrics)
    ok = {"backend": "vllm", "route": CHAT, "status": "200"}
    assert got[key("gateway_requests_total", **ok)] == 4
    assert got[key("gateway_requests_total", **{**ok, "status": "502"})] == 1
    buckets = [
        got[key("gateway_request_duration_seconds_bucket", **ok, le=le)]
        for le in ("0.005", "0.01", "0.25", "120.0", "+Inf")
    ]
    assert buckets == [2, 2, 3, 3, 4]
    assert got[key("gateway_request_duration_seconds_count", **ok)] == 4
    assert got[key("gateway_request_duration_seconds_sum", **ok)] == 0.004 + 0.005 + 0.2 + 500.0
    assert got[key("gateway_overhead_seconds_count", route=CHAT)] == 5
    assert got[key("gateway_overhead_seconds_bucket", route=CHAT, le="0.0001")] == 4
    # Two latency series (their bounds and +Inf), one overhead series (10 bounds and +Inf).
    bucket_series = [name for name, _ in got if name.endswith("_bucket")]
    assert len(bucket_series) == 2 * (len(LATENCY_BUCKETS) + 1) + 11


def test_in_flight_counts_up_and_down() -> None:
    metrics = Metrics()
    gauge = metrics.in_flight_for("vllm", CHAT)
    assert metrics.in_flight_for("vllm", CHAT) is gauge
    gauge.inc()
    gauge.inc()
    gauge.dec()
    metrics.in_flight_for("triton", CHAT)
    got = samples(metrics)
    assert got[key("gateway_in_flight_requests", backend="vllm", route=CHAT)] == 1
    assert got[key("gateway_in_flight_requests", backend="triton", route=CHAT)] == 0


def test_shadow_counters_start_at_zero_and_count_by_reason_and_result() -> None:
    metrics = Metrics()
    fresh = samples(metrics)
    assert fresh[key("gateway_shadow_sampled_total")] == 0
    assert fresh[key("gateway_shadow_dropped_total", reason="queue_full")] == 0
    assert fresh[key("gateway_shadow_agreement_total", result="agree")] == 0
    assert fresh[key("gateway_shadow_agreement_total", result="disagree")] == 0
    for _ in range(3):
        metrics.shadow_sampled.inc()
    metrics.shadow_completed.inc()
    metrics.shadow_failed.inc()
    metrics.shadow_agree.inc()
    metrics.shadow_queue_full.inc()
    metrics.shadow_dropped("shutdown").inc(4)
    assert metrics.shadow_dropped("shutdown") is metrics.shadow_dropped("shutdown")
    got = samples(metrics)
    assert got[key("gateway_shadow_sampled_total")] == 3
    assert got[key("gateway_shadow_completed_total")] == 1
    assert got[key("gateway_shadow_failed_total")] == 1
    assert got[key("gateway_shadow_agreement_total", result="agree")] == 1
    assert got[key("gateway_shadow_dropped_total", reason="queue_full")] == 1
    assert got[key("gateway_shadow_dropped_total", reason="shutdown")] == 4
    text = metrics.render().decode()
    assert "# TYPE gateway_shadow_dropped_total counter" in text
    assert "# HELP gateway_shadow_sampled_total Requests sampled for shadowing." in text
