"""The `hashes` text mode: what of a pair may be stored when children's text must not be.

A request's body goes; each answer's text becomes its `sha256:<hex>` digest, so exact
agreement can still be counted (its token ids go, and what differs where the answers part); an error
becomes a fixed code of its HTTP status (an engine's message can quote the request); parsed answers
keep only labels, judged by the request's or the task's output schema. `gateway.records.store`
applies `redact` to every pair before storing it in that mode (`GATEWAY_RECORDS_TEXT=hashes`, the
default).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gateway.shadow.pairs import Divergence, Leg, PairRecord, sha256

LABEL_MAX_CHARS = 64
_HASH_PREFIX = "sha256:"
_MAX_SCHEMA_DEPTH = 8  # `$ref` chains and nested `anyOf`s followed, at most
# The codes of backends.errors by status, and the one for a client that hung up.
ERROR_CODES = {
    400: "invalid_request", 401: "invalid_api_key", 404: "not_found",
    413: "request_too_large", 429: "overloaded", 499: "client_closed", 500: "internal_error",
    502: "backend_protocol_error", 503: "backend_unavailable", 504: "backend_timeout",
}  # fmt: skip

Enums = Mapping[str, frozenset[str]]  # a schema's allowed strings, by top-level field


def redact(record: PairRecord) -> PairRecord:
    """The record as the `hashes` text mode stores it: no request, answer or error text.

    The request body goes (its `request_hash` stays); each leg's text becomes `sha256:<hex>`, so
    exact agreement can still be counted; a leg's error becomes a fixed code of its status
    (`error_code`), as an engine's message can quote the request; `parsed` and `extra` keep
    only labels (`labels`), judged by the request's or the task's schema. Idempotent.
    """
    enums = schema_enums(record.params.schema)
    digests: dict[str, str] = {}  # the legs often say the same: each text hashed once
    # Built directly, every field named: dataclasses.replace costs more, and this runs for every
    # stored pair, three records each (tests/gateway/records/test_store.py checks each field).
    return PairRecord(
        pair_id=record.pair_id,
        created_at=record.created_at,
        kind=record.kind,
        public_model=record.public_model,
        path=record.path,
        request_hash=record.request_hash,
        request=None,
        params=record.params,
        primary=_redact_leg(record.primary, enums, digests),
        candidate=_redact_leg(record.candidate, enums, digests),
        prompt_version=record.prompt_version,
        extra=labels(record.extra, enums, digests),
        route=record.route,
        prompt_diff=record.prompt_diff,
        divergence=_divergence(record.divergence),
    )


def _redact_leg(leg: Leg, enums: Enums | None, digests: dict[str, str]) -> Leg:
    text = leg.text
    if text is not None and not _is_hash(text):
        text = _digest(text, digests)
    parsed = None if leg.parsed is None else labels(leg.parsed, enums, digests)
    error = None if leg.error is None else error_code(leg.status)
    return Leg(
        backend=leg.backend,
        status=leg.status,
        text=text,
        finish_reason=leg.finish_reason,
        prompt_tokens=leg.prompt_tokens,
        completion_tokens=leg.completion_tokens,
        ttft_ms=leg.ttft_ms,
        e2e_ms=leg.e2e_ms,
        error=error,
        parsed=parsed,
        sampling=leg.sampling,
        prompt_digest=leg.prompt_digest,
        output_ids=None,  # token ids spell out the answer
        endpoint=leg.endpoint,
    )


def _divergence(found: Divergence | None) -> Divergence | None:
    """Where the answers part, without what they say there."""
    return None if found is None else Divergence(found.unit, found.index)


def _is_hash(text: str) -> bool:
    digest = text.removeprefix(_HASH_PREFIX)
    return len(text) == len(_HASH_PREFIX) + 64 and all(c in "0123456789abcdef" for c in digest)


def error_code(status: int) -> str:
    """A failed leg's error as the `hashes` mode stores it: a fixed code of its HTTP status."""
    if status in ERROR_CODES:
        return ERROR_CODES[status]
    return "upstream_rejected" if 400 <= status < 500 else "upstream_failed"


def _digest(text: str, digests: dict[str, str]) -> str:
    digest = digests.get(text)
    if digest is None:
        digest = digests[text] = _HASH_PREFIX + sha256(text)
    return digest


def labels(
    values: Mapping[str, Any], enums: Enums | None = None, digests: dict[str, str] | None = None
) -> dict[str, Any]:
    """The entries of `values` that are labels, not free text.

    Booleans and numbers stay. With a schema (`enums`, from `schema_enums`), a string stays
    only when it is one of its field's enum values; without one, a string of at most 64
    characters is kept as its `sha256:<hex>` digest (equal values still compare equal).
    Anything else (longer strings, lists, objects) goes.

    Example::

        labels({"mood": "happy", "why": "Toby ate it", "n": 2}, {"mood": frozenset({"happy"})})
        # {"mood": "happy", "n": 2}
    """
    kept: dict[str, Any] = {}
    memo = {} if digests is None else digests  # one per call: equal texts hash once
    for key, value in values.items():
        if isinstance(value, (bool, int, float)):  # a tuple: quicker than a union
            kept[key] = value
        elif not isinstance(value, str):
            continue
        elif enums is not None:
            if value in enums.get(key, ()):
                kept[key] = value
        elif _is_hash(value):
            kept[key] = value
        elif len(value) <= LABEL_MAX_CHARS:
            kept[key] = _digest(value, memo)
    return kept


def schema_enums(schema: Mapping[str, Any] | None) -> Enums | None:
    """The strings each top-level field of an object schema allows (`enum`, `const`, through
    local `$ref`s and `anyOf`/`oneOf`/`allOf`); None when there is no schema."""
    if schema is None:
        return None
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: frozenset(_choices(schema, node, 0)) for name, node in properties.items()}


def _choices(root: Mapping[str, Any], node: Any, depth: int) -> Iterator[str]:
    if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    enum = node.get("enum")
    for value in [*(enum if isinstance(enum, list) else ()), node.get("const")]:
        if isinstance(value, str):
            yield value
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield from _choices(root, _resolve(root, ref), depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = node.get(key)
        for branch in branches if isinstance(branches, list) else ():
            yield from _choices(root, branch, depth + 1)


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    """A local JSON pointer (`#/$defs/Mood`); None for anything else."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node
