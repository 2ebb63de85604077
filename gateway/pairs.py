"""The paired record of one shadowed request: both legs' answers, side by side.

Produced by the shadow leg (`gateway.shadow`), stored by `gateway.records`, read by the report
(`gateway.shadow_report`). Plain frozen values, so every stage tests without servers.

A pair's `kind` is `shadow` (primary vs candidate) or `noise` (primary vs the primary asked a
second time: how often the primary disagrees with itself).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

PairKind = Literal["shadow", "noise"]


@dataclass(frozen=True, slots=True)
class Leg:
    """What one backend answered to the request."""

    backend: str
    status: int  # HTTP status the leg ended with (200, 4xx, 5xx; 499 if cut)
    text: str | None  # the answer's text; None when the leg failed
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None  # time to first content, streamed requests only
    e2e_ms: float | None = None
    error: str | None = None
    parsed: dict[str, Any] | None = None  # structured output, when the text is JSON


@dataclass(frozen=True, slots=True)
class Params:
    """The decoding parameters the request asked for, for the parity check."""

    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None  # response_format json_schema, or a task's schema
    response_format: str | None = None  # its type


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One sampled request and both of its answers."""

    pair_id: str
    created_at: float  # unix seconds
    kind: PairKind
    public_model: str
    route: str
    request_hash: str  # sha256 of the request body: joins pairs, reveals nothing
    request: str | None  # the body itself, or None when only hashes are kept
    params: Params
    primary: Leg
    candidate: Leg
    prompt_version: str | None = None  # for task aliases
    extra: dict[str, Any] = field(default_factory=dict)


def sha256(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()
