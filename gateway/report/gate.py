"""The cutover gate: a written rule that judges a shadow report PASS or FAIL, with reasons.

Every check is listed with its numbers, passed or failed, so a FAIL says what to fix and a
PASS says how close it was. Point estimates are compared; intervals are printed beside them.

Example::

    verdict = evaluate(summary, GateRule(min_pairs=500, max_p95_ratio=1.0))
    verdict.passed, verdict.reasons[0]   # False, "FAIL pairs: 312 compared pairs ..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gateway.settings import Settings

Metric = Literal["exact", "normalised", "structured"]
METRICS: tuple[Metric, ...] = ("exact", "normalised", "structured")


@dataclass(frozen=True, slots=True)
class GateRule:
    """When the candidate may take the primary's place. Point estimates are compared; the
    intervals are shown next to them so a reader sees how sure the verdict is."""

    min_pairs: int = 200  # compared pairs the agreement is measured on
    min_noise_pairs: int = 20  # primary-vs-primary pairs the noise floor is measured on
    agreement: Metric = "exact"
    max_agreement_drop: float = 0.02  # candidate agreement >= noise floor - this
    max_p95_ratio: float = 1.10  # candidate p95 (e2e, and TTFT when streamed) <= this x primary
    max_error_rate: float = 0.01  # candidate errors on requests the primary answered
    max_schema_violations: float = 0.01  # of the candidate's answers that had a schema to meet
    max_parity_flagged: float = 0.05  # pairs where the candidate ran a different request


def rule_from(settings: Settings) -> GateRule:
    """The rule as configured (`GATEWAY_GATE_*`)."""
    return GateRule(
        min_pairs=settings.gate_min_pairs,
        min_noise_pairs=settings.gate_min_noise_pairs,
        agreement=settings.gate_agreement,
        max_agreement_drop=settings.gate_max_agreement_drop,
        max_p95_ratio=settings.gate_max_p95_ratio,
        max_error_rate=settings.gate_max_error_rate,
        max_schema_violations=settings.gate_max_schema_violations,
        max_parity_flagged=settings.gate_max_parity_flagged,
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # every check, "PASS ...", "FAIL ..."


def evaluate(summary: Mapping[str, Any], rule: GateRule) -> Verdict:
    """Every check of the rule with its numbers; passed when none fails."""
    checks = [
        _check_pairs(summary, rule),
        _check_agreement(summary, rule),
        *_check_latency(summary, rule),
        _check_errors(summary, rule),
        _check_schema(summary, rule),
        _check_parity(summary, rule),
    ]
    return Verdict(not any(line.startswith("FAIL") for line in checks), checks)


def _verdict(ok: bool, text: str) -> str:
    return f"{'PASS' if ok else 'FAIL'} {text}"


def _pct(p: Mapping[str, Any]) -> str:
    return f"{p['rate']:.1%} [{p['low']:.1%}, {p['high']:.1%}] of {p['n']}"


def _check_pairs(summary: Mapping[str, Any], rule: GateRule) -> str:
    n = summary["agreement"][rule.agreement]["n"]
    noise = summary["noise_floor"][rule.agreement]["n"]
    ok = n >= rule.min_pairs and noise >= rule.min_noise_pairs
    return _verdict(
        ok,
        f"pairs: {n} compared pairs with {rule.agreement} agreement (need {rule.min_pairs}), "
        f"{noise} noise-floor pairs (need {rule.min_noise_pairs})",
    )


def _check_agreement(summary: Mapping[str, Any], rule: GateRule) -> str:
    candidate = summary["agreement"][rule.agreement]
    noise = summary["noise_floor"][rule.agreement]
    if candidate["n"] == 0 or noise["n"] == 0:
        missing = "compared candidate pairs" if candidate["n"] == 0 else "noise-floor pairs"
        return _verdict(False, f"agreement ({rule.agreement}): no {missing} to judge by")
    drop = noise["rate"] - candidate["rate"]
    side = f"{abs(drop) * 100:.1f} points {'below' if drop > 0 else 'above'}"
    return _verdict(
        drop <= rule.max_agreement_drop,
        f"agreement ({rule.agreement}): candidate {_pct(candidate)} vs noise floor "
        f"{_pct(noise)}: {side} it, comparing point estimates "
        f"(at most {rule.max_agreement_drop * 100:.1f} points below allowed)",
    )


def _check_latency(summary: Mapping[str, Any], rule: GateRule) -> list[str]:
    backends = summary["backends"]
    if (
        not backends
        or backends["primary"]["e2e_ms"] is None
        or backends["candidate"]["e2e_ms"] is None
    ):
        return [_verdict(False, "p95 e2e: no successful answers on both backends to compare")]
    lines = []
    for key, name in (("e2e_ms", "e2e"), ("ttft_ms", "TTFT")):
        primary, candidate = backends["primary"][key], backends["candidate"][key]
        if primary is None or candidate is None:
            lines.append(f"SKIP p95 {name}: not measured on both backends (not streamed)")
            continue
        ratio = candidate["p95"] / primary["p95"] if primary["p95"] > 0 else float("inf")
        lines.append(
            _verdict(
                ratio <= rule.max_p95_ratio,
                f"p95 {name}: candidate {candidate['p95']:.1f} ms vs primary "
                f"{primary['p95']:.1f} ms, ratio {ratio:.2f} (at most {rule.max_p95_ratio:.2f})",
            )
        )
    return lines


def _check_errors(summary: Mapping[str, Any], rule: GateRule) -> str:
    errors = summary["pairs"]["candidate_only_errors"]
    return _verdict(
        errors["rate"] <= rule.max_error_rate,
        f"errors: candidate failed {_pct(errors)} requests the primary answered "
        f"(at most {rule.max_error_rate:.1%})",
    )


def _check_schema(summary: Mapping[str, Any], rule: GateRule) -> str:
    backends = summary["backends"]
    violations = backends["candidate"]["schema_violations"] if backends else None
    if violations is None:
        return "SKIP schema violations: no request asked for structured output"
    return _verdict(
        violations["rate"] <= rule.max_schema_violations,
        f"schema violations: candidate {_pct(violations)} answers "
        f"(at most {rule.max_schema_violations:.1%})",
    )


def _check_parity(summary: Mapping[str, Any], rule: GateRule) -> str:
    flagged = summary["parity"]["flagged"]
    reasons = ", ".join(f"{reason}: {n}" for reason, n in summary["parity"]["by_reason"].items())
    return _verdict(
        flagged["rate"] <= rule.max_parity_flagged,
        f"parameter parity: {_pct(flagged)} answered pairs flagged"
        f"{f' ({reasons})' if reasons else ''} (at most {rule.max_parity_flagged:.1%})",
    )
