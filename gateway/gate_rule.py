"""The cutover gate's written rule and what it says: `GateRule` and `Verdict`.

`GateRule` holds the only copy of the gate's defaults: `Settings` (`GATEWAY_GATE_*`) and the
`gateway report` flags start from them. This module imports nothing of the gateway, so the
settings can read the defaults without importing the report.

Example::

    rule = GateRule(min_pairs=500, max_p95_ratio=1.0)
    verdict = evaluate(report, rule)          # gateway.report.gate
    verdict.passed, verdict.reasons[0]        # False, "FAIL pairs: 312 compared pairs ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


@dataclass(frozen=True, slots=True)
class Verdict:
    """PASS when no check fails; every check listed with its numbers, "PASS ...", "FAIL ..." or
    "SKIP ...", so a FAIL says what to fix and a PASS how close it was."""

    passed: bool
    reasons: tuple[str, ...] = ()
