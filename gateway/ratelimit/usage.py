"""How many tokens an answer used, for tokens-per-minute limits: prompt plus completion, from
the `usage` the engine reports.

A non-streamed answer always carries usage. A stream carries it in its last event only when
the client asked (`stream_options.include_usage`); without it, the stream is charged an
estimate: one token per event that carries text (engines send a token or a few per event)
plus a quarter of the request body's bytes for the prompt (about four bytes a token in
English; Vietnamese text has fewer bytes a token, so it is undercounted). Ask for usage to be
charged exactly.

Example::

    completed(completion.answer, completion.body)   # 57
    streamed([b'data: {...}\\n\\n', ...], raw)       # its usage event's, else the estimate
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

BYTES_PER_PROMPT_TOKEN = 4


def used(answer: Mapping[str, Any] | None) -> int | None:
    """Prompt plus completion tokens of an OpenAI answer or chunk; None without usage."""
    usage = answer.get("usage") if answer is not None else None
    if not isinstance(usage, Mapping):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and total >= 0:
        return total
    parts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    return sum(part for part in parts if isinstance(part, int) and part >= 0)


def completed(answer: Mapping[str, Any] | None, body: bytes) -> int:
    """The tokens of a non-streamed answer: from its parsed form when the adapter kept it."""
    if answer is None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 0
        answer = parsed if isinstance(parsed, dict) else None
    return used(answer) or 0


def streamed(chunks: Sequence[bytes], request: bytes) -> int:
    """The tokens of a relayed stream: its usage event's, else the estimate above."""
    for chunk in reversed(chunks[-3:]):  # the usage event is just before [DONE]
        if b'"usage"' in chunk:
            for event in reversed(chunk.split(b"\n\n")):
                total = _usage_in(event)
                if total is not None:
                    return total
    events = sum(chunk.count(b'"content":"') + chunk.count(b'"text":"') for chunk in chunks)
    return events + len(request) // BYTES_PER_PROMPT_TOKEN


def _usage_in(event: bytes) -> int | None:
    data = event.strip().removeprefix(b"data:").strip()
    if not data.startswith(b"{") or b'"usage"' not in data:
        return None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return used(parsed) if isinstance(parsed, dict) else None
