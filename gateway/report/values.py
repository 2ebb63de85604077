"""The shadow report as typed values: what `summarize` found and the gate's verdict on it.

The JSON (`gateway.render.json`) prints the fields in the order declared here, with the shape
clients have read since the report was built as dicts: times are ISO 8601 strings (UTC, whole
seconds), latencies milliseconds, and every rate a `Proportion` with its Wilson 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.gate_rule import GateRule, Metric, Verdict
from gateway.probes import ProbeResult
from gateway.render.json import EMPTY, FLAT
from gateway.shadow.compare import Flag, Role
from gateway.shadow.pairs import Divergence
from gateway.stats import Confusion, Latency, Proportion


@dataclass(frozen=True, slots=True)
class Window:
    start: str  # the oldest record read
    end: str


@dataclass(frozen=True, slots=True)
class Errors:
    """Shadow pairs by which leg failed."""

    primary: int
    candidate: int
    both: int


@dataclass(frozen=True, slots=True)
class PairCounts:
    records: int  # every record read
    shadow: int  # shadow pairs of the latest (primary, candidate)
    noise: int  # noise pairs of that primary
    other: int  # pairs of other backends (an earlier configuration), left out
    errors: Errors
    candidate_only_errors: Proportion  # of the requests the primary answered
    parity_flagged: int
    compared: int


@dataclass(frozen=True, slots=True)
class Curves:
    """(ms, share of answers at most that slow) at fixed quantiles, for a chart."""

    e2e: tuple[tuple[float, float], ...]
    ttft: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class BackendStats:
    """One side of the shadow pairs; latencies of the answers only, not of the failures."""

    name: str
    count: int
    errors: Proportion
    schema_violations: Proportion | None  # None: no request asked for structured output
    e2e_ms: Latency | None
    ttft_ms: Latency | None  # None unless streamed
    cdf_ms: Curves


@dataclass(frozen=True, slots=True)
class Backends:
    primary: BackendStats
    candidate: BackendStats

    def roles(self) -> tuple[tuple[Role, BackendStats], ...]:
        return ("primary", self.primary), ("candidate", self.candidate)


@dataclass(frozen=True, slots=True)
class Deltas:
    """Candidate minus primary on the same request, where both answered."""

    e2e: Latency | None
    ttft: Latency | None


@dataclass(frozen=True, slots=True)
class Measures:
    """Agreement by each measure, over the pairs where it applies."""

    exact: Proportion
    normalised: Proportion  # equal but for whitespace and case
    structured: Proportion  # every top-level field of the JSON answers equal

    def of(self, metric: Metric) -> Proportion:
        """The measure a gate rule names."""
        if metric == "exact":
            return self.exact
        return self.normalised if metric == "normalised" else self.structured


@dataclass(frozen=True, slots=True)
class Agreement(Measures):
    fields: dict[str, Proportion]  # per field of the JSON answers


@dataclass(frozen=True, slots=True)
class NoiseFloor:
    """The primary against itself: how often it disagrees with its own second answer."""

    pairs: int
    errors: int
    parity_flagged: int
    compared: int
    agreement: Agreement = field(metadata=FLAT)


@dataclass(frozen=True, slots=True)
class ParityExample:
    pair_id: str
    created: str
    flags: tuple[Flag, ...]


@dataclass(frozen=True, slots=True)
class Parity:
    """Pairs where the candidate ran another request, left out of agreement."""

    flagged: Proportion  # of the pairs both legs answered
    by_reason: dict[str, int]  # most frequent first
    examples: tuple[ParityExample, ...]  # the newest


@dataclass(frozen=True, slots=True)
class Evidence:
    """What proves the legs ran the same request, over the shadow pairs both legs answered:
    each leg's effective sampling parameters and the prompt ids its engine read, where known;
    and, for the compared pairs whose answers differ, where they first part (a late first
    difference after identical tokens is drift, not a different request)."""

    answered: int
    sampling_known: int  # pairs with both legs' effective sampling recorded
    sampling_same: int
    prompts_known: int  # pairs with both legs' prompt ids known
    prompts_same: int
    latest: tuple[dict[str, object], dict[str, object]] | None  # the newest pair's sampling
    diverged_at_token: Latency | None  # first differing token, over pairs with both ids
    diverged_at_character: Latency | None  # the same by character, where no ids are known


@dataclass(frozen=True, slots=True)
class Bucket:
    start: str
    t: int  # `start` in Unix seconds, for a chart's axis
    pairs: int
    measures: Measures = field(metadata=FLAT)


@dataclass(frozen=True, slots=True)
class OverTime:
    bucket_seconds: int | None  # None: no compared pairs
    buckets: tuple[Bucket, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    backend: str
    text: str  # cut to `TEXT_LIMIT` characters
    finish_reason: str | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class Disagreement:
    pair_id: str
    created: str
    public_model: str
    request: str  # cut to `TEXT_LIMIT` characters
    fields_differing: tuple[str, ...]
    normalised_equal: bool | None
    primary: Answer
    candidate: Answer
    divergence: Divergence | None  # where the answers first part


@dataclass(frozen=True, slots=True)
class Disagreements:
    total: int
    note: str | None  # why some are not shown (only hashes were stored)
    shown: tuple[Disagreement, ...]


@dataclass(frozen=True, slots=True)
class ShadowReport:
    """Everything `gateway report` prints, the rule it was judged by and the verdict."""

    report: Literal["shadow"] = field(default="shadow", kw_only=True)
    since: str | None  # as asked for; None: every record
    primary: str | None  # None: no shadow pairs
    candidate: str | None
    window: Window | None  # None: no records
    # The latest conformance probe of each backend and check (`gateway.probes`): what each
    # engine honours, shown first.
    probes: tuple[ProbeResult, ...]
    text_stored: bool | None  # None: no shadow pairs
    pairs: PairCounts
    backends: Backends | None = field(metadata=EMPTY)  # None: no shadow pairs
    paired_delta_ms: Deltas
    agreement: Agreement
    confusion: dict[str, Confusion]  # rows primary, columns candidate, per categorical field
    noise_floor: NoiseFloor
    parity: Parity
    evidence: Evidence
    over_time: OverTime
    disagreements: Disagreements
    gate: GateRule
    verdict: Verdict
