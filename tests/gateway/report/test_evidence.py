"""The report's evidence that both legs ran the same request, counted from the pairs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from backends.sampling import OPENAI_DEFAULTS, resolve
from gateway.report.render import render
from gateway.report.summary import summarize
from gateway.shadow.evidence import prompt_digest
from gateway.shadow.pairs import Divergence, PairRecord
from tests.gateway.report.test_summary import LOOSE
from tests.gateway.shadow_pairs import SAD, candidate, pair, primary

QWEN3 = resolve({}, {"temperature": 0.6, "top_p": 0.95, "top_k": 20}, OPENAI_DEFAULTS)
PLAIN = resolve({}, {}, OPENAI_DEFAULTS)
PROMPT = prompt_digest([1, 2, 3])


def proven(pair_id: str, at: float, **changes: object) -> PairRecord:
    legs: dict[str, Any] = {"sampling": QWEN3, "prompt_digest": PROMPT}
    record = pair(pair_id, at, primary(**legs), candidate(**legs))
    return replace(record, **changes)  # type: ignore[arg-type]


def test_the_evidence_counts_what_was_known_and_what_matched() -> None:
    other_sampling = replace(proven("b", 2), candidate=candidate(sampling=PLAIN))
    other_prompt = replace(
        proven("c", 3), candidate=candidate(sampling=QWEN3, prompt_digest=prompt_digest([9]))
    )
    unknown = pair("d", 4, primary(), candidate())  # recorded before the gateway kept these
    drifted = proven("e", 5, divergence=Divergence("token", 7, "11", "12"))
    drifted = replace(drifted, candidate=replace(drifted.candidate, text=SAD, parsed=None))
    records = [proven("a", 1), other_sampling, other_prompt, unknown, drifted]
    evidence = summarize(records, LOOSE).evidence
    assert evidence.answered == 5
    assert (evidence.sampling_known, evidence.sampling_same) == (4, 3)
    assert (evidence.prompts_known, evidence.prompts_same) == (3, 2)  # b: no candidate ids
    assert evidence.latest == (QWEN3.as_dict(), QWEN3.as_dict())  # the newest pair's
    assert evidence.diverged_at_token is not None
    assert (evidence.diverged_at_token.n, evidence.diverged_at_token.p50) == (1, 7.0)
    assert evidence.diverged_at_character is None


def test_the_text_and_html_say_it() -> None:
    drifted = proven("e", 5, divergence=Divergence("token", 7, "11", "12"))
    drifted = replace(drifted, candidate=replace(drifted.candidate, text=SAD, parsed=None))
    report = summarize([proven("a", 1), drifted], LOOSE)
    text = render(report, "text")
    assert "prompt ids: known on both legs for 2 of 2 answered pairs, identical in 2" in text
    assert "newest pair, candidate: temperature 0.6, top_p 0.95, top_k 20" in text
    assert "first differs at token 7: '11' vs '12'" in text
    assert "first differ at token 7 (median; p95 7; n 1)" in text
    assert "Same request on both legs" in render(report, "html")
