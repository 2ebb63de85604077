"""Comparing the two legs of a pair: agreement, schema validity, parameter parity, errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from backends.sampling import OPENAI_DEFAULTS, resolve
from gateway.records.redaction import redact
from gateway.shadow import compare as c
from gateway.shadow.evidence import prompt_digest
from gateway.shadow.pairs import Leg, Params
from tests.gateway.shadow_pairs import (
    HAPPY,
    PARAMS,
    SAD,
    candidate,
    failed,
    pair,
    primary,
    records,
)

PLAIN = Params(stream=False, max_tokens=100)


def plain(first_text: str, second_text: str, **params: object) -> c.Comparison:
    first = primary(first_text, ttft_ms=None, parsed=None)
    second = candidate(second_text, ttft_ms=None, parsed=None)
    return c.compare(pair("x", 0.0, first, second, params=replace(PLAIN, **params)))  # type: ignore[arg-type]


def test_structured_output_is_the_parsed_value_or_the_text_read_as_json() -> None:
    assert c.structured(Leg("a", 200, "not json", parsed={"k": 1})) == {"k": 1}
    assert c.structured(Leg("a", 200, ' {"k": "v"} ')) == {"k": "v"}
    assert c.structured(Leg("a", 200, "[1, 2]")) is None
    assert c.structured(Leg("a", 200, "{broken")) is None
    assert c.structured(Leg("a", 500, None)) is None


def test_normalise_ignores_whitespace_runs_and_case() -> None:
    assert c.normalise("  Hello\n\tWorld  ") == "hello world"
    assert c.normalise("Straße") == c.normalise("STRASSE")


def test_labels_are_strings_and_compact_json() -> None:
    assert [c.label(v) for v in ("x", True, 3, None, 1.5)] == ["x", "true", "3", "null", "1.5"]
    assert c.label({"b": 1, "a": [2]}) == '{"a":[2],"b":1}'


def test_field_agreement_covers_the_keys_of_either_output() -> None:
    first = {"mood": "happy", "n": 1, "only_here": "x"}
    second = {"mood": "sad", "n": 1}
    assert c.field_agreement(first, second) == {"mood": False, "n": True, "only_here": False}


def test_a_failed_leg_is_an_error_not_a_disagreement() -> None:
    ok, bad = primary(), failed("trt", 503)
    assert c.compare(pair("x", 0, ok, bad)).error == "candidate failed"
    assert c.compare(pair("x", 0, failed("vllm", 500), candidate())).error == "primary failed"
    both = c.compare(pair("x", 0, failed("vllm", 500), failed("trt", 504)))
    assert (both.status, both.error, both.exact) == ("error", "both failed", None)
    # An error event inside a 200 stream is a failure too.
    broken = replace(candidate(), error="stream error")
    assert c.compare(pair("x", 0, ok, broken)).status == "error"


def test_agreement_exact_normalised_structured_and_per_field() -> None:
    same = c.compare(pair("x", 0, primary(HAPPY), candidate(HAPPY)))
    assert (same.status, same.exact, same.normalised, same.structured) == (
        "compared",
        True,
        True,
        True,
    )
    assert same.fields == {"mood": True}
    spaced = c.compare(pair("x", 0, primary(SAD), candidate('{"mood":   "sad"}\n')))
    assert (spaced.exact, spaced.normalised, spaced.structured) == (False, True, True)
    other = c.compare(pair("x", 0, primary(HAPPY), candidate(SAD)))
    assert (other.exact, other.normalised, other.structured, other.fields) == (
        False,
        False,
        False,
        {"mood": False},
    )
    text = plain("Hello  World", "hello world")
    assert (text.exact, text.normalised, text.structured, text.fields) == (False, True, None, {})


def test_schema_validity() -> None:
    assert c.schema_valid(pair("x", 0, primary(HAPPY), candidate()), "primary") is True
    off_enum = pair("x", 0, primary('{"mood": "angry"}'), candidate())
    assert c.schema_valid(off_enum, "primary") is False
    assert c.schema_valid(pair("x", 0, primary("mood: happy"), candidate()), "primary") is False
    assert c.schema_valid(pair("x", 0, failed("vllm", 500), candidate()), "primary") is None
    no_schema = pair("x", 0, primary("text"), candidate(), params=PLAIN)
    assert c.schema_valid(no_schema, "primary") is None
    json_object = replace(PLAIN, response_format="json_object")
    assert c.schema_valid(pair("x", 0, primary("{}"), candidate(), params=json_object), "primary")
    bad_schema = replace(PARAMS, schema={"type": 12})
    assert (
        c.schema_valid(pair("x", 0, primary(), candidate(), params=bad_schema), "primary") is None
    )


def test_a_validity_recorded_before_hashing_wins_and_hashes_mode_checks_json_only() -> None:
    recorded = replace(
        pair("x", 0, primary(HAPPY), candidate()), extra={"primary_schema_valid": False}
    )
    assert c.schema_valid(recorded, "primary") is False
    # Hashes mode keeps short labels only, so a schema's long fields may be gone: JSON is enough.
    long_field = primary('{"mood": "happy", "note": "' + "x" * 100 + '"}')
    strict = replace(PARAMS, schema={**PARAMS.schema, "required": ["mood", "note"]})  # type: ignore[dict-item]
    hashed = redact(pair("x", 0, long_field, candidate(), params=strict))
    assert hashed.primary.parsed == {"mood": "happy"}
    assert c.schema_valid(hashed, "primary") is True


def test_hashes_mode_counts_exact_agreement_on_digests_but_not_normalised() -> None:
    same = c.compare(redact(pair("x", 0, primary(HAPPY), candidate(HAPPY))))
    assert (same.exact, same.normalised, same.structured) == (True, None, True)
    spaced = c.compare(redact(pair("x", 0, primary(SAD), candidate('{"mood":  "sad"}'))))
    assert (spaced.exact, spaced.normalised, spaced.structured) == (False, None, True)


def reasons(comparison: c.Comparison) -> list[str]:
    return [flag.reason for flag in comparison.flags]


def test_a_dropped_response_format_is_flagged_and_not_compared() -> None:
    result = c.compare(pair("x", 0, primary(HAPPY), candidate("The mood is happy.")))
    assert (result.status, reasons(result)) == ("parity", [c.RESPONSE_FORMAT])
    assert result.flags[0].detail == "trt ignored response_format json_schema"
    assert (result.exact, result.structured, result.fields) == (None, None, {})
    assert (result.primary_valid, result.candidate_valid) == (True, False)
    # The primary breaking it while the candidate complies is a parity difference too.
    assert reasons(c.compare(pair("x", 0, primary("nope"), candidate(HAPPY)))) == [
        c.RESPONSE_FORMAT
    ]
    # Both breaking it is the same behaviour: compared, not flagged.
    both = c.compare(pair("x", 0, primary("nope"), candidate("no")))
    assert (both.status, both.candidate_valid, both.exact) == ("compared", False, False)


def test_json_object_not_honoured() -> None:
    json_object = replace(PLAIN, response_format="json_object")
    result = c.compare(
        pair(
            "x",
            0,
            primary("{}", ttft_ms=None),
            candidate("sure!", ttft_ms=None),
            params=json_object,
        )
    )
    assert result.flags == (c.Flag(c.RESPONSE_FORMAT, "trt ignored response_format json_object"),)


@pytest.mark.parametrize(
    ("first", "second", "detail"),
    [
        (
            {"completion_tokens": 30},
            {"finish_reason": "length", "completion_tokens": 20},
            "trt cut at 20 tokens, vllm wrote 30",
        ),
        (
            {"finish_reason": "length", "completion_tokens": 16},
            {"finish_reason": "length", "completion_tokens": 50},
            "vllm cut at 16 tokens, trt wrote 50",
        ),
        ({}, {"completion_tokens": 64}, "trt wrote 64 tokens, max_tokens 50"),
        (
            {},
            {"finish_reason": "length", "completion_tokens": 16},
            "trt cut at 16 tokens, max_tokens 50",
        ),
    ],
)
def test_a_different_effective_max_tokens_is_flagged(
    first: dict[str, Any], second: dict[str, Any], detail: str
) -> None:
    result = c.compare(pair("x", 0, primary(**first), candidate(**second)))
    assert result.status == "parity"
    assert result.flags == (c.Flag(c.MAX_TOKENS, detail),)


def test_the_same_max_tokens_on_both_legs_is_not_flagged() -> None:
    cut: dict[str, Any] = {"finish_reason": "length", "completion_tokens": 50}
    assert c.compare(pair("x", 0, primary(**cut), candidate(**cut))).status == "compared"
    unlimited = replace(PARAMS, max_tokens=None)
    longer = pair(
        "x", 0, primary(completion_tokens=9), candidate(completion_tokens=12), params=unlimited
    )
    assert c.compare(longer).status == "compared"


def test_a_stop_not_applied_is_flagged_unless_both_ignored_it() -> None:
    result = plain("Once upon a time", "Once upon a time\nTHE END", stop=("THE END",))
    assert result.flags == (c.Flag(c.STOP, "trt's answer contains the stop 'THE END'"),)
    assert plain("a THE END", "b THE END", stop=("THE END",)).status == "compared"
    assert plain("a", "b", stop=("THE END",)).status == "compared"


def test_a_leg_in_another_streaming_mode_is_flagged() -> None:
    unstreamed = c.compare(pair("x", 0, primary(), candidate(ttft_ms=None)))
    assert unstreamed.flags == (c.Flag(c.STREAM, "request streamed, trt answered otherwise"),)
    streamed = plain("a", "a")
    assert streamed.status == "compared"
    sneaky = c.compare(
        pair(
            "x",
            0,
            primary("a", ttft_ms=5.0, parsed=None),
            candidate("a", ttft_ms=None, parsed=None),
            params=PLAIN,
        )
    )
    assert sneaky.flags == (c.Flag(c.STREAM, "request not streamed, vllm answered otherwise"),)
    # An empty streamed answer has no first token: not a different mode, also once hashed.
    empty = pair(
        "x",
        0,
        primary("", ttft_ms=None, parsed=None),
        candidate("", parsed=None),
        params=replace(PLAIN, stream=True),
    )
    assert c.compare(empty).status == "compared"
    assert c.compare(redact(empty)).status == "compared"


def test_hashes_mode_cannot_see_stops_so_does_not_flag_them() -> None:
    stop = replace(PLAIN, stop=("END",))
    legs = primary("a", ttft_ms=None, parsed=None), candidate("a END", ttft_ms=None, parsed=None)
    assert c.compare(pair("x", 0, *legs, params=stop)).status == "parity"
    assert c.compare(redact(pair("x", 0, *legs, params=stop))).status == "compared"


def test_legs_that_read_different_prompt_tokens_are_flagged() -> None:
    """One engine's tokenizer added a BOS the other did not: not a quality difference."""
    result = c.compare(pair("x", 0, primary(prompt_tokens=40), candidate(prompt_tokens=41)))
    assert result.status == "parity"
    assert result.flags == (c.Flag(c.PROMPT, "vllm read 40 prompt tokens, trt 41"),)
    assert c.compare(pair("x", 0, primary(), candidate())).status == "compared"
    unknown = c.compare(pair("x", 0, primary(prompt_tokens=None), candidate(prompt_tokens=41)))
    assert unknown.status == "compared"  # a leg that reports no usage cannot be judged


