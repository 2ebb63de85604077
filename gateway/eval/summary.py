"""What `gateway eval` reports, as typed values computed from its predictions by pure functions
(`gateway.stats`); `gateway.eval.render` prints them as text, JSON or HTML.

An invalid answer scores as the label `INVALID` in every field: it is wrong against gold, and
two targets that both fail agree.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import orjson

from gateway import stats
from gateway.eval.predictions import INVALID, Example, Prediction, Run, label_text
from gateway.render.json import omit
from gateway.stats import Confusion, Latency, Proportion
from gateway.tasks.task import Task


@dataclass(frozen=True, slots=True)
class FieldScore:
    accuracy: Proportion
    macro_f1: float | None  # None: no label occurs in gold or predictions
    f1: dict[str, float | None]  # per label, None for one that occurs nowhere
    confusion: Confusion  # rows gold, columns predicted (`INVALID` last)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Output tokens per answer, as the target's usage reported them."""

    mean: float
    min: int
    max: int
    histogram: dict[str, int]  # tokens -> answers


@dataclass(frozen=True, slots=True)
class TargetScore:
    name: str
    url: str
    mode: str  # "gateway" or "direct"
    model: str
    count: int
    errors: int  # predictions with an error (HTTP, invalid answer)
    schema_valid: Proportion
    exact: Proportion  # every field right
    fields: dict[str, FieldScore]
    output_tokens: Tokens | None  # None: no usage reported
    latency_ms: Latency = field(metadata=omit("n"))  # client side; its n is `count`


@dataclass(frozen=True, slots=True)
class PairAgreement:
    """How often two targets give the same labels, whatever gold says."""

    first: str
    second: str
    exact: Proportion
    fields: dict[str, Proportion]


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    gold: dict[str, str]
    predictions: dict[str, Prediction]  # by target; latency rounded to the microsecond


@dataclass(frozen=True, slots=True)
class EvalSummary:
    task: str
    version: str
    fingerprint: str  # of everything that decides the prompt (`Task.fingerprint`)
    dataset: str
    split: str
    concurrency: int
    created: str  # ISO 8601, whole seconds
    examples: int
    fields: dict[str, tuple[str, ...]]  # each field's labels, as text
    targets: tuple[TargetScore, ...]
    agreement: tuple[PairAgreement, ...]  # every pair of targets, in the order given
    rows: tuple[Row, ...]  # per example, so any number can be recomputed


def summarize(
    task: Task,
    examples: Sequence[Example],
    runs: Sequence[Run],
    *,
    dataset: str,
    split: str,
    concurrency: int,
    created: datetime,
) -> EvalSummary:
    """The whole report; `dataset`, `split` and `concurrency` say how the runs were made."""
    fields = {
        name: tuple(label_text(value) for value in values) for name, values in task.fields.items()
    }
    return EvalSummary(
        task=task.alias,
        version=task.version,
        fingerprint=task.fingerprint,
        dataset=dataset,
        split=split,
        concurrency=concurrency,
        created=created.isoformat(timespec="seconds"),
        examples=len(examples),
        fields=fields,
        targets=tuple(_target(run, examples, fields) for run in runs),
        agreement=tuple(_agreement(a, b, fields) for a, b in itertools.combinations(runs, 2)),
        rows=tuple(_row(index, example, runs) for index, example in enumerate(examples)),
    )


def _target(
    run: Run, examples: Sequence[Example], fields: dict[str, tuple[str, ...]]
) -> TargetScore:
    predictions = run.predictions
    exact = sum(1 for e, p in zip(examples, predictions, strict=True) if p.labels == e.gold)
    valid = sum(1 for prediction in predictions if prediction.labels is not None)
    tokens = [p.output_tokens for p in predictions if p.output_tokens is not None]
    return TargetScore(
        name=run.name,
        url=run.url,
        mode=run.mode,
        model=run.model,
        count=len(predictions),
        errors=sum(1 for prediction in predictions if prediction.error is not None),
        schema_valid=stats.proportion(valid, len(predictions)),
        exact=stats.proportion(exact, len(predictions)),
        fields={name: _score(name, labels, run, examples) for name, labels in fields.items()},
        output_tokens=_tokens(tokens),
        latency_ms=stats.latency([prediction.latency_ms for prediction in predictions]),
    )


def _score(name: str, labels: Sequence[str], run: Run, examples: Sequence[Example]) -> FieldScore:
    gold = [example.gold[name] for example in examples]
    guess = [prediction.label(name) for prediction in run.predictions]
    return FieldScore(
        accuracy=stats.accuracy(gold, guess),
        macro_f1=stats.macro_f1(gold, guess, labels),
        f1=stats.f1_scores(gold, guess, labels),
        confusion=stats.confusion(gold, guess, labels),
    )


def _agreement(first: Run, second: Run, fields: dict[str, tuple[str, ...]]) -> PairAgreement:
    def labels(run: Run) -> list[str]:
        sort = orjson.OPT_SORT_KEYS
        return [
            orjson.dumps(p.labels, option=sort).decode() if p.labels else INVALID
            for p in run.predictions
        ]

    per_field = {
        name: stats.agreement(
            [p.label(name) for p in first.predictions],
            [p.label(name) for p in second.predictions],
        )
        for name in fields
    }
    exact = stats.agreement(labels(first), labels(second))
    return PairAgreement(first.name, second.name, exact, per_field)


def _row(index: int, example: Example, runs: Sequence[Run]) -> Row:
    predictions = {run.name: _rounded(run.predictions[index]) for run in runs}
    return Row(example.id, example.gold, predictions)


def _rounded(prediction: Prediction) -> Prediction:
    """The timing to the microsecond: a row is for reading, and the summary has the exact
    percentiles."""
    return replace(prediction, latency_ms=round(prediction.latency_ms, 3))


def _tokens(tokens: list[int]) -> Tokens | None:
    if not tokens:
        return None
    counts = Counter(tokens)
    histogram = {str(count): counts[count] for count in sorted(counts)}
    return Tokens(statistics.fmean(tokens), min(tokens), max(tokens), histogram)
