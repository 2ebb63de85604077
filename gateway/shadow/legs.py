"""Reading a leg's answer (a JSON body or the SSE events of a stream) into a `Leg`: pure.

Used off the hot path, after the client has its answer, for both legs of a shadowed pair, so
both are read by the same code and timed by the same clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import orjson

from backends.base import TokenIds
from backends.sampling import Sampling
from gateway.shadow.evidence import prompt_digest
from gateway.shadow.pairs import Leg

Parser = Callable[[str], dict[str, Any] | None]


def from_body(
    backend: str,
    body: bytes,
    e2e_ms: float,
    parse: Parser | None = None,
    answer: dict[str, Any] | None = None,
) -> Leg:
    """A non-streamed OpenAI answer (`chat.completion` or `text_completion`); `answer` is the
    body already parsed, when the backend adapter parsed it (`Completion.answer`)."""
    try:
        if answer is None:
            answer = orjson.loads(body)
        choice = answer["choices"][0]
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        usage = answer.get("usage") or {}
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return Leg(backend, 502, None, e2e_ms=e2e_ms, error="unreadable answer")
    text = text if isinstance(text, str) else ""
    return Leg(
        backend=backend,
        status=200,
        text=text,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        e2e_ms=e2e_ms,
        parsed=(parse or parse_json)(text),
    )


def from_events(
    backend: str,
    chunks: Iterable[tuple[float, bytes]],
    started: float,
    ended: float,
    parse: Parser | None = None,
) -> Leg:
    """A streamed answer: chunks as (arrival time, bytes) as they were relayed."""
    parts: list[str] = []
    finish_reason = error = None
    first_content: float | None = None
    usage: dict[str, Any] = {}
    for arrived, chunk in chunks:
        for event in _events(chunk):
            if "error" in event:
                error = str((event.get("error") or {}).get("message", "stream error"))
                continue
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if text:
                    parts.append(text)
                    if first_content is None:
                        first_content = arrived
                finish_reason = choice.get("finish_reason") or finish_reason
    text = "".join(parts)
    return Leg(
        backend=backend,
        status=502 if error else 200,
        text=None if error else text,
        finish_reason=finish_reason,
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
        ttft_ms=None if first_content is None else (first_content - started) * 1000.0,
        e2e_ms=(ended - started) * 1000.0,
        error=error,
        parsed=None if error else (parse or parse_json)(text),
    )


def failed(backend: str, status: int, error: str, e2e_ms: float) -> Leg:
    return Leg(backend, status, None, e2e_ms=e2e_ms, error=error)


def with_evidence(
    leg: Leg, ids: TokenIds | None, sampling: Sampling, endpoint: str | None = None
) -> Leg:
    """The leg with what its engine ran: the sampling, a digest of the prompt ids it read and
    the ids it wrote, where the engine said (or was given them), and the endpoint of a replica
    pool that answered."""
    prompt = None if ids is None else ids.prompt
    output = None if ids is None or ids.output is None else tuple(ids.output)
    digest = prompt_digest(prompt)
    return replace(
        leg, sampling=sampling, prompt_digest=digest, output_ids=output, endpoint=endpoint
    )


def parse_json(text: str) -> dict[str, Any] | None:
    """The structured output of an answer whose text is a JSON object."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        value = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _events(chunk: bytes) -> list[dict[str, Any]]:
    events = []
    for line in chunk.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            event = orjson.loads(line[6:])
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
