"""What `gateway eval` reports, computed from its predictions by pure functions (`gateway.stats`).

An invalid answer (not a code, not schema-valid JSON, an HTTP error) scores as the label
`INVALID` in every field: it is wrong against gold, and two targets that both fail agree.
"""

from __future__ import annotations

import itertools
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway import stats
from gateway.tasks.config import Label
from gateway.tasks.task import Task

INVALID = "(invalid)"


def label_text(value: Label) -> str:
    """A label as the text statistics compare: booleans as JSON spells them."""
    return ("true" if value else "false") if isinstance(value, bool) else value


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    payload: dict[str, Any]  # the client's body without `model`: only the exchange
    gold: dict[str, str]


@dataclass(frozen=True, slots=True)
class Prediction:
    labels: dict[str, str] | None  # None: no valid answer
    answer: str | None  # the model's own text (the code), when known
    output_tokens: int | None
    latency_ms: float
    error: str | None = None

    @classmethod
    def failed(cls, error: str, seconds: float) -> Prediction:
        return cls(None, None, None, seconds * 1000.0, error)

    @classmethod
    def read(cls, task: Task, mode: str, completion: Any, seconds: float) -> Prediction:
        """Labels from a 200 answer: JSON content from a gateway, a code from an engine."""
        usage = completion.get("usage") or {}
        tokens = usage.get("completion_tokens")
        tokens = tokens if isinstance(tokens, int) else None
        content = _content(completion)
        raw = _content(completion.get("raw")) if mode == "gateway" else content
        labels = _from_json(task, content) if mode == "gateway" else _from_code(task, content)
        error = None if labels is not None else f"invalid answer {str(content)[:40]!r}"
        return cls(labels, raw, tokens, seconds * 1000.0, error)

    def label(self, field: str) -> str:
        return self.labels[field] if self.labels is not None else INVALID


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    url: str
    mode: str  # "gateway" or "direct"
    model: str
    predictions: list[Prediction]


def _content(completion: Any) -> str | None:
    try:
        content = completion["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _from_code(task: Task, text: str | None) -> dict[str, str] | None:
    labels = task.expand(text) if text is not None else None
    return {key: label_text(value) for key, value in labels.items()} if labels else None


def _from_json(task: Task, text: str | None) -> dict[str, str] | None:
    try:
        labels = orjson.loads(text) if text is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(labels, dict) or sorted(labels) != sorted(task.fields):
        return None
    for field, value in labels.items():
        allowed = task.fields[field]
        if type(value) is not type(allowed[0]) or value not in allowed:
            return None
    return {key: label_text(value) for key, value in labels.items()}


def summarize(
    task: Task, examples: Sequence[Example], runs: Sequence[Run], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """The whole report as plain data (what `--format json` prints)."""
    fields = {name: [label_text(value) for value in values] for name, values in task.fields.items()}
    return {
        "task": task.alias,
        "version": task.version,
        "fingerprint": task.fingerprint,
        **meta,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "examples": len(examples),
        "fields": fields,
        "targets": [_target(run, examples, fields) for run in runs],
        "agreement": [_agreement(a, b, fields) for a, b in itertools.combinations(runs, 2)],
        "rows": [_row(index, example, runs) for index, example in enumerate(examples)],
    }


def _target(run: Run, examples: Sequence[Example], fields: dict[str, list[str]]) -> dict[str, Any]:
    predictions = run.predictions
    per_field = {}
    for name, labels in fields.items():
        gold = [example.gold[name] for example in examples]
        guess = [prediction.label(name) for prediction in predictions]
        matrix = stats.confusion(gold, guess, labels)
        per_field[name] = {
            "accuracy": _proportion(stats.accuracy(gold, guess)),
            "macro_f1": stats.macro_f1(gold, guess, labels),
            "f1": stats.f1_scores(gold, guess, labels),
            "confusion": {
                "labels": list(matrix.labels),
                "predicted": list(matrix.predicted),
                "matrix": [list(row) for row in matrix.matrix],
            },
        }
    exact = sum(1 for e, p in zip(examples, predictions, strict=True) if p.labels == e.gold)
    valid = sum(1 for prediction in predictions if prediction.labels is not None)
    tokens = [p.output_tokens for p in predictions if p.output_tokens is not None]
    latencies = [prediction.latency_ms for prediction in predictions]
    return {
        "name": run.name,
        "url": run.url,
        "mode": run.mode,
        "model": run.model,
        "count": len(predictions),
        "errors": sum(1 for prediction in predictions if prediction.error is not None),
        "schema_valid": _proportion(stats.proportion(valid, len(predictions))),
        "exact": _proportion(stats.proportion(exact, len(predictions))),
        "fields": per_field,
        "output_tokens": _tokens(tokens),
        "latency_ms": {**stats.percentiles(latencies), "mean": statistics.fmean(latencies)},
    }


def _agreement(first: Run, second: Run, fields: dict[str, list[str]]) -> dict[str, Any]:
    def labels(run: Run) -> list[str]:
        sort = orjson.OPT_SORT_KEYS
        return [
            orjson.dumps(p.labels, option=sort).decode() if p.labels else INVALID
            for p in run.predictions
        ]

    per_field = {
        name: _proportion(
            stats.agreement(
                [p.label(name) for p in first.predictions],
                [p.label(name) for p in second.predictions],
            )
        )
        for name in fields
    }
    exact = _proportion(stats.agreement(labels(first), labels(second)))
    return {"first": first.name, "second": second.name, "exact": exact, "fields": per_field}


def _row(index: int, example: Example, runs: Sequence[Run]) -> dict[str, Any]:
    predictions = {}
    for run in runs:
        prediction = run.predictions[index]
        predictions[run.name] = {
            "labels": prediction.labels,
            "answer": prediction.answer,
            "output_tokens": prediction.output_tokens,
            "latency_ms": round(prediction.latency_ms, 3),
            "error": prediction.error,
        }
    return {"id": example.id, "gold": example.gold, "predictions": predictions}


def _proportion(value: stats.Proportion) -> dict[str, float | int]:
    return {
        "successes": value.successes,
        "n": value.n,
        "rate": value.rate,
        "low": value.low,
        "high": value.high,
    }


def _tokens(tokens: list[int]) -> dict[str, Any] | None:
    if not tokens:
        return None
    counts = Counter(tokens)
    return {
        "mean": statistics.fmean(tokens),
        "min": min(tokens),
        "max": max(tokens),
        "histogram": {str(count): counts[count] for count in sorted(counts)},
    }
