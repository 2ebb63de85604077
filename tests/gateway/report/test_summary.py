"""The shadow report's numbers against a hand computation (see `shadow_pairs` for the data),
and each gate check passing and failing."""

from __future__ import annotations

import math
from dataclasses import astuple, replace
from typing import Any

import orjson
import pytest

from gateway.gate_rule import GateRule
from gateway.records.redaction import redact
from gateway.report.gate import evaluate
from gateway.report.render import render
from gateway.report.summary import summarize
from gateway.report.values import ShadowReport, Window
from gateway.shadow import compare
from gateway.stats import Confusion, Latency, Proportion
from tests.gateway.shadow_pairs import T0, records

# Passes every check on the fixture; each test below tightens one.
LOOSE = GateRule(
    min_pairs=14,
    min_noise_pairs=5,
    max_agreement_drop=0.1,
    max_p95_ratio=1.2,
    max_error_rate=0.12,
    max_schema_violations=0.06,
    max_parity_flagged=0.13,
)


@pytest.fixture(scope="module")
def summary() -> ShadowReport:
    return summarize(records(), LOOSE)


def share(p: Proportion | None) -> tuple[int, int, float, float, float] | None:
    return None if p is None else (p.successes, p.n, p.rate, p.low, p.high)


def spread(latency: Latency | None) -> tuple[Any, ...] | None:
    """(n, p50, p95, p99, mean), to compare with the numbers worked out by hand."""
    return None if latency is None else astuple(latency)


