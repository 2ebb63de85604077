"""Read guidellm's JSON reports and compare two targets: what the gateway adds, with a 95 % CI.

Pure functions. Each report holds one benchmark per profile; every successful request carries
guidellm's own ``time_to_first_token_ms``, ``inter_token_latency_ms`` and ``request_latency``
(seconds). Requests of all rounds are pooled per target; the added value is the difference of
the two medians, with a bootstrap interval over requests (fixed seed, so reruns agree).
"""

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.stats import percentile

METRICS = {
    "ttft_ms": "time_to_first_token_ms",
    "itl_ms": "inter_token_latency_ms",
    "latency_ms": "request_latency",
    "reads": "token_iterations",  # stream reads that carried tokens: few means bunched events
}
BOOTSTRAP_DRAWS = 1000


def samples(report: Mapping[str, Any]) -> tuple[dict[str, list[float]], int]:
    """Per metric, the values of every successful request; and how many requests failed."""
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    failed = 0
    for benchmark in report["benchmarks"]:
        requests = benchmark["requests"]
        failed += len(requests.get("errored") or []) + len(requests.get("incomplete") or [])
        for request in requests["successful"]:
            timings = (request.get("info") or {}).get("timings") or {}
            for name, key in METRICS.items():
                value = request.get(key, timings.get(key))
                if isinstance(value, int | float):
                    values[name].append(value * (1000.0 if key == "request_latency" else 1.0))
    return values, failed


def pooled(reports: Iterable[Mapping[str, Any]]) -> tuple[dict[str, list[float]], int]:
    """The samples of several rounds of one target, together."""
    merged: dict[str, list[float]] = {name: [] for name in METRICS}
    failed = 0
    for report in reports:
        values, errors = samples(report)
        failed += errors
        for name, found in values.items():
            merged[name] += found
    return merged, failed


def describe(values: Mapping[str, Sequence[float]]) -> dict[str, float | None]:
    """p50 and p95 of each metric (milliseconds; reads are counts)."""
    out: dict[str, float | None] = {}
    for name, found in values.items():
        out[f"{name}_p50"] = round(percentile(found, 50), 3) if found else None
        out[f"{name}_p95"] = round(percentile(found, 95), 3) if found else None
    return out


def added_median(
    through: Sequence[float], direct: Sequence[float], seed: int = 0
) -> dict[str, float] | None:
    """Median(through) - median(direct), with a 95 % bootstrap interval."""
    if not through or not direct:
        return None
    draw = random.Random(seed)
    diffs = sorted(
        percentile(draw.choices(through, k=len(through)), 50)
        - percentile(draw.choices(direct, k=len(direct)), 50)
        for _ in range(BOOTSTRAP_DRAWS)
    )
    return {
        "added": round(percentile(through, 50) - percentile(direct, 50), 3),
        "ci_low": round(percentile(diffs, 2.5), 3),
        "ci_high": round(percentile(diffs, 97.5), 3),
    }


def render(rows: Mapping[str, Mapping[str, Any]], added: Mapping[str, Any]) -> str:
    """Markdown: one row per target, then the gateway's added median per metric."""
    lines = [
        "| target | requests | failed | TTFT p50 | TTFT p95 | ITL p50 | ITL p95 | latency p50 "
        "| token reads p50 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cells = [row.get(k) for k in ("ttft_ms_p50", "ttft_ms_p95", "itl_ms_p50", "itl_ms_p95")]
        cells.append(row.get("latency_ms_p50"))
        shown = " | ".join("-" if v is None else f"{v:.3f} ms" for v in cells)
        reads = row.get("reads_p50")
        counts = f"{row['requests']} | {row['failed']}"
        read_text = "-" if reads is None else f"{reads:g}"
        lines.append(f"| {name} | {counts} | {shown} | {read_text} |")
    lines += ["", "| added by the gateway (median, 95 % CI) | ms |", "|---|---|"]
    for metric, value in added.items():
        if metric == "reads":
            continue
        text = (
            "-"
            if value is None
            else (f"{value['added']:+.3f} ({value['ci_low']:+.3f} to {value['ci_high']:+.3f})")
        )
        lines.append(f"| {metric} | {text} |")
    return "\n".join(lines)
