"""The shadow report's breakdowns: where the candidate differs from the primary, and when.

Confusion matrices of categorical fields, parity-flagged pairs by reason, agreement over time
and the top disagreements side by side; `summary.summarize` puts them in the report. Pure
functions of the pairs and their comparisons, taken in the same order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime

from gateway import stats
from gateway.gate_rule import METRICS
from gateway.report.values import (
    Answer,
    Bucket,
    Disagreement,
    Disagreements,
    Measures,
    OverTime,
    Parity,
    ParityExample,
)
from gateway.shadow.compare import Comparison, field_labels, structured, text_kept
from gateway.shadow.pairs import Leg, PairRecord

CATEGORICAL_MAX = 12  # a field with more distinct values gets no confusion matrix
SHOWN = 20  # disagreements and parity examples listed in full
TEXT_LIMIT = 2000  # characters of each answer (and the request) a listed pair keeps
BUCKET_SECONDS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 24


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def measures(done: Sequence[Comparison]) -> Measures:
    """Agreement of the compared pairs; each measure over the pairs where it applies."""
    compared = [c for c in done if c.status == "compared"]
    shares = []
    for metric in METRICS:
        values = [getattr(c, metric) for c in compared if getattr(c, metric) is not None]
        shares.append(stats.proportion(sum(values), len(values)))
    return Measures(*shares)


def confusions(
    shadow: Sequence[PairRecord], done: Sequence[Comparison]
) -> dict[str, stats.Confusion]:
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
        if len(labels) <= CATEGORICAL_MAX:
            result[name] = stats.confusion(rows, columns, labels)
    return result


def parity(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> Parity:
    flagged = [(pair, c) for pair, c in zip(shadow, done, strict=True) if c.status == "parity"]
    answered = sum(1 for c in done if c.status != "error")
    reasons = Counter(reason for _, c in flagged for reason in {flag.reason for flag in c.flags})
    newest = sorted(flagged, key=lambda item: -item[0].created_at)[:SHOWN]
    return Parity(
        flagged=stats.proportion(len(flagged), answered),
        by_reason=dict(sorted(reasons.items(), key=lambda item: (-item[1], item[0]))),
        examples=tuple(
            ParityExample(pair.pair_id, iso(pair.created_at), c.flags) for pair, c in newest
        ),
    )


def over_time(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> OverTime:
    """Agreement per time bucket; the bucket is the smallest round width giving at most
    `MAX_BUCKETS` buckets over the window (a week when none does)."""
    compared = [(pair, c) for pair, c in zip(shadow, done, strict=True) if c.status == "compared"]
    if not compared:
        return OverTime(None, ())
    first = min(pair.created_at for pair, _ in compared)
    last = max(pair.created_at for pair, _ in compared)
    width = next(
        (w for w in BUCKET_SECONDS if last // w - first // w < MAX_BUCKETS), BUCKET_SECONDS[-1]
    )
    groups: dict[int, list[Comparison]] = {}
    for pair, c in compared:
        groups.setdefault(int(pair.created_at // width) * width, []).append(c)
    buckets = [
        Bucket(iso(start), start, len(groups[start]), measures(groups[start]))
        for start in sorted(groups)
    ]
    return OverTime(width, tuple(buckets))


def _disagrees(c: Comparison) -> bool:
    return c.status == "compared" and (c.exact is False or c.structured is False)


def disagreements(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> Disagreements:
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

    shown = tuple(_side_by_side(*item) for item in sorted(stored, key=rank)[:SHOWN])
    return Disagreements(len(found), note, shown)


def _side_by_side(pair: PairRecord, c: Comparison) -> Disagreement:
    return Disagreement(
        pair_id=pair.pair_id,
        created=iso(pair.created_at),
        public_model=pair.public_model,
        request=(pair.request or "")[:TEXT_LIMIT],
        fields_differing=tuple(name for name, same in c.fields.items() if not same),
        normalised_equal=c.normalised,
        primary=_answer(pair.primary),
        candidate=_answer(pair.candidate),
        divergence=pair.divergence,
    )


def _answer(leg: Leg) -> Answer:
    return Answer(
        leg.backend, (leg.text or "")[:TEXT_LIMIT], leg.finish_reason, leg.completion_tokens
    )