def about(successes: int, n: int, low: float, high: float) -> tuple[Any, ...]:
    """A proportion worked out by hand: the interval to four places."""
    rate = pytest.approx(successes / n)
    return (successes, n, rate, pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_pairs_are_split_by_kind_backend_and_outcome(summary: ShadowReport) -> None:
    assert (summary.primary, summary.candidate, summary.text_stored) == ("vllm", "trt", True)
    assert summary.window == Window("2023-11-14T21:50:00+00:00", "2023-11-14T23:03:00+00:00")
    pairs = summary.pairs
    assert (
        pairs.records,
        pairs.shadow,
        pairs.noise,
        pairs.other,
        pairs.compared,
        pairs.parity_flagged,
    ) == (26, 20, 5, 1, 14, 2)
    assert astuple(pairs.errors) == (1, 2, 1)  # primary, candidate, both
    # Wilson 95% for 2 of 18, worked out with the formula: centre 0.1795, margin 0.1485.
    assert share(pairs.candidate_only_errors) == about(2, 18, 0.0310, 0.3280)


def test_per_backend_counts_errors_schema_and_latency(summary: ShadowReport) -> None:
    assert summary.backends is not None
    first, second = summary.backends.primary, summary.backends.candidate
    assert (first.name, first.count, second.name, second.count) == ("vllm", 20, "trt", 20)
    assert first.errors.successes == 2
    assert second.errors.successes == 3
    assert first.schema_violations is not None
    assert (first.schema_violations.successes, first.schema_violations.n) == (0, 18)
    assert share(second.schema_violations) == about(1, 17, 0.0105, 0.2698)
    # Primary e2e over its 18 answers: eight at 100 plus 100..190; ranks interpolated.
    assert spread(first.e2e_ms) == pytest.approx((18, 105.0, 181.5, 188.3, 125.0))
    # Candidate over 17: 110, eight at 120, 130..200.
    assert spread(second.e2e_ms) == pytest.approx((17, 120.0, 192.0, 198.4, 2390 / 17))
    assert first.ttft_ms is not None
    assert second.ttft_ms is not None
    assert first.ttft_ms.p50 == pytest.approx(10.5)
    assert first.ttft_ms.p95 == pytest.approx(18.15)
    assert second.ttft_ms.p95 == pytest.approx(20.2)
    cdf = second.cdf_ms.e2e
    assert cdf[0] == (110.0, 0.0)
    assert cdf[-1] == (200.0, 1.0)
    assert cdf[10] == (120.0, 0.5)


def test_paired_deltas_take_both_legs_of_the_same_request(summary: ShadowReport) -> None:
    deltas = summary.paired_delta_ms
    # 16 pairs where both answered: ten at +10 ms (A), six at +20 ms (B, C).
    assert spread(deltas.e2e) == pytest.approx((16, 10.0, 20.0, 20.0, 13.75))
    assert spread(deltas.ttft) == pytest.approx((16, 2.0, 5.0, 5.0, 3.125))


def test_agreement_leaves_out_errors_and_parity_flagged_pairs(summary: ShadowReport) -> None:
    agreement = summary.agreement
    # 14 compared: A agrees (10), B disagrees (3) or differs in whitespace only (1).
    assert share(agreement.exact) == about(10, 14, 0.4535, 0.8828)
    assert share(agreement.normalised) == about(11, 14, 0.5241, 0.9243)
    assert agreement.structured.successes == 11
    assert list(agreement.fields) == ["mood"]
    assert share(agreement.fields["mood"]) == about(11, 14, 0.5241, 0.9243)
    assert summary.confusion == {
        "mood": Confusion(("happy", "sad"), ("happy", "sad"), ((10, 3), (0, 1)))
    }


def test_the_noise_floor_is_the_primary_against_itself(summary: ShadowReport) -> None:
    noise = summary.noise_floor
    assert (noise.pairs, noise.errors, noise.parity_flagged, noise.compared) == (5, 0, 0, 5)
    assert share(noise.agreement.exact) == about(4, 5, 0.3755, 0.9638)


def test_parity_flags_are_counted_by_reason(summary: ShadowReport) -> None:
    parity = summary.parity
    assert (parity.flagged.successes, parity.flagged.n) == (2, 16)
    assert parity.by_reason == {compare.MAX_TOKENS: 1, compare.RESPONSE_FORMAT: 1}
    assert [(e.pair_id, [f.detail for f in e.flags]) for e in parity.examples] == [
        ("c1", ["trt cut at 20 tokens, vllm wrote 30"]),
        ("c0", ["trt ignored response_format json_schema"]),
    ]


def test_agreement_over_time_in_round_buckets(summary: ShadowReport) -> None:
    over = summary.over_time
    assert over.bucket_seconds == 300  # 63 minutes: the first width giving at most 24
    rows = [
        (b.t, b.pairs, b.measures.exact.successes, b.measures.normalised.successes)
        for b in over.buckets
    ]
    assert rows == [(T0, 5, 5, 5), (T0 + 300, 5, 5, 5), (T0 + 3600, 4, 0, 1)]
    assert over.buckets[2].start == "2023-11-14T23:00:00+00:00"


def test_top_disagreements_side_by_side(summary: ShadowReport) -> None:
    found = summary.disagreements
    assert (found.total, found.note) == (4, None)
    assert [p.pair_id for p in found.shown] == ["b2", "b1", "b0", "b3"]
    first = found.shown[0]
    assert first.fields_differing == ("mood",)
    assert first.normalised_equal is False
    assert (first.primary.text, first.candidate.text) == ('{"mood": "happy"}', '{"mood": "sad"}')
    assert "story b2" in first.request


def test_hashes_mode_keeps_exact_agreement_and_says_why_no_text_is_shown() -> None:
    hashed = summarize([redact(record) for record in records()], LOOSE)
    assert hashed.text_stored is False
    assert (hashed.agreement.exact.successes, hashed.agreement.exact.n) == (10, 14)
    assert hashed.agreement.normalised.n == 0
    assert hashed.agreement.fields["mood"].successes == 11
    assert hashed.backends is not None
    violations = hashed.backends.candidate.schema_violations
    assert violations is not None
    assert violations.successes == 1
    found = hashed.disagreements
    assert (found.total, found.shown) == (4, ())
    assert found.note is not None
    assert "4 of 4 disagreeing pairs kept only hashes" in found.note


def test_the_json_carries_the_report_with_its_rule_and_verdict(summary: ShadowReport) -> None:
    data = orjson.loads(render(summary, "json"))
    assert data["report"] == "shadow"
    assert data["agreement"]["exact"]["successes"] == summary.agreement.exact.successes
    assert data["noise_floor"]["exact"]["n"] == summary.noise_floor.agreement.exact.n
    assert data["gate"]["min_pairs"] == 14
    assert data["verdict"] == {"passed": True, "reasons": list(summary.verdict.reasons)}


def test_the_loose_rule_passes_with_every_check_listed(summary: ShadowReport) -> None:
    verdict = evaluate(summary, LOOSE)
    assert verdict.passed
    assert [line.split(":")[0] for line in verdict.reasons] == [
        "PASS pairs",
        "PASS agreement (exact)",
        "PASS p95 e2e",
        "PASS p95 TTFT",
        "PASS errors",
        "PASS schema violations",
        "PASS parameter parity",
    ]
    assert verdict.reasons[1] == (
        "PASS agreement (exact): candidate 71.4% [45.4%, 88.3%] of 14 vs noise floor "
        "80.0% [37.6%, 96.4%] of 5: 8.6 points below it, comparing point estimates "
        "(at most 10.0 points below allowed)"
    )
    assert (
        verdict.reasons[2]
        == "PASS p95 e2e: candidate 192.0 ms vs primary 181.5 ms, ratio 1.06 (at most 1.20)"
    )


def test_latency_that_is_not_judged_is_shown_and_skipped(summary: ShadowReport) -> None:
    """`--max-p95-ratio off`: a candidate on other hardware (the demo's CPU stand-in)."""
    verdict = evaluate(summary, replace(LOOSE, max_p95_ratio=math.inf))
    assert verdict.passed
    assert [line for line in verdict.reasons if "p95" in line] == [
        "SKIP p95 e2e: not judged (--max-p95-ratio off): candidate 192.0 ms vs primary 181.5 ms",
        "SKIP p95 TTFT: not judged (--max-p95-ratio off): candidate 20.2 ms vs primary 18.1 ms",
    ]


def test_the_latency_check_covers_e2e_and_ttft(summary: ShadowReport) -> None:
    verdict = evaluate(summary, replace(LOOSE, max_p95_ratio=1.05))
    assert [line for line in verdict.reasons if line.startswith("FAIL")] == [
        "FAIL p95 e2e: candidate 192.0 ms vs primary 181.5 ms, ratio 1.06 (at most 1.05)",
        "FAIL p95 TTFT: candidate 20.2 ms vs primary 18.1 ms, ratio 1.11 (at most 1.05)",
    ]
    unstreamed = [
        replace(
            r,
            primary=replace(r.primary, ttft_ms=None),
            candidate=replace(r.candidate, ttft_ms=None),
            params=replace(r.params, stream=False),
        )
        for r in records()
    ]
    lines = summarize(unstreamed, LOOSE).verdict.reasons
    assert "SKIP p95 TTFT: not measured on both backends (not streamed)" in lines


@pytest.mark.parametrize(
    ("tighter", "failing"),
    [
        (
            {"min_pairs": 15},
            "pairs: 14 compared pairs with exact agreement (need 15), 5 noise-floor pairs (need 5)",
        ),
        (
            {"min_noise_pairs": 6},
            "pairs: 14 compared pairs with exact agreement (need 14), 5 noise-floor pairs (need 6)",
        ),
        ({"max_agreement_drop": 0.08}, "agreement (exact)"),
        (
            {"max_p95_ratio": 1.10},
            "p95 TTFT: candidate 20.2 ms vs primary 18.1 ms, ratio 1.11 (at most 1.10)",
        ),
        (
            {"max_error_rate": 0.11},
            "errors: candidate failed 11.1% [3.1%, 32.8%] of 18 requests the primary answered "
            "(at most 11.0%)",
        ),
        (
            {"max_schema_violations": 0.05},
            "schema violations: candidate 5.9% [1.0%, 27.0%] of 17 answers (at most 5.0%)",
        ),
        (
            {"max_parity_flagged": 0.12},
            "parameter parity: 12.5% [3.5%, 36.0%] of 16 answered pairs flagged",
        ),
    ],
)
def test_each_check_fails_alone(
    summary: ShadowReport, tighter: dict[str, Any], failing: str
) -> None:
    verdict = evaluate(summary, replace(LOOSE, **tighter))
    assert not verdict.passed
    failed = [line for line in verdict.reasons if line.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL " + failing)


def test_the_agreement_measure_is_configurable(summary: ShadowReport) -> None:
    # Normalised: 11/14 = 78.6% vs the noise floor's 80.0%: 1.4 points below.
    verdict = evaluate(summary, replace(LOOSE, agreement="normalised", max_agreement_drop=0.015))
    assert verdict.passed
    assert "1.4 points below it" in verdict.reasons[1]
    assert not evaluate(
        summary, replace(LOOSE, agreement="normalised", max_agreement_drop=0.01)
    ).passed


def test_a_candidate_agreeing_more_than_the_noise_floor_passes() -> None:
    better = [r for r in records() if r.pair_id not in {"b0", "b1", "b2"}]
    verdict = evaluate(
        summarize(better, LOOSE), replace(LOOSE, min_pairs=11, max_agreement_drop=0.0)
    )
    assert "candidate 90.9%" in verdict.reasons[1]
    assert "10.9 points above it" in verdict.reasons[1]
    assert verdict.reasons[1].startswith("PASS")


def test_no_records_fails_and_says_what_is_missing() -> None:
    empty = summarize([], GateRule())
    assert empty.primary is None
    assert empty.backends is None
    assert not empty.verdict.passed
    assert (
        "FAIL agreement (exact): no compared candidate pairs to judge by" in empty.verdict.reasons
    )
    assert (
        "FAIL p95 e2e: no successful answers on both backends to compare" in empty.verdict.reasons
    )
    noise_only = [r for r in records() if r.kind == "shadow"]
    lines = summarize(noise_only, replace(LOOSE, min_noise_pairs=1)).verdict.reasons
    assert "FAIL agreement (exact): no noise-floor pairs to judge by" in lines


def test_schema_check_is_skipped_without_structured_requests() -> None:
    plain = [
        replace(r, params=replace(r.params, schema=None, response_format=None)) for r in records()
    ]
    summary = summarize(plain, LOOSE)
    assert summary.backends is not None
    assert summary.backends.candidate.schema_violations is None
    assert (
        "SKIP schema violations: no request asked for structured output" in summary.verdict.reasons
    )


def test_the_text_report_leads_with_the_verdict(summary: ShadowReport) -> None:
    text = render(summary, "text")
    lines = text.splitlines()
    assert lines[0] == "Shadow report: trt (candidate) vs vllm (primary)"
    assert lines[3] == "VERDICT: PASS"
    assert (
        "exact                 71.4% [45.4%, 88.3%] 10/14              80.0% [37.6%, 96.4%] 4/5"
        in text
    )
    assert "happy       10      3" in text
    assert "-- b2 2023-11-14T23:02:00+00:00; fields differing: mood" in text


def test_pairs_whose_engines_read_other_prompt_tokens_are_flagged_not_compared() -> None:
    """A candidate whose tokenizer adds a BOS vLLM's chat does not: every pair flagged."""
    shadow = [r for r in records() if r.kind == "shadow" and r.candidate.status == 200]
    longer = [replace(r, candidate=replace(r.candidate, prompt_tokens=41)) for r in shadow]
    summary = summarize(longer, LOOSE)
    flagged = summary.parity.flagged
    assert flagged.successes == flagged.n > 10  # every answered pair
    assert summary.parity.by_reason[compare.PROMPT] == flagged.n
    assert summary.agreement.exact.n == 0
    assert "vllm read 40 prompt tokens, trt 41" in render(summary, "text")
    (parity,) = [r for r in summary.verdict.reasons if "parameter parity" in r]
    assert parity.startswith("FAIL")
    assert compare.PROMPT in parity
