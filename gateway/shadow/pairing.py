"""A shadowed request's two answers made into a `PairRecord`. Pure, so it tests without servers.

Example::

    params = params_of(payload)                           # when the request is sampled
    primary = primary_leg("vllm", outcome, stream=False)  # what the proxy handed over
    pair = pair_of("shadow", upstream, params, primary, candidate, None, keep_text=False)

The shadow leg (`gateway.shadow.leg`) calls these once both answers are in; the recorder
(`gateway.records.store`) stores what `pair_of` returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backends.arrivals import Arrivals
from backends.base import TokenIds, UpstreamRequest
from gateway.shadow import legs
from gateway.shadow.compare import Role, failed, schema_valid
from gateway.shadow.evidence import divergence, first_difference
from gateway.shadow.legs import Parser
from gateway.shadow.pairs import (
    Divergence,
    Leg,
    PairKind,
    PairRecord,
    Params,
    new_pair_id,
    sha256,
)

ROLES: tuple[Role, ...] = ("primary", "candidate")


@dataclass(slots=True)
class PrimaryOutcome:
    """What the client got, captured by the proxy as cheaply as possible (parsed later)."""

    status: int
    started: float
    ended: float = 0.0
    body: bytes | None = None
    answer: dict[str, Any] | None = None  # the body parsed (`Completion.answer`), if it was
    chunks: Arrivals = field(default_factory=Arrivals)
    error: str | None = None
    ids: TokenIds | None = None  # the token ids, where the primary's engine gave them
    endpoint: str | None = None  # the endpoint of a replica pool that answered, if one


def params_of(payload: Mapping[str, Any], task_schema: dict[str, Any] | None = None) -> Params:
    """The decoding parameters a request asked for, for the parity check; a task alias's
    request carries its task's output schema."""
    response_format = payload.get("response_format") or {}
    schema = task_schema
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    stop = payload.get("stop") or ()
    max_tokens = payload.get("max_completion_tokens") or payload.get("max_tokens")
    return Params(
        stream=bool(payload.get("stream")),
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        temperature=payload.get("temperature"),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        schema=schema if isinstance(schema, dict) else None,
        response_format=response_format.get("type"),
    )


def primary_leg(
    name: str, outcome: PrimaryOutcome, stream: bool, parse: Parser | None = None
) -> Leg:
    """The primary's answer, as the proxy handed it over, read as a leg."""
    e2e = (outcome.ended - outcome.started) * 1000.0
    if outcome.error is not None or outcome.status != 200:
        return legs.failed(name, outcome.status, outcome.error or "failed", e2e)
    if stream:
        return legs.from_events(name, outcome.chunks, outcome.started, outcome.ended, parse)
    return legs.from_body(name, outcome.body or b"", e2e, parse, outcome.answer)


def pair_of(
    kind: PairKind,
    upstream: UpstreamRequest,
    params: Params,
    primary: Leg,
    other: Leg,
    prompt_version: str | None,
    keep_text: bool,
    prompts: tuple[Sequence[int] | None, Sequence[int] | None] = (None, None),
    route: str | None = None,
) -> PairRecord:
    """The pair of one request's answers; a structured-output request's legs are judged
    against its schema now (`extra["<role>_schema_valid"]`), while their text exists: the
    hashes mode stores none to judge later. `prompts`: the prompt ids each leg's engine read,
    compared here and never stored."""
    both = prompts[0] is not None and prompts[1] is not None
    pair = PairRecord(
        pair_id=new_pair_id(),
        created_at=time.time(),
        kind=kind,
        public_model=upstream.public_model,
        path=upstream.route.path,
        route=route,
        request_hash=sha256(upstream.raw),
        request=upstream.raw.decode("utf-8", "replace") if keep_text else None,
        params=params,
        primary=primary,
        candidate=other,
        prompt_version=prompt_version,
        extra={},
        prompt_diff=first_difference(prompts[0] or (), prompts[1] or ()) if both else None,
        divergence=_divergence(primary, other),
    )
    if params.schema is not None or params.response_format == "json_object":
        # Into the record's own new dict, before anything else can see the record. The legs
        # still hold the answers' text (`text=True`), even when the pair goes without it.
        verdicts = {f"{role}_schema_valid": schema_valid(pair, role, text=True) for role in ROLES}
        pair.extra.update(verdicts)
    return pair


def _divergence(primary: Leg, other: Leg) -> Divergence | None:
    if failed(primary) or failed(other):
        return None
    return divergence(primary.output_ids, other.output_ids, primary.text, other.text)
