"""The shadow report's numbers against a hand computation (see `shadow_pairs` for the data),
and each gate check passing and failing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from gateway.records.redaction import redact
from gateway.report.gate import GateRule, evaluate
from gateway.report.render import render
from gateway.report.summary import summarize
from gateway.shadow import compare
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
def summary() -> dict[str, Any]:
    return summarize(records(), LOOSE, {"since": None})


def share(successes: int, n: int, low: float, high: float) -> dict[str, Any]:
    return {
        "successes": successes,
        "n": n,
        "rate": pytest.approx(successes / n),
        "low": pytest.approx(low, abs=5e-5),
        "high": pytest.approx(high, abs=5e-5),
    }


def test_pairs_are_split_by_kind_backend_and_outcome(summary: dict[str, Any]) -> None:
    assert (summary["primary"], summary["candidate"], summary["text_stored"]) == (
        "vllm",
        "trt",
        True,
    )
    assert summary["window"] == {
        "start": "2023-11-14T21:50:00+00:00",
        "end": "2023-11-14T23:03:00+00:00",
    }
    pairs = summary["pairs"]
    assert {
        key: pairs[key]
        for key in ("records", "shadow", "noise", "other", "compared", "parity_flagged")
    } == {
        "records": 26,
        "shadow": 20,
        "noise": 5,
        "other": 1,
        "compared": 14,
        "parity_flagged": 2,
    }
    assert pairs["errors"] == {"primary": 1, "candidate": 2, "both": 1}
    # Wilson 95% for 2 of 18, worked out with the formula: centre 0.1795, margin 0.1485.
    assert pairs["candidate_only_errors"] == share(2, 18, 0.0310, 0.3280)


def test_per_backend_counts_errors_schema_and_latency(summary: dict[str, Any]) -> None:
    first, second = summary["backends"]["primary"], summary["backends"]["candidate"]
    assert (first["name"], first["count"], second["name"], second["count"]) == (
        "vllm",
        20,
        "trt",
        20,
    )
    assert first["errors"]["successes"] == 2
    assert second["errors"]["successes"] == 3
    assert first["schema_violations"]["successes"] == 0
    assert first["schema_violations"]["n"] == 18
    assert second["schema_violations"] == share(1, 17, 0.0105, 0.2698)
    # Primary e2e over its 18 answers: eight at 100 plus 100..190; ranks interpolated.
    assert first["e2e_ms"] == pytest.approx(
        {"n": 18, "p50": 105.0, "p95": 181.5, "p99": 188.3, "mean": 125.0}
    )
    # Candidate over 17: 110, eight at 120, 130..200.
    assert second["e2e_ms"] == pytest.approx(
        {"n": 17, "p50": 120.0, "p95": 192.0, "p99": 198.4, "mean": 2390 / 17}
    )
    assert first["ttft_ms"]["p50"] == pytest.approx(10.5)
    assert first["ttft_ms"]["p95"] == pytest.approx(18.15)
    assert second["ttft_ms"]["p95"] == pytest.approx(20.2)
    cdf = second["cdf_ms"]["e2e"]
    assert cdf[0] == [110.0, 0.0]
    assert cdf[-1] == [200.0, 1.0]
    assert cdf[10] == [120.0, 0.5]


def test_paired_deltas_take_both_legs_of_the_same_request(summary: dict[str, Any]) -> None:
    deltas = summary["paired_delta_ms"]
    # 16 pairs where both answered: ten at +10 ms (A), six at +20 ms (B, C).
    assert deltas["e2e"] == pytest.approx(
        {"n": 16, "p50": 10.0, "p95": 20.0, "p99": 20.0, "mean": 13.75}
    )
    assert deltas["ttft"] == pytest.approx(
        {"n": 16, "p50": 2.0, "p95": 5.0, "p99": 5.0, "mean": 3.125}
    )


def test_agreement_leaves_out_errors_and_parity_flagged_pairs(summary: dict[str, Any]) -> None:
    agreement = summary["agreement"]
    # 14 compared: A agrees (10), B disagrees (3) or differs in whitespace only (1).
    assert agreement["exact"] == share(10, 14, 0.4535, 0.8828)
    assert agreement["normalised"] == share(11, 14, 0.5241, 0.9243)
    assert agreement["structured"]["successes"] == 11
    assert agreement["fields"] == {"mood": share(11, 14, 0.5241, 0.9243)}
    assert summary["confusion"] == {
        "mood": {
            "labels": ["happy", "sad"],
            "predicted": ["happy", "sad"],
            "matrix": [[10, 3], [0, 1]],
        }
    }


def test_the_noise_floor_is_the_primary_against_itself(summary: dict[str, Any]) -> None:
    noise = summary["noise_floor"]
    assert (noise["pairs"], noise["errors"], noise["parity_flagged"], noise["compared"]) == (
        5,
        0,
        0,
        5,
    )
    assert noise["exact"] == share(4, 5, 0.3755, 0.9638)


def test_parity_flags_are_counted_by_reason(summary: dict[str, Any]) -> None:
    parity = summary["parity"]
    assert parity["flagged"]["successes"] == 2
    assert parity["flagged"]["n"] == 16
    assert parity["by_reason"] == {compare.MAX_TOKENS: 1, compare.RESPONSE_FORMAT: 1}
    assert [(e["pair_id"], [f["detail"] for f in e["flags"]]) for e in parity["examples"]] == [
        ("c1", ["trt cut at 20 tokens, vllm wrote 30"]),
        ("c0", ["trt ignored response_format json_schema"]),
    ]


def test_agreement_over_time_in_round_buckets(summary: dict[str, Any]) -> None:
    over = summary["over_time"]
    assert over["bucket_seconds"] == 300  # 63 minutes: the first width giving at most 24
    rows = [
        (b["t"], b["pairs"], b["exact"]["successes"], b["normalised"]["successes"])
        for b in over["buckets"]
    ]
    assert rows == [(T0, 5, 5, 5), (T0 + 300, 5, 5, 5), (T0 + 3600, 4, 0, 1)]
    assert over["buckets"][2]["start"] == "2023-11-14T23:00:00+00:00"


def test_top_disagreements_side_by_side(summary: dict[str, Any]) -> None:
    found = summary["disagreements"]
    assert (found["total"], found["note"]) == (4, None)
    assert [p["pair_id"] for p in found["shown"]] == ["b2", "b1", "b0", "b3"]
    first = found["shown"][0]
    assert first["fields_differing"] == ["mood"]
    assert first["normalised_equal"] is False
    assert (first["primary"]["text"], first["candidate"]["text"]) == (
        '{"mood": "happy"}',
        '{"mood": "sad"}',
    )
    assert "story b2" in first["request"]


def test_hashes_mode_keeps_exact_agreement_and_says_why_no_text_is_shown() -> None:
    hashed = summarize([redact(record) for record in records()], LOOSE)
    assert hashed["text_stored"] is False
    assert hashed["agreement"]["exact"]["successes"] == 10
    assert hashed["agreement"]["exact"]["n"] == 14
    assert hashed["agreement"]["normalised"]["n"] == 0
    assert hashed["agreement"]["fields"]["mood"]["successes"] == 11
    assert hashed["backends"]["candidate"]["schema_violations"]["successes"] == 1
    found = hashed["disagreements"]
    assert found["total"] == 4
    assert found["shown"] == []
    assert "4 of 4 disagreeing pairs kept only hashes" in found["note"]


def test_the_summary_is_json_and_carries_the_rule_and_verdict(summary: dict[str, Any]) -> None:
    assert orjson.loads(render(summary, "json")) == orjson.loads(orjson.dumps(summary))
    assert summary["gate"]["min_pairs"] == 14
    assert summary["verdict"]["passed"] is True


def test_the_loose_rule_passes_with_every_check_listed(summary: dict[str, Any]) -> None:
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


def test_the_latency_check_covers_e2e_and_ttft(summary: dict[str, Any]) -> None:
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
    lines = summarize(unstreamed, LOOSE)["verdict"]["reasons"]
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
    summary: dict[str, Any], tighter: dict[str, Any], failing: str
) -> None:
    verdict = evaluate(summary, replace(LOOSE, **tighter))
    assert not verdict.passed
    failed = [line for line in verdict.reasons if line.startswith("FAIL")]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL " + failing)


def test_the_agreement_measure_is_configurable(summary: dict[str, Any]) -> None:
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
    assert empty["primary"] is None
    assert empty["backends"] == {}
    assert not empty["verdict"]["passed"]
    assert (
        "FAIL agreement (exact): no compared candidate pairs to judge by"
        in empty["verdict"]["reasons"]
    )
    assert (
        "FAIL p95 e2e: no successful answers on both backends to compare"
        in empty["verdict"]["reasons"]
    )
    noise_only = [r for r in records() if r.kind == "shadow"]
    lines = summarize(noise_only, replace(LOOSE, min_noise_pairs=1))["verdict"]["reasons"]
    assert "FAIL agreement (exact): no noise-floor pairs to judge by" in lines


def test_schema_check_is_skipped_without_structured_requests() -> None:
    plain = [
        replace(r, params=replace(r.params, schema=None, response_format=None)) for r in records()
    ]
    summary = summarize(plain, LOOSE)
    assert summary["backends"]["candidate"]["schema_violations"] is None
    assert (
        "SKIP schema violations: no request asked for structured output"
        in summary["verdict"]["reasons"]
    )


def test_the_text_report_leads_with_the_verdict(summary: dict[str, Any]) -> None:
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
    flagged = summary["parity"]["flagged"]
    assert flagged["successes"] == flagged["n"] > 10  # every answered pair
    assert summary["parity"]["by_reason"][compare.PROMPT] == flagged["n"]
    assert summary["agreement"]["exact"]["n"] == 0
    assert "vllm read 40 prompt tokens, trt 41" in render(summary, "text")
    (parity,) = [r for r in summary["verdict"]["reasons"] if "parameter parity" in r]
    assert parity.startswith("FAIL")
    assert compare.PROMPT in parity
