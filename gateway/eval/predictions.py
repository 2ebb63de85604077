"""What `gateway eval` scores: the labelled examples, and each target's predictions of them.

A prediction is read from a 200 answer: JSON content from a gateway serving the task, a code
from an engine asked directly. An invalid answer (not a code, not schema-valid JSON, an HTTP
error) has no labels and scores as `INVALID` in every field (`gateway.eval.summary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

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
