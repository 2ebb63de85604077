"""The shadow report: what the recorded pairs say about the candidate, and the cutover verdict.

`summarize` turns pair records into plain data (what `gateway report --format json` prints):
per backend counts, errors and latency; paired latency deltas; agreement with Wilson 95%
intervals; confusion matrices of categorical fields; the noise floor (the primary against
itself); parity-flagged pairs; agreement over time; the top disagreements. `evaluate` judges
it by a written `GateRule`. Pure functions: no clock, no I/O.

Example::

    summary = summarize(await store.read(since), GateRule(min_pairs=200))
    summary["verdict"]          # {"passed": False, "reasons": ["FAIL pairs: 120 ...", ...]}
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from gateway import stats
from gateway.report.gate import METRICS, GateRule, evaluate
from gateway.shadow.compare import (
    Comparison,
    Role,
    compare,
    failed,
    field_labels,
    structured,
    text_kept,
)
from gateway.shadow.pairs import Leg, PairRecord

CATEGORICAL_MAX = 12  # a field with more distinct values gets no confusion matrix
SHOWN = 20  # disagreements and parity examples listed in full
TEXT_LIMIT = 2000  # characters of each answer (and the request) a listed pair keeps
CDF_QUANTILES = (*range(0, 100, 5), 99, 100)
BUCKET_SECONDS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 24


def summarize(
    records: Sequence[PairRecord],
    gate: GateRule | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as plain JSON-serialisable data, verdict included.

    The comparison is the latest shadow pair's (primary, candidate); pairs of other backends
    (an earlier configuration) are counted under `pairs.other` and left out.
    """
    rule = gate or GateRule()
    shadow_all = sorted((r for r in records if r.kind == "shadow"), key=lambda r: r.created_at)
    latest = shadow_all[-1] if shadow_all else None
    primary = latest.primary.backend if latest else None
    candidate = latest.candidate.backend if latest else None
    shadow = [
        r for r in shadow_all if (r.primary.backend, r.candidate.backend) == (primary, candidate)
    ]
    noise = [r for r in records if r.kind == "noise" and r.primary.backend == primary]
    done = [compare(pair) for pair in shadow]
    noise_done = [compare(pair) for pair in noise]
    summary: dict[str, Any] = {
        "report": "shadow",
        **(meta or {}),
        "primary": primary,
        "candidate": candidate,
        "window": _window(records),
        "text_stored": all(text_kept(pair) for pair in shadow) if shadow else None,
        "pairs": _pairs(len(records), shadow, noise, done),
        "backends": _backends(shadow, done) if shadow else {},
        "paired_delta_ms": _deltas(shadow, done),
        "agreement": _agreement(done),
        "confusion": _confusions(shadow, done),
        "noise_floor": _noise_floor(noise_done),
        "parity": _parity(shadow, done),
        "over_time": _over_time(shadow, done),
        "disagreements": _disagreements(shadow, done),
        "gate": asdict(rule),
    }
    summary["verdict"] = asdict(evaluate(summary, rule))
    return summary


def proportion(successes: int, n: int) -> dict[str, float | int]:
    value = stats.proportion(successes, n)
    return {
        "successes": successes,
        "n": n,
        "rate": value.rate,
        "low": value.low,
        "high": value.high,
    }


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _window(records: Sequence[PairRecord]) -> dict[str, str] | None:
    if not records:
        return None
    times = [record.created_at for record in records]
    return {"start": _iso(min(times)), "end": _iso(max(times))}


def _pairs(
    total: int,
    shadow: Sequence[PairRecord],
    noise: Sequence[PairRecord],
    done: Sequence[Comparison],
) -> dict[str, Any]:
    errors = Counter(c.error for c in done if c.error is not None)
    primary_ok = sum(
        1 for pair in shadow if pair.primary.status == 200 and pair.primary.error is None
    )
    return {
        "records": total,
        "shadow": len(shadow),
        "noise": len(noise),
        "other": total - len(shadow) - len(noise),
        "errors": {side: errors[f"{side} failed"] for side in ("primary", "candidate", "both")},
        "candidate_only_errors": proportion(errors["candidate failed"], primary_ok),
        "parity_flagged": sum(1 for c in done if c.status == "parity"),
        "compared": sum(1 for c in done if c.status == "compared"),
    }


