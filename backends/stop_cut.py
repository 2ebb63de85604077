"""OpenAI `stop` applied by the gateway to answers relayed from an engine that matches stop
strings on token ids only (trtllm-serve: TensorRT-LLM's executor, `result.py`), as vLLM applies
them on the text. Pure.

Such an engine misses a stop the answer spells with other tokens than the stop's own encoding
(a stop starting inside a character's tokens), and its stream sends a stop's first tokens
before the last one matches. Here each choice's text is cut at the first stop; in a stream,
text that could begin a stop is held back until it cannot, and dropped when the engine says it
stopped on that string.

Example::

    cut_answer({"choices": [{"message": {"content": "Một hai ba"}}]}, ("hai",), Route.CHAT)
    # True; the content is now "Một ", its finish_reason "stop"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from backends.base import Route
from backends.text_stream import StopStrings

DONE = b"data: [DONE]\n\n"


def cut_answer(answer: dict[str, Any], stops: Sequence[str], route: Route) -> bool:
    """Cuts each choice of a whole answer at its first stop; True when one was cut."""
    changed = False
    for choice in answer.get("choices") or ():
        stopper = StopStrings(stops)
        text = stopper.feed(_text(choice, route) or "")
        if stopper.stopped:
            _set_text(choice, route, text)
            choice["finish_reason"] = "stop"
            changed = True
    return changed


class StreamCut:
    """The stops applied to a stream's events, event by event. `done`: every choice seen has
    ended, so nothing more of the engine's text can reach the client."""

    def __init__(self, stops: Sequence[str], route: Route) -> None:
        self._stops = tuple(stops)
        self._route = route
        self._choices: dict[int, StopStrings] = {}
        self._ended: set[int] = set()

    @property
    def done(self) -> bool:
        return bool(self._choices) and self._ended == set(self._choices)

    def events(self, data: bytes) -> bytes:
        """Whole SSE events in, the same events with their text cut out."""
        out = []
        for event in data.split(b"\n\n"):
            if not event.startswith(b"data: {"):
                out.append(event)
                continue
            rewritten = self._event(orjson.loads(event[6:]))
            if rewritten is not None:
                out.append(b"data: " + orjson.dumps(rewritten))
        return b"\n\n".join(out)

    def _event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """The event with its choices' text cut, or None when every choice in it had ended."""
        choices = event.get("choices")
        if not choices:  # the usage chunk, an error
            return event
        kept = [choice for choice in choices if self._choice(choice)]
        if not kept:
            return None
        event["choices"] = kept
        return event

    def _choice(self, choice: dict[str, Any]) -> bool:
        """Cuts one choice's text in place; False when the choice had already ended."""
        index = int(choice.get("index") or 0)
        if index in self._ended:
            return False
        stopper = self._choices.setdefault(index, StopStrings(self._stops))
        text = stopper.feed(_text(choice, self._route) or "")
        if stopper.stopped:
            choice["finish_reason"] = "stop"
        elif choice.get("finish_reason") is not None:
            # Held text the engine stopped on is the stop's start, not the answer's.
            stopped_on_it = choice.get("stop_reason") in self._stops
            text += "" if stopped_on_it else stopper.flush()
        else:
            _set_text(choice, self._route, text)
            return True
        _set_text(choice, self._route, text)
        self._ended.add(index)
        return True


def _text(choice: dict[str, Any], route: Route) -> str | None:
    if route is Route.COMPLETIONS:
        return choice.get("text")
    holder = choice.get("message") or choice.get("delta") or {}
    content = holder.get("content")
    return content if isinstance(content, str) else None


def _set_text(choice: dict[str, Any], route: Route, text: str) -> None:
    if route is Route.COMPLETIONS:
        choice["text"] = text
        return
    key = "message" if "message" in choice else "delta"
    holder = choice.get(key)
    if not isinstance(holder, dict):
        holder = choice[key] = {}
    if holder.get("content") is not None or text:
        holder["content"] = text
