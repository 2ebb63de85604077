"""The key a request sticks to an endpoint by, and each endpoint's rank for a key.

`user`: the request's OpenAI `user` field, so one user's turns reach the replica that holds
their conversation's cache. `prefix`: the first characters of the prompt (a chat's messages in
order, roles included), so requests sharing a system prompt or few-shot examples reach the
replica whose prefix cache already holds them. Requests without one are balanced as any other.

Ranks are rendezvous hashing: each endpoint scores every key, the highest score wins, so when
an endpoint joins or leaves only the keys it wins move. The hash is blake2b, the same in every
worker process (Python's `hash` is salted per process and would send a prefix to a different
replica from each worker).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

Affinity = Literal["none", "user", "prefix"]
MASK = (1 << 64) - 1


def key_of(payload: Mapping[str, Any], affinity: Affinity, prefix_chars: int) -> int | None:
    """The request's affinity key as 64 bits, or None: no key (balanced as any other)."""
    if affinity == "user":
        user = payload.get("user")
        return digest(user) if isinstance(user, str) and user else None
    if affinity == "prefix":
        prefix = prompt_prefix(payload, prefix_chars)
        return digest(prefix) if prefix else None
    return None


def prompt_prefix(payload: Mapping[str, Any], chars: int) -> str:
    """The first `chars` characters of the prompt as the engine will read it, in order."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            part = f"{message.get('role')}\x00{_text(message.get('content'))}\x00"
            parts.append(part)
            size += len(part)
            if size >= chars:
                break
        return "".join(parts)[:chars]
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and prompt:
        prompt = prompt[0] if isinstance(prompt[0], str | list) else prompt
    if isinstance(prompt, list):  # token ids
        return ",".join(map(str, prompt[:chars]))[:chars]
    return prompt[:chars] if isinstance(prompt, str) else ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: their text, in order
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def digest(text: str) -> int:
    raw = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(raw, "big")


def score(key: int, salt: int) -> int:
    """An endpoint's score for a key (`salt`: the digest of its name): splitmix64's finaliser
    of the two mixed, so every bit of both moves the result."""
    z = (key ^ salt) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)
