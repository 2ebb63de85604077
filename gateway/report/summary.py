"""The shadow report: what the recorded pairs say about the candidate, and the cutover verdict.

`summarize` turns pair records into a `ShadowReport` (`gateway.report.values`): per backend
counts, errors and latency; paired latency deltas; agreement with Wilson 95% intervals; the
noise floor (the primary against itself); and the breakdowns of `gateway.report.details`. The
verdict is `evaluate` of a written `GateRule`. Pure functions: no clock, no I/O.

Example::

    report = summarize(await store.read(since), GateRule(min_pairs=200))
    report.verdict        # Verdict(passed=False, reasons=("FAIL pairs: 120 ...", ...))
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from gateway import stats
from gateway.gate_rule import GateRule, Verdict
from gateway.probes import ProbeResult
from gateway.report import details
from gateway.report.evidence import evidence
from gateway.report.gate import evaluate
from gateway.report.values import (
    Agreement,
    Backends,
    BackendStats,
    Curves,
    Deltas,
    Errors,
    NoiseFloor,
    PairCounts,
    ShadowReport,
    Window,
)
from gateway.shadow.compare import Comparison, Role, compare, failed, text_kept
from gateway.shadow.pairs import PairRecord

CDF_QUANTILES = (*range(0, 100, 5), 99, 100)
UNJUDGED = Verdict(passed=False)


def summarize(
    records: Sequence[PairRecord],
    gate: GateRule | None = None,
    since: str | None = None,
    probes: Sequence[ProbeResult] = (),
) -> ShadowReport:
    """The report, verdict included; `since` only says which records were asked for.

    The comparison is the latest shadow pair's (primary, candidate); pairs of other backends
    (an earlier configuration) are counted under `pairs.other` and left out.
    """
    rule = gate or GateRule()
    shadow, noise = _select(records)
    done = [compare(pair) for pair in shadow]
    draft = ShadowReport(
        since=since,
        primary=shadow[-1].primary.backend if shadow else None,
        candidate=shadow[-1].candidate.backend if shadow else None,
        window=_window(records),
        probes=tuple(probes),
        text_stored=all(text_kept(pair) for pair in shadow) if shadow else None,
        pairs=_pairs(len(records), shadow, noise, done),
        backends=_backends(shadow, done) if shadow else None,
        paired_delta_ms=_deltas(shadow, done),
        agreement=_agreement(done),
        confusion=details.confusions(shadow, done),
        noise_floor=_noise_floor([compare(pair) for pair in noise]),
        parity=details.parity(shadow, done),
        evidence=evidence(shadow, done),
        over_time=details.over_time(shadow, done),
        disagreements=details.disagreements(shadow, done),
        gate=rule,
        verdict=UNJUDGED,
    )
    # The verdict judges the report it is part of, so it comes once the rest is there.
    return replace(draft, verdict=evaluate(draft, rule))


def _select(records: Sequence[PairRecord]) -> tuple[list[PairRecord], list[PairRecord]]:
    """The shadow pairs of the latest (primary, candidate), oldest first, and the noise pairs
    of that primary."""
    shadow_all = sorted((r for r in records if r.kind == "shadow"), key=lambda r: r.created_at)
    if not shadow_all:
        return [], []
    latest = (shadow_all[-1].primary.backend, shadow_all[-1].candidate.backend)
    shadow = [r for r in shadow_all if (r.primary.backend, r.candidate.backend) == latest]
    noise = [r for r in records if r.kind == "noise" and r.primary.backend == latest[0]]
    return shadow, noise


def _window(records: Sequence[PairRecord]) -> Window | None:
    if not records:
        return None
    times = [record.created_at for record in records]
    return Window(details.iso(min(times)), details.iso(max(times)))


def _pairs(
    total: int,
    shadow: Sequence[PairRecord],
    noise: Sequence[PairRecord],
    done: Sequence[Comparison],
) -> PairCounts:
    errors = Counter(c.error for c in done if c.error is not None)
    primary_ok = sum(
        1 for pair in shadow if pair.primary.status == 200 and pair.primary.error is None
    )
    return PairCounts(
        records=total,
        shadow=len(shadow),
        noise=len(noise),
        other=total - len(shadow) - len(noise),
        errors=Errors(*(errors[f"{side} failed"] for side in ("primary", "candidate", "both"))),
        candidate_only_errors=stats.proportion(errors["candidate failed"], primary_ok),
        parity_flagged=sum(1 for c in done if c.status == "parity"),
        compared=sum(1 for c in done if c.status == "compared"),
    )


def _backends(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> Backends:
    return Backends(_backend("primary", shadow, done), _backend("candidate", shadow, done))


def _backend(role: Role, shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> BackendStats:
    legs = [pair.primary if role == "primary" else pair.candidate for pair in shadow]
    ok = [leg for leg in legs if not failed(leg)]
    checked = [c.primary_valid if role == "primary" else c.candidate_valid for c in done]
    judged = [valid for valid in checked if valid is not None]
    e2e = [leg.e2e_ms for leg in ok if leg.e2e_ms is not None]
    ttft = [leg.ttft_ms for leg in ok if leg.ttft_ms is not None]
    return BackendStats(
        name=legs[0].backend,
        count=len(legs),
        errors=stats.proportion(len(legs) - len(ok), len(legs)),
        schema_violations=stats.proportion(judged.count(False), len(judged)) if judged else None,
        e2e_ms=_latency(e2e),
        ttft_ms=_latency(ttft),
        cdf_ms=Curves(_cdf(e2e), _cdf(ttft)),
    )


def _latency(values: Sequence[float]) -> stats.Latency | None:
    return stats.latency(values) if values else None


def _cdf(values: Sequence[float]) -> tuple[tuple[float, float], ...]:
    """(milliseconds, share of answers at most that slow) at fixed quantiles, for a chart."""
    if not values:
        return ()
    return tuple((stats.percentile(values, q), q / 100) for q in CDF_QUANTILES)


def _deltas(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> Deltas:
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
    return Deltas(_latency(e2e), _latency(ttft))


def _agreement(done: Sequence[Comparison]) -> Agreement:
    """The three measures (`details.measures`) and each field of the JSON answers."""
    compared = [c for c in done if c.status == "compared"]
    names = sorted({name for c in compared for name in c.fields})
    fields = {
        name: stats.proportion(
            sum(1 for c in compared if c.fields.get(name)),
            sum(1 for c in compared if name in c.fields),
        )
        for name in names
    }
    found = details.measures(done)
    return Agreement(found.exact, found.normalised, found.structured, fields)


def _noise_floor(done: Sequence[Comparison]) -> NoiseFloor:
    return NoiseFloor(
        pairs=len(done),
        errors=sum(1 for c in done if c.status == "error"),
        parity_flagged=sum(1 for c in done if c.status == "parity"),
        compared=sum(1 for c in done if c.status == "compared"),
        agreement=_agreement(done),
    )
