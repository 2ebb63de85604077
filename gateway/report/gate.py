"""The cutover gate: judges a shadow report by a written `GateRule`, PASS or FAIL, with reasons.

Every check is listed with its numbers, passed or failed, so a FAIL says what to fix and a
PASS says how close it was. Point estimates are compared; intervals are printed beside them.

Example::

    verdict = evaluate(report, GateRule(min_pairs=500, max_p95_ratio=1.0))
    verdict.passed, verdict.reasons[0]   # False, "FAIL pairs: 312 compared pairs ..."
"""

from __future__ import annotations

import math

from gateway.gate_rule import GateRule, Verdict
from gateway.render.text import interval, percent
from gateway.report.values import ShadowReport
from gateway.stats import Latency, Proportion


def evaluate(report: ShadowReport, rule: GateRule) -> Verdict:
    """Every check of the rule with its numbers; passed when none fails. The report's own
    verdict is not read."""
    checks = [
        _check_pairs(report, rule),
        _check_agreement(report, rule),
        *_check_latency(report, rule),
        _check_errors(report, rule),
        _check_schema(report, rule),
        _check_parity(report, rule),
    ]
    return Verdict(not any(line.startswith("FAIL") for line in checks), tuple(checks))


def _verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} {text}"


def _pct(p: Proportion) -> str:
    return f"{interval(p)} of {p.n}"


def _check_pairs(report: ShadowReport, rule: GateRule) -> str:
    n = report.agreement.of(rule.agreement).n
    noise = report.noise_floor.agreement.of(rule.agreement).n
    ok = n >= rule.min_pairs and noise >= rule.min_noise_pairs
    return _verdict(
        ok,
        f"pairs: {n} compared pairs with {rule.agreement} agreement (need {rule.min_pairs}), "
        f"{noise} noise-floor pairs (need {rule.min_noise_pairs})",
    )


def _check_agreement(report: ShadowReport, rule: GateRule) -> str:
    candidate = report.agreement.of(rule.agreement)
    noise = report.noise_floor.agreement.of(rule.agreement)
    if candidate.n == 0 or noise.n == 0:
        missing = "compared candidate pairs" if candidate.n == 0 else "noise-floor pairs"
        return _verdict(False, f"agreement ({rule.agreement}): no {missing} to judge by")
    drop = noise.rate - candidate.rate
    side = f"{abs(drop) * 100:.1f} points {'below' if drop > 0 else 'above'}"
    return _verdict(
        drop <= rule.max_agreement_drop,
        f"agreement ({rule.agreement}): candidate {_pct(candidate)} vs noise floor "
        f"{_pct(noise)}: {side} it, comparing point estimates "
        f"(at most {rule.max_agreement_drop * 100:.1f} points below allowed)",
    )


def _check_latency(report: ShadowReport, rule: GateRule) -> list[str]:
    backends = report.backends
    if backends is None or backends.primary.e2e_ms is None or backends.candidate.e2e_ms is None:
        return [_verdict(False, "p95 e2e: no successful answers on both backends to compare")]
    primary, candidate = backends.primary, backends.candidate
    measured: list[tuple[str, Latency | None, Latency | None]] = [
        ("e2e", primary.e2e_ms, candidate.e2e_ms),
        ("TTFT", primary.ttft_ms, candidate.ttft_ms),
    ]
    lines = []
    for name, first, second in measured:
        if first is None or second is None:
            lines.append(f"SKIP p95 {name}: not measured on both backends (not streamed)")
            continue
        ratio = second.p95 / first.p95 if first.p95 > 0 else math.inf
        if math.isinf(rule.max_p95_ratio):
            lines.append(
                f"SKIP p95 {name}: not judged (--max-p95-ratio off): candidate "
                f"{second.p95:.1f} ms vs primary {first.p95:.1f} ms"
            )
            continue
        lines.append(
            _verdict(
                ratio <= rule.max_p95_ratio,
                f"p95 {name}: candidate {second.p95:.1f} ms vs primary "
                f"{first.p95:.1f} ms, ratio {ratio:.2f} (at most {rule.max_p95_ratio:.2f})",
            )
        )
    return lines


def _check_errors(report: ShadowReport, rule: GateRule) -> str:
    errors = report.pairs.candidate_only_errors
    return _verdict(
        errors.rate <= rule.max_error_rate,
        f"errors: candidate failed {_pct(errors)} requests the primary answered "
        f"(at most {percent(rule.max_error_rate)})",
    )


def _check_schema(report: ShadowReport, rule: GateRule) -> str:
    violations = report.backends.candidate.schema_violations if report.backends else None
    if violations is None:
        return "SKIP schema violations: no request asked for structured output"
    return _verdict(
        violations.rate <= rule.max_schema_violations,
        f"schema violations: candidate {_pct(violations)} answers "
        f"(at most {percent(rule.max_schema_violations)})",
    )


def _check_parity(report: ShadowReport, rule: GateRule) -> str:
    flagged = report.parity.flagged
    reasons = ", ".join(f"{reason}: {n}" for reason, n in report.parity.by_reason.items())
    return _verdict(
        flagged.rate <= rule.max_parity_flagged,
        f"parameter parity: {_pct(flagged)} answered pairs flagged"
        f"{f' ({reasons})' if reasons else ''} (at most {percent(rule.max_parity_flagged)})",
    )
