"""gateway.shadow.evidence: where prompts and answers first differ."""

from __future__ import annotations

from gateway.shadow.evidence import divergence, first_difference, prompt_digest
from gateway.shadow.pairs import Divergence


def test_first_difference_of_ids_and_of_text() -> None:
    assert first_difference([1, 2, 3], [1, 2, 4]) == 2
    assert first_difference([1, 2], [1, 2, 5]) == 2  # one is the other's prefix
    assert first_difference([1, 2], [1, 2]) is None
    assert first_difference("Đúng rồi", "Đúng thế") == 5


def test_digests_tell_equal_prompts_from_others() -> None:
    assert prompt_digest([1, 23]) == prompt_digest((1, 23))
    assert prompt_digest([1, 23]) != prompt_digest([12, 3])
    assert prompt_digest(None) is None


def test_answers_part_by_token_when_both_ids_are_known() -> None:
    assert divergence([5, 6, 7], [5, 6, 9], "x", "y") == Divergence("token", 2, "7", "9")
    assert divergence([5, 6], [5, 6, 8], None, None) == Divergence("token", 2, "", "8")
    assert divergence([5, 6], [5, 6], "a", "b") is None  # same ids: the same answer


def test_answers_part_by_character_otherwise() -> None:
    assert divergence([5], None, "Đúng rồi!", "Đúng thế!") == Divergence("character", 5, "r", "t")
    assert divergence(None, None, "xin chào", "xin chào") is None
    assert divergence(None, None, None, "x") is None