def test_prompt_ids_that_differ_are_flagged_with_the_first_position() -> None:
    """The ids are known: they decide, whatever the counts say."""
    same: dict[str, Any] = {"prompt_digest": prompt_digest([1, 2, 3])}
    other: dict[str, Any] = {"prompt_digest": prompt_digest([1, 9, 3])}
    assert c.compare(pair("x", 0, primary(**same), candidate(**same))).status == "compared"
    flagged = replace(pair("x", 0, primary(**same), candidate(**other)), prompt_diff=1)
    result = c.compare(flagged)
    assert result.status == "parity"
    assert result.flags == (
        c.Flag(c.PROMPT, "vllm and trt read other prompt ids, first at token 1 (40 and 40 tokens)"),
    )


def test_sampling_that_differs_is_flagged_field_by_field() -> None:
    """vLLM applied the model's defaults; the candidate sampled with its own."""
    vllm = resolve({}, {"temperature": 0.6, "top_k": 20}, OPENAI_DEFAULTS)
    trt = resolve({}, {}, OPENAI_DEFAULTS)
    result = c.compare(pair("x", 0, primary(sampling=vllm), candidate(sampling=trt)))
    assert result.status == "parity"
    assert result.flags == (
        c.Flag(c.SAMPLING, "temperature: 0.6 vs 1.0; top_k: 20 vs 0 (vllm vs trt)"),
    )
    alike = c.compare(pair("x", 0, primary(sampling=vllm), candidate(sampling=vllm)))
    assert alike.status == "compared"
    unknown = c.compare(pair("x", 0, primary(sampling=vllm), candidate()))
    assert unknown.status == "compared"  # a leg recorded before sampling was: no verdict


def test_agrees_is_compare_exact_on_compared_pairs_and_none_elsewhere() -> None:
    stop = replace(PLAIN, stop=("END",))
    stopped = primary("a", ttft_ms=None, parsed=None), candidate("a END", ttft_ms=None, parsed=None)
    pairs = [
        *records(),
        pair("s", 0, *stopped, params=stop),
        pair("t", 0, primary(), candidate(ttft_ms=None)),
        pair("p", 0, primary(prompt_tokens=40), candidate(prompt_tokens=41)),
        pair("e", 0, primary(""), candidate(None, parsed=None)),
    ]
    pairs += [redact(p) for p in pairs]
    kinds = set()
    for one in pairs:
        full = c.compare(one)
        kinds.add((full.status, full.exact))
        assert c.agrees(one) == (full.exact if full.status == "compared" else None), one.pair_id
    # Every branch was taken: agreeing, disagreeing, unknown, a failed leg, a parity flag.
    compared = {("compared", True), ("compared", False), ("compared", None)}
    assert kinds == compared | {("error", None), ("parity", None)}
