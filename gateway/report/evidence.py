"""The report's evidence that both legs ran the same request, from the recorded pairs. Pure."""

from __future__ import annotations

from collections.abc import Sequence

from gateway import stats
from gateway.report.values import Evidence
from gateway.shadow.compare import Comparison
from gateway.shadow.pairs import PairRecord


def evidence(shadow: Sequence[PairRecord], done: Sequence[Comparison]) -> Evidence:
    answered = [pair for pair, c in zip(shadow, done, strict=True) if c.status != "error"]
    sampled = [pair for pair in answered if _sampling_same(pair) is not None]
    prompted = [p for p in answered if p.primary.prompt_digest and p.candidate.prompt_digest]
    parted = [
        pair.divergence
        for pair, c in zip(shadow, done, strict=True)
        if c.status == "compared" and pair.divergence is not None
    ]
    by_token = [float(d.index) for d in parted if d.unit == "token"]
    by_character = [float(d.index) for d in parted if d.unit == "character"]
    latest = sampled[-1] if sampled else None
    return Evidence(
        answered=len(answered),
        sampling_known=len(sampled),
        sampling_same=sum(bool(_sampling_same(pair)) for pair in sampled),
        prompts_known=len(prompted),
        prompts_same=sum(p.primary.prompt_digest == p.candidate.prompt_digest for p in prompted),
        latest=None if latest is None else _both_samplings(latest),
        diverged_at_token=stats.latency(by_token) if by_token else None,
        diverged_at_character=stats.latency(by_character) if by_character else None,
    )


def _sampling_same(pair: PairRecord) -> bool | None:
    """Whether both legs sampled alike; None when a leg's sampling was not recorded."""
    first, second = pair.primary.sampling, pair.candidate.sampling
    if first is None or second is None:
        return None
    return not first.differences(second)


def _both_samplings(pair: PairRecord) -> tuple[dict[str, object], dict[str, object]] | None:
    first, second = pair.primary.sampling, pair.candidate.sampling
    if first is None or second is None:
        return None
    return first.as_dict(), second.as_dict()
