"""What proves two legs ran the same request, and where their answers part. Pure.

Prompt ids are compared position by position (never stored: a digest of them is); answers by
token when both legs' generated ids are known, else by character, so drift after an identical
prefix is told apart from a template or a parameter that differs.

Example::

    first_difference([1, 2, 3], [1, 2, 4])              # 2
    divergence(None, None, "Đúng rồi!", "Đúng thế!")    # Divergence("character", 5, "r", "t")
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.shadow.pairs import Divergence, sha256


def prompt_digest(ids: Sequence[int] | None) -> str | None:
    """`sha256:<hex>` of the ids: equal digests, equal prompts."""
    if ids is None:
        return None
    return "sha256:" + sha256(",".join(map(str, ids)))


def first_difference(first: Sequence[int] | str, second: Sequence[int] | str) -> int | None:
    """The first index where the sequences differ (the shorter one's length when one is a
    prefix of the other); None when they are equal."""
    for index, (a, b) in enumerate(zip(first, second, strict=False)):
        if a != b:
            return index
    return None if len(first) == len(second) else min(len(first), len(second))


def divergence(
    primary_ids: Sequence[int] | None,
    candidate_ids: Sequence[int] | None,
    primary_text: str | None,
    candidate_text: str | None,
) -> Divergence | None:
    """Where the answers first differ, or None when they do not (or nothing can tell)."""
    if primary_ids is not None and candidate_ids is not None:
        index = first_difference(primary_ids, candidate_ids)
        if index is None:
            return None
        return Divergence("token", index, _at(primary_ids, index), _at(candidate_ids, index))
    if primary_text is None or candidate_text is None:
        return None
    index = first_difference(primary_text, candidate_text)
    if index is None:
        return None
    return Divergence("character", index, primary_text[index : index + 1],
                      candidate_text[index : index + 1])  # fmt: skip


def _at(ids: Sequence[int], index: int) -> str:
    return str(ids[index]) if index < len(ids) else ""
