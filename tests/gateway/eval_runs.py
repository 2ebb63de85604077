"""A small task and fixed predictions of three targets, for `gateway eval`'s summary and renderers.

Six examples of a two-field task (mood: happy, sad or calm; celebrate), no engine involved:

    gw      (gateway) five right, one invalid answer ("X", not a code)
    engine  (direct)  four right, one wrong mood, one HTTP 503 (no answer, no usage)
    plain   (gateway) all right, no usage reported (output_tokens None)

No gold label and no prediction is `calm`: its F1 is None and left out of macro-F1.
"""

from __future__ import annotations

from datetime import datetime

from gateway.eval.predictions import Example, Prediction, Run
from gateway.eval.summary import EvalSummary, summarize
from gateway.tasks.config import TaskConfig
from gateway.tasks.task import Task

CODES = {
    "M": {"mood": "happy", "celebrate": True},
    "H": {"mood": "happy", "celebrate": False},
    "S": {"mood": "sad", "celebrate": False},
    "C": {"mood": "calm", "celebrate": False},
}
GOLD = ["M", "H", "S", "S", "H", "M"]
CREATED = "2023-11-14T22:00:00+00:00"


def task() -> Task:
    schema = {
        "type": "object",
        "required": ["mood", "celebrate"],
        "additionalProperties": False,
        "properties": {
            "mood": {"type": "string", "enum": ["happy", "sad", "calm"]},
            "celebrate": {"type": "boolean"},
        },
    }
    return Task(
        TaskConfig.model_validate(
            {
                "alias": "moods",
                "version": "moods-v1",
                "prompt": {"system": "Answer with one code.", "exchange": "Child: {user}"},
                "decoding": {"temperature": 0.0, "max_tokens": 1},
                "output": {"codes": CODES, "schema": schema},
                "dataset": {"exchange": {"user": "child"}},
            }
        )
    )


def labels(code: str) -> dict[str, str]:
    return {name: str(value).lower() for name, value in CODES[code].items()}


def examples() -> list[Example]:
    return [
        Example(f"e{i}", {"messages": [{"role": "user", "content": f"story {i}"}]}, labels(code))
        for i, code in enumerate(GOLD)
    ]


def right(code: str, latency_ms: float, tokens: int | None = 1) -> Prediction:
    return Prediction(labels(code), code, tokens, latency_ms)


def runs() -> list[Run]:
    gw = [right(code, 40.0 + 3.3337 * i) for i, code in enumerate(GOLD)]
    gw[3] = Prediction(None, "X", 1, 52.5, "invalid answer 'X'")
    engine = [right(code, 20.0 + 1.5 * i, tokens=1 + i % 2) for i, code in enumerate(GOLD)]
    engine[1] = right("S", 23.25, tokens=2)
    engine[4] = Prediction.failed("HTTP 503: busy", 0.0051)
    plain = [right(code, 30.0 + i, tokens=None) for i, code in enumerate(GOLD)]
    return [
        Run("gw", "http://gw/v1", "gateway", "moods", gw),
        Run("engine", "http://engine/v1", "direct", "tiny", engine),
        Run("plain", "http://plain/v1", "gateway", "moods", plain),
    ]


def summary() -> EvalSummary:
    """The three runs summarised as `gateway eval` would, at `CREATED`."""
    return summarize(
        task(), examples(), runs(), dataset="moods.jsonl", split="test", concurrency=4,
        created=datetime.fromisoformat(CREATED),
    )  # fmt: skip