def _backends(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    roles: tuple[Role, ...] = ("primary", "candidate")
    return {role: _backend(role, shadow, done) for role in roles}


def _backend(
    role: Role, shadow: Sequence[PairRecord], done: Sequence[Comparison]
) -> dict[str, Any]:
    legs = [pair.primary if role == "primary" else pair.candidate for pair in shadow]
    ok = [leg for leg in legs if not failed(leg)]
    checked = [c.primary_valid if role == "primary" else c.candidate_valid for c in done]
    judged = [valid for valid in checked if valid is not None]
    e2e = [leg.e2e_ms for leg in ok if leg.e2e_ms is not None]
    ttft = [leg.ttft_ms for leg in ok if leg.ttft_ms is not None]
    return {
        "name": legs[0].backend,
        "count": len(legs),
        "errors": proportion(len(legs) - len(ok), len(legs)),
        "schema_violations": proportion(judged.count(False), len(judged)) if judged else None,
        "e2e_ms": _latency(e2e),
        "ttft_ms": _latency(ttft),
        "cdf_ms": {"e2e": _cdf(e2e), "ttft": _cdf(ttft)},
    }


def _latency(values: Sequence[float]) -> dict[str, float | int] | None:
    if not values:
        return None
    return {"n": len(values), **stats.percentiles(values), "mean": statistics.fmean(values)}


def _cdf(values: Sequence[float]) -> list[list[float]]:
    """(milliseconds, share of answers at most that slow) at fixed quantiles, for a chart."""
    if not values:
        return []
    return [[stats.percentile(values, q), q / 100] for q in CDF_QUANTILES]


def _deltas(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    """Candidate minus primary, per pair where both legs answered: the same request, clock and
    streaming mode on both sides, so the spread is the engines' and not the traffic's."""
    both = [pair for pair, c in zip(shadow, done, strict=True) if c.status != "error"]
    e2e = [
        pair.candidate.e2e_ms - pair.primary.e2e_ms
        for pair in both
        if pair.candidate.e2e_ms is not None and pair.primary.e2e_ms is not None
    ]
    ttft = [
        pair.candidate.ttft_ms - pair.primary.ttft_ms
        for pair in both
        if pair.candidate.ttft_ms is not None and pair.primary.ttft_ms is not None
    ]
    return {"e2e": _latency(e2e), "ttft": _latency(ttft)}


def _agreement(done: Sequence[Comparison]) -> dict[str, Any]:
    """Agreement of the compared pairs; each measure over the pairs where it applies."""
    compared = [c for c in done if c.status == "compared"]
    result: dict[str, Any] = {}
    for metric in METRICS:
        values = [getattr(c, metric) for c in compared if getattr(c, metric) is not None]
        result[metric] = proportion(sum(values), len(values))
    names = sorted({name for c in compared for name in c.fields})
    result["fields"] = {
        name: proportion(
            sum(1 for c in compared if c.fields.get(name)),
            sum(1 for c in compared if name in c.fields),
        )
        for name in names
    }
    return result


def _noise_floor(done: Sequence[Comparison]) -> dict[str, Any]:
    return {
        "pairs": len(done),
        "errors": sum(1 for c in done if c.status == "error"),
        "parity_flagged": sum(1 for c in done if c.status == "parity"),
        "compared": sum(1 for c in done if c.status == "compared"),
        **_agreement(done),
    }


def _confusions(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    """Primary value (rows) against candidate value (columns), per categorical field."""
    outputs = [
        (structured(pair.primary), structured(pair.candidate))
        for pair, c in zip(shadow, done, strict=True)
        if c.status == "compared"
    ]
    both = [(p, c) for p, c in outputs if p is not None and c is not None]
    names = sorted({name for p, c in both for name in (*p, *c)})
    result = {}
    for name in names:
        values = [v.get(name) for pair in both for v in pair if name in v]
        if any(isinstance(value, dict | list | float) for value in values):
            continue
        rows = [field_labels(p, {name})[name] for p, c in both if name in p or name in c]
        columns = [field_labels(c, {name})[name] for p, c in both if name in p or name in c]
        labels = sorted(set(rows) | set(columns))
        if len(labels) > CATEGORICAL_MAX:
            continue
        matrix = stats.confusion(rows, columns, labels)
        result[name] = {
            "labels": list(matrix.labels),
            "predicted": list(matrix.predicted),
            "matrix": [list(row) for row in matrix.matrix],
        }
    return result


def _parity(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    flagged = [(pair, c) for pair, c in zip(shadow, done, strict=True) if c.status == "parity"]
    answered = sum(1 for c in done if c.status != "error")
    reasons = Counter(reason for _, c in flagged for reason in {flag.reason for flag in c.flags})
    return {
        "flagged": proportion(len(flagged), answered),
        "by_reason": dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        "examples": [
            {
                "pair_id": pair.pair_id,
                "created": _iso(pair.created_at),
                "flags": [{"reason": f.reason, "detail": f.detail} for f in c.flags],
            }
            for pair, c in sorted(flagged, key=lambda item: -item[0].created_at)[:SHOWN]
        ],
    }


def _over_time(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    """Agreement per time bucket; the bucket is the smallest round width giving at most
    `MAX_BUCKETS` buckets over the window (a week when none does)."""
    compared = [(pair, c) for pair, c in zip(shadow, done, strict=True) if c.status == "compared"]
    if not compared:
        return {"bucket_seconds": None, "buckets": []}
    first = min(pair.created_at for pair, _ in compared)
    last = max(pair.created_at for pair, _ in compared)
    width = next(
        (w for w in BUCKET_SECONDS if last // w - first // w < MAX_BUCKETS), BUCKET_SECONDS[-1]
    )
    groups: dict[int, list[Comparison]] = {}
    for pair, c in compared:
        groups.setdefault(int(pair.created_at // width) * width, []).append(c)
    buckets: list[dict[str, Any]] = []
    for start in sorted(groups):
        bucket: dict[str, Any] = {"start": _iso(start), "t": start, "pairs": len(groups[start])}
        agreement = _agreement(groups[start])
        buckets.append(bucket | {metric: agreement[metric] for metric in METRICS})
    return {"bucket_seconds": width, "buckets": buckets}


def _disagrees(c: Comparison) -> bool:
    return c.status == "compared" and (c.exact is False or c.structured is False)


def _disagreements(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> dict[str, Any]:
    """Compared pairs that differ, most differing fields first, then those that differ beyond
    whitespace and case, then the newest; both answers side by side when the text was kept."""
    found = [(pair, c) for pair, c in zip(shadow, done, strict=True) if _disagrees(c)]
    stored = [(pair, c) for pair, c in found if text_kept(pair)]
    note = None
    if len(stored) < len(found):
        note = (
            f"{len(found) - len(stored)} of {len(found)} disagreeing pairs kept only hashes "
            "(GATEWAY_RECORDS_TEXT=hashes): their answers cannot be shown"
        )

    def rank(item: tuple[PairRecord, Comparison]) -> tuple[int, bool, float]:
        pair, c = item
        return (
            -sum(not same for same in c.fields.values()),
            c.normalised is True,
            -pair.created_at,
        )

    return {
        "total": len(found),
        "note": note,
        "shown": [_side_by_side(*item) for item in sorted(stored, key=rank)[:SHOWN]],
    }


def _side_by_side(pair: PairRecord, c: Comparison) -> dict[str, Any]:
    def leg(answer: Leg) -> dict[str, Any]:
        return {
            "backend": answer.backend,
            "text": (answer.text or "")[:TEXT_LIMIT],
            "finish_reason": answer.finish_reason,
            "completion_tokens": answer.completion_tokens,
        }

    return {
        "pair_id": pair.pair_id,
        "created": _iso(pair.created_at),
        "public_model": pair.public_model,
        "request": (pair.request or "")[:TEXT_LIMIT],
        "fields_differing": [name for name, same in c.fields.items() if not same],
        "normalised_equal": c.normalised,
        "primary": leg(pair.primary),
        "candidate": leg(pair.candidate),
    }
