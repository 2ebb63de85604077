"""Comparing the two legs of a pair: agreement, schema validity and parameter parity. Pure.

A pair is one of three things: an *error* (a leg failed: nothing to compare), *parity-flagged*
(the legs did not run the same request: a dropped `response_format`, another effective
`max_tokens`, a stop not applied, another streaming mode, other prompt ids, other effective
sampling parameters) or *compared*. Only compared pairs
count towards agreement, so a candidate that ignores a parameter shows up as that, with the
reason, and not as a quality difference.

Example::

    c = compare(pair)
    c.status, c.exact, c.fields      # "compared", False, {"mood": False, "topic": True}
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import field
from typing import Any, Literal

import jsonschema
import orjson
from referencing.exceptions import Unresolvable

from backends.values import value_class
from gateway.shadow.legs import parse_json
from gateway.shadow.pairs import Leg, PairRecord, Params, sha256

Status = Literal["compared", "error", "parity"]

# Parity reasons: stable names the report groups by; the flag's detail says what happened.
RESPONSE_FORMAT = "response_format not honoured"
MAX_TOKENS = "different effective max_tokens"
STOP = "stop not applied"
STREAM = "streaming mode differs"
PROMPT = "prompt tokens differ"
SAMPLING = "sampling parameters differ"

EMPTY_DIGEST = "sha256:" + sha256("")  # how hashes mode stores an empty answer
Role = Literal["primary", "candidate"]
MISSING = "(missing)"  # a field one leg's structured output does not have


@value_class
class Flag:
    reason: str  # one of the constants above
    detail: str


@value_class
class Comparison:
    """How the two legs of one pair compare. Agreement fields are None when not applicable:
    a leg failed, the text was not stored (hashes mode), or an answer is not a JSON object."""

    status: Status
    error: str | None = None  # "primary failed", "candidate failed", "both failed"
    flags: tuple[Flag, ...] = ()
    exact: bool | None = None
    normalised: bool | None = None
    structured: bool | None = None  # every top-level field equal
    fields: dict[str, bool] = field(default_factory=dict)
    primary_valid: bool | None = None  # schema validity; None when nothing was required
    candidate_valid: bool | None = None


def failed(leg: Leg) -> bool:
    return leg.status != 200 or leg.error is not None


def structured(leg: Leg) -> dict[str, Any] | None:
    """The leg's structured output: what the recorder parsed, else its text read as JSON."""
    if leg.parsed is not None:
        return leg.parsed
    return parse_json(leg.text) if leg.text is not None else None


def normalise(text: str) -> str:
    """Whitespace runs collapsed to one space, ends stripped, case folded."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def label(value: object) -> str:
    """A field value as a categorical label: strings as they are, the rest as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def field_labels(parsed: Mapping[str, Any], names: set[str]) -> dict[str, str]:
    return {name: label(parsed[name]) if name in parsed else MISSING for name in names}


def field_agreement(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, bool]:
    """Per top-level key (of either output): are the two values equal as labels?"""
    names = set(first) | set(second)
    a, b = field_labels(first, names), field_labels(second, names)
    return {name: a[name] == b[name] for name in sorted(names)}


def text_kept(pair: PairRecord) -> bool:
    """False for a pair stored in hashes mode (`GATEWAY_RECORDS_TEXT=hashes`): no request, each
    answer a `sha256:` digest, parsed outputs cut down to short labels."""
    return pair.request is not None


def schema_valid(pair: PairRecord, role: Role, *, text: bool | None = None) -> bool | None:
    """Does a successful leg's answer satisfy the requested structured output? None when the
    request asked for none, or its schema is itself invalid. A verdict recorded before the text
    was hashed (`extra["<role>_schema_valid"]`) wins; in hashes mode without one, only "is it a
    JSON object" can be judged, as the stored labels may lack the schema's free-text fields.
    `text=True`: the legs still hold the answers' own text, though the pair will be stored
    without it (`text_kept` is False): the shadow leg judges it then (`gateway.shadow.pairing`)."""
    leg = pair.primary if role == "primary" else pair.candidate
    params = pair.params
    if failed(leg) or (params.schema is None and params.response_format != "json_object"):
        return None
    recorded = pair.extra.get(f"{role}_schema_valid")
    if isinstance(recorded, bool):
        return recorded
    value = structured(leg)
    if value is None:
        return False
    if params.schema is None or not (text_kept(pair) if text is None else text):
        return True
    validator = _validator(orjson.dumps(params.schema, option=orjson.OPT_SORT_KEYS))
    if validator is None:
        return None
    try:
        return bool(validator.is_valid(value))
    except Unresolvable:  # a $ref to somewhere the schema does not define
        return None


@functools.lru_cache(maxsize=64)
def _validator(schema: bytes) -> Any:
    """A validator per distinct schema (checking a schema is costly; pairs repeat them)."""
    document = orjson.loads(schema)
    cls = jsonschema.validators.validator_for(document)
    try:
        cls.check_schema(document)
    except jsonschema.SchemaError:
        return None
    return cls(document)


