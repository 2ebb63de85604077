"""The paired record of one shadowed request: both legs' answers, side by side.

Produced by the shadow leg (`gateway.shadow.leg`), stored by `gateway.records.store`, read by the
report (`gateway.report.summary`). Plain values (`value_class`: frozen to mypy), so every stage
tests without servers.

A pair's `kind` is `shadow` (primary vs candidate) or `noise` (primary vs the primary asked a
second time: how often the primary disagrees with itself).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import field
from typing import Any, Literal

from backends.sampling import Sampling
from backends.values import value_class

PairKind = Literal["shadow", "noise"]


@value_class
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
    # What the engine ran with, so the pair proves both legs ran the same request: the
    # sampling it applied, a digest of the prompt ids it read, and the ids it wrote (these only
    # where text is kept: ids are text).
    sampling: Sampling | None = None
    prompt_digest: str | None = None
    output_ids: tuple[int, ...] | None = None
    endpoint: str | None = None  # the endpoint of a replica pool that answered (host:port)


@value_class
class Divergence:
    """Where two answers first differ: by token when both legs' ids are known, else by
    character. `primary`/`candidate`: the differing token (its id) or character there, "" past
    an answer's end; None where text is not kept."""

    unit: Literal["token", "character"]
    index: int
    primary: str | None = None
    candidate: str | None = None


@value_class
class Params:
    """The decoding parameters the request asked for, for the parity check."""

    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    stop: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None  # response_format json_schema, or a task's schema
    response_format: str | None = None  # its type


@value_class
class PairRecord:
    """One sampled request and both of its answers."""

    pair_id: str
    created_at: float  # unix seconds
    kind: PairKind
    public_model: str
    path: str  # the OpenAI operation: /v1/chat/completions or /v1/completions
    request_hash: str  # sha256 of the request body: joins pairs, reveals nothing
    request: str | None  # the body itself, or None when only hashes are kept
    params: Params
    primary: Leg
    candidate: Leg
    prompt_version: str | None = None  # for task aliases
    extra: dict[str, Any] = field(default_factory=dict)
    route: str | None = None  # the route (model) that took the request; None: stored before
    prompt_diff: int | None = None  # the first position where the legs' prompt ids differ
    divergence: Divergence | None = None  # where the answers first differ, when they do


def new_pair_id() -> str:
    """A unique pair id, 32 hex digits: nanoseconds since the epoch, then 64 random bits.

    Time first, so a new row lands at the end of the stores' primary-key index instead of on a
    random page, a cheaper insert (benchmarks/README.md, optimisation log). `random`, not
    os.urandom, whose system call lets go of the GIL and so waits behind the records writer's
    thread.
    Worker processes reseed `random` after fork, so they do not repeat each other.
    """
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"


def sha256(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()
