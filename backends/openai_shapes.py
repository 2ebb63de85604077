"""OpenAI response bodies for adapters that build answers themselves (Triton).

The same shapes vLLM returns: `chat.completion`, `chat.completion.chunk`, `text_completion`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import orjson

from backends.base import Route, TokenIds


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class Shapes:
    """Builds the bodies of one answer, sharing its id, creation time and model name."""

    def __init__(self, route: Route, request_id: str, model: str) -> None:
        self.route = route
        chat = route is Route.CHAT
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self.created = int(time.time())
        self.model = model

    def completion(self, text: str, finish_reason: str, usage: Usage | None) -> bytes:
        if self.route is Route.CHAT:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            kind = "text_completion"
        body: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            body["usage"] = usage.to_dict()
        return orjson.dumps(body)

    def chunk(
        self, text: str | None, finish_reason: str | None = None, role: bool = False
    ) -> bytes:
        """One SSE event with a text delta (and the role, on a chat's first chunk)."""
        if self.route is Route.CHAT:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            kind = "chat.completion.chunk"
        else:
            choice = {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            kind = "text_completion"
        return self._event(kind, [choice])

    def usage_chunk(self, usage: Usage) -> bytes:
        kind = "chat.completion.chunk" if self.route is Route.CHAT else "text_completion"
        return self._event(kind, [], usage.to_dict())

    def _event(
        self, kind: str, choices: list[dict[str, Any]], usage: dict[str, int] | None = None
    ) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"


class Events:
    """An `EventStream` over events an adapter builds itself (`ids`: when the request asked)."""

    def __init__(
        self,
        events: AsyncGenerator[bytes, None],
        ids: TokenIds | None,
        endpoint: str | None = None,
    ) -> None:
        self._events = events
        self.ids = ids
        self.endpoint = endpoint

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._events

    async def aclose(self) -> None:
        await self._events.aclose()