def compare(pair: PairRecord) -> Comparison:
    primary, candidate = pair.primary, pair.candidate
    p_valid, c_valid = schema_valid(pair, "primary"), schema_valid(pair, "candidate")
    if failed(primary) or failed(candidate):
        which = {(True, True): "both", (True, False): "primary", (False, True): "candidate"}
        error = f"{which[failed(primary), failed(candidate)]} failed"
        return Comparison("error", error=error, primary_valid=p_valid, candidate_valid=c_valid)
    flags = parity_flags(pair, p_valid, c_valid)
    if flags:
        return Comparison("parity", flags=flags, primary_valid=p_valid, candidate_valid=c_valid)
    p_out, c_out = structured(primary), structured(candidate)
    fields = field_agreement(p_out, c_out) if p_out is not None and c_out is not None else {}
    texts = primary.text is not None and candidate.text is not None
    stored = texts and text_kept(pair)  # a digest cannot be normalised
    return Comparison(
        "compared",
        exact=primary.text == candidate.text if texts else None,
        normalised=normalise(primary.text or "") == normalise(candidate.text or "")
        if stored
        else None,
        structured=all(fields.values()) if p_out is not None and c_out is not None else None,
        fields=fields,
        primary_valid=p_valid,
        candidate_valid=c_valid,
    )


def agrees(pair: PairRecord) -> bool | None:
    """`compare(pair).exact` for a compared pair, else None: what the live agreement counter
    needs, without the field labels and normalised texts `compare` builds for the report. The
    shadow leg counts every pair this way, for less than `compare` costs (benchmarks/README.md,
    "Figures behind the code's choices")."""
    primary, candidate = pair.primary, pair.candidate
    if failed(primary) or failed(candidate):
        return None
    if parity_flags(pair, schema_valid(pair, "primary"), schema_valid(pair, "candidate")):
        return None
    if primary.text is None or candidate.text is None:
        return None
    return primary.text == candidate.text


def parity_flags(
    pair: PairRecord, primary_valid: bool | None, candidate_valid: bool | None
) -> tuple[Flag, ...]:
    """Every way the two legs did not run the same request, each with its reason."""
    legs = (pair.primary, pair.candidate)
    flags: list[Flag] = []
    if (
        primary_valid is not None
        and candidate_valid is not None
        and primary_valid != candidate_valid
    ):
        broke = pair.primary if not primary_valid else pair.candidate
        asked = "json_schema" if pair.params.schema is not None else pair.params.response_format
        flags.append(Flag(RESPONSE_FORMAT, f"{broke.backend} ignored response_format {asked}"))
    flags += _max_tokens_flags(legs, pair.params)
    if text_kept(pair):
        flags += _stop_flags(legs, pair.params.stop)
    streamed = [leg.ttft_ms is not None for leg in legs if _has_content(leg)]
    if len(streamed) == 2 and streamed[0] != streamed[1]:
        which = legs[0] if streamed[0] != pair.params.stream else legs[1]
        mode = "streamed" if pair.params.stream else "not streamed"
        flags.append(Flag(STREAM, f"request {mode}, {which.backend} answered otherwise"))
    flags += _prompt_flags(pair)
    primary, candidate = (leg.sampling for leg in legs)
    if primary is not None and candidate is not None:
        differs = primary.differences(candidate)
        if differs:
            names = f"{legs[0].backend} vs {legs[1].backend}"
            flags.append(Flag(SAMPLING, f"{'; '.join(differs)} ({names})"))
    return tuple(flags)


def _prompt_flags(pair: PairRecord) -> list[Flag]:
    """The engines did not read the same prompt: their ids differ (a template, or a BOS one
    tokenizer adds), or, where no ids are known, their counts."""
    legs = (pair.primary, pair.candidate)
    digests = [leg.prompt_digest for leg in legs]
    read = [leg.prompt_tokens for leg in legs]
    if digests[0] is not None and digests[1] is not None:
        if digests[0] == digests[1]:
            return []
        at = "" if pair.prompt_diff is None else f", first at token {pair.prompt_diff}"
        detail = f"{legs[0].backend} and {legs[1].backend} read other prompt ids{at}"
        return [Flag(PROMPT, f"{detail} ({read[0]} and {read[1]} tokens)")]
    if read[0] is not None and read[1] is not None and read[0] != read[1]:
        detail = f"{legs[0].backend} read {read[0]} prompt tokens, {legs[1].backend} {read[1]}"
        return [Flag(PROMPT, detail)]
    return []


def _has_content(leg: Leg) -> bool:
    """A non-empty answer (in hashes mode: not the digest of the empty text)."""
    return bool(leg.text) and leg.text != EMPTY_DIGEST


def _max_tokens_flags(legs: tuple[Leg, Leg], params: Params) -> list[Flag]:
    """A leg that wrote past the requested limit, or whose limit differed from the other's: it
    stopped at `length` with fewer tokens than the other leg used, or than the request allowed."""
    flags = []
    for leg, other in (legs, legs[::-1]):
        used = leg.completion_tokens
        if used is None:
            continue
        if params.max_tokens is not None and used > params.max_tokens:
            detail = f"{leg.backend} wrote {used} tokens, max_tokens {params.max_tokens}"
            flags.append(Flag(MAX_TOKENS, detail))
        elif leg.finish_reason == "length":
            limit, wrote = params.max_tokens, other.completion_tokens
            if wrote is not None and wrote > used:
                detail = f"{leg.backend} cut at {used} tokens, {other.backend} wrote {wrote}"
                flags.append(Flag(MAX_TOKENS, detail))
            elif limit is not None and used < limit:
                detail = f"{leg.backend} cut at {used} tokens, max_tokens {limit}"
                flags.append(Flag(MAX_TOKENS, detail))
    return flags


def _stop_flags(legs: tuple[Leg, Leg], stops: tuple[str, ...]) -> list[Flag]:
    flags = []
    for stop in stops:
        present = [stop in (leg.text or "") for leg in legs]
        if present[0] != present[1]:
            leg = legs[0] if present[0] else legs[1]
            flags.append(Flag(STOP, f"{leg.backend}'s answer contains the stop {stop!r}"))
    return flags
