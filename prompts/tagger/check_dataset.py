#!/usr/bin/env python3
"""Validate the tagger dataset and print its composition as Markdown tables.

Usage:
    python prompts/tagger/check_dataset.py [path/to/dataset.jsonl]

Checks the schema of every line, unique ids, known moods/splits/tags, that contrastive pairs are
symmetric, in the same split and differ in at least one label, that every (mood, celebrate)
combination is one LABELS.md allows, and the minimum counts promised in DATASHEET.md. Problems
go to stderr and make the exit status 1; the tables go to stdout.
Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Class name -> one-letter code (see LABELS.md). Order is the display order.
MOODS: Final[dict[str, str]] = {
    "happy": "H",
    "encouraging": "E",
    "comforting": "C",
    "thinking": "T",
    "playful": "P",
    "neutral": "N",
}
# The (mood, celebrate) combinations LABELS.md allows, one tagger code each: only a result
# celebrates, and a result is `happy`, or `comforting` when Pika also soothes the child.
COMBINATIONS: Final[frozenset[tuple[str, bool]]] = frozenset(
    {(mood, False) for mood in MOODS} | {("happy", True), ("comforting", True)}
)
SPLITS: Final[tuple[str, ...]] = ("dev", "test")
TAGS: Final[frozenset[str]] = frozenset(
    {
        "first_try_correct", "retry_success", "wrong_answer", "almost_right", "partial",
        "intermediate_step", "small_detail", "lesson_complete", "claims_done", "disputes",
        "effort_praise", "result_praise",
        "sad_child", "anxious_child", "frustrated_child", "tired_child", "self_deprecation",
        "feeling_unaddressed", "positive_feeling",
        "rude", "teasing", "gives_up", "dont_know", "hint_request", "hint_refused",
        "greeting", "farewell", "thanks", "affection",
        "off_topic", "reported_achievement", "occasion", "joke", "game",
        "curiosity_question", "explanation", "next_task", "instruction", "clarification",
        "math", "spelling", "reading", "english", "science",
        "no_diacritics", "teen_code",
    }
)  # fmt: skip
# Hard cases that must be represented in both splits.
TAGS_IN_BOTH_SPLITS: Final[tuple[str, ...]] = (
    "retry_success", "almost_right", "wrong_answer", "small_detail", "intermediate_step",
    "effort_praise", "result_praise", "sad_child", "anxious_child", "self_deprecation",
    "off_topic", "reported_achievement", "greeting", "hint_request", "rude", "gives_up",
)  # fmt: skip
KEYS: Final[frozenset[str]] = frozenset(
    {"id", "child", "pika", "mood", "celebrate", "split", "pair", "tags"}
)
ID_RE: Final[re.Pattern[str]] = re.compile(r"t\d{4}")
ESCAPE_RE: Final[re.Pattern[str]] = re.compile(r"\\u[0-9a-fA-F]{4}")

MIN_TOTAL: Final = 330
MIN_PER_MOOD: Final = 30
MIN_PER_COMBINATION: Final = 20
MIN_CELEBRATE_TRUE: Final = 90
MIN_CELEBRATE_FALSE: Final = 90
MIN_PAIRS: Final = 60
TEST_SHARE: Final = (0.20, 0.30)


@dataclass(frozen=True)
class Example:
    id: str
    child: str
    pika: str
    mood: str
    celebrate: bool
    split: str
    pair: str | None
    tags: tuple[str, ...]


def _text(obj: dict[str, object], key: str, where: str, problems: list[str]) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: '{key}' must be a non-empty string")
        return None
    if value != value.strip():
        problems.append(f"{where}: '{key}' has leading or trailing whitespace")
    return value


def parse_line(lineno: int, line: str, problems: list[str]) -> Example | None:
    """Parse one JSONL line, appending every schema problem found to ``problems``."""
    where = f"line {lineno}"
    if ESCAPE_RE.search(line):
        problems.append(f"{where}: contains \\u escapes; write UTF-8 text (ensure_ascii=False)")
    try:
        raw: object = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(f"{where}: invalid JSON ({exc.msg})")
        return None
    if not isinstance(raw, dict):
        problems.append(f"{where}: not a JSON object")
        return None
    obj: dict[str, object] = raw
    if set(obj) != KEYS:
        missing = sorted(KEYS - set(obj))
        extra = sorted(set(obj) - KEYS)
        problems.append(f"{where}: wrong keys (missing {missing}, unexpected {extra})")
        return None

    n = len(problems)
    ex_id = _text(obj, "id", where, problems)
    if ex_id is not None:
        where = f"line {lineno} ({ex_id})"
        if not ID_RE.fullmatch(ex_id):
            problems.append(f"{where}: id must look like t0001")
    child = _text(obj, "child", where, problems)
    pika = _text(obj, "pika", where, problems)
    mood = obj["mood"]
    if mood not in MOODS:
        problems.append(f"{where}: unknown mood {mood!r}")
    celebrate = obj["celebrate"]
    if not isinstance(celebrate, bool):
        problems.append(f"{where}: 'celebrate' must be true or false")
    split = obj["split"]
    if split not in SPLITS:
        problems.append(f"{where}: unknown split {split!r}")
    pair = obj["pair"]
    if pair is not None and not isinstance(pair, str):
        problems.append(f"{where}: 'pair' must be an id or null")
    tags = obj["tags"]
    tag_list: list[str] = []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(f"{where}: 'tags' must be a list of strings")
    else:
        tag_list = [str(t) for t in tags]
        unknown = sorted(set(tag_list) - TAGS)
        if unknown:
            problems.append(f"{where}: unknown tags {unknown}")
        if len(set(tag_list)) != len(tag_list):
            problems.append(f"{where}: duplicate tags")
    if (
        len(problems) > n
        or ex_id is None
        or child is None
        or pika is None
        or not isinstance(mood, str)
        or not isinstance(celebrate, bool)
        or not isinstance(split, str)
        or not (pair is None or isinstance(pair, str))
    ):
        return None
    return Example(ex_id, child, pika, mood, celebrate, split, pair, tuple(tag_list))


def check(examples: Sequence[Example], problems: list[str]) -> None:
    """Cross-line checks: ids, duplicates, pairs, coverage and minimum counts."""
    by_id: dict[str, Example] = {}
    seen_text: dict[tuple[str, str], str] = {}
    for ex in examples:
        if ex.id in by_id:
            problems.append(f"{ex.id}: duplicate id")
        by_id[ex.id] = ex
        key = (ex.child, ex.pika)
        if key in seen_text:
            problems.append(f"{ex.id}: same child+pika text as {seen_text[key]}")
        seen_text.setdefault(key, ex.id)

    for ex in examples:
        if ex.pair is None:
            continue
        other = by_id.get(ex.pair)
        if other is None:
            problems.append(f"{ex.id}: pair {ex.pair} does not exist")
        elif other.id == ex.id:
            problems.append(f"{ex.id}: paired with itself")
        elif other.pair != ex.id:
            problems.append(
                f"{ex.id}: pair {other.id} does not point back (it points to {other.pair})"
            )
        elif other.split != ex.split:
            problems.append(f"{ex.id}: pair {other.id} is in another split")
        elif (other.mood, other.celebrate) == (ex.mood, ex.celebrate):
            problems.append(f"{ex.id}: pair {other.id} has the same labels")

    total = len(examples)
    if total < MIN_TOTAL:
        problems.append(f"only {total} examples (minimum {MIN_TOTAL})")
    moods = Counter(ex.mood for ex in examples)
    for mood in MOODS:
        if moods[mood] < MIN_PER_MOOD:
            problems.append(f"mood {mood}: {moods[mood]} examples (minimum {MIN_PER_MOOD})")
    combinations = Counter((ex.mood, ex.celebrate) for ex in examples)
    for mood, flag in sorted(set(combinations) - COMBINATIONS):
        problems.append(
            f"{mood} with celebrate={str(flag).lower()} is not a label LABELS.md allows"
        )
    for mood, flag in sorted(COMBINATIONS):
        if combinations[(mood, flag)] < MIN_PER_COMBINATION:
            problems.append(
                f"{mood} with celebrate={str(flag).lower()}: {combinations[(mood, flag)]} "
                f"examples (minimum {MIN_PER_COMBINATION})"
            )
    n_true = sum(ex.celebrate for ex in examples)
    if n_true < MIN_CELEBRATE_TRUE:
        problems.append(f"celebrate=true: {n_true} (minimum {MIN_CELEBRATE_TRUE})")
    if total - n_true < MIN_CELEBRATE_FALSE:
        problems.append(f"celebrate=false: {total - n_true} (minimum {MIN_CELEBRATE_FALSE})")
    n_pairs = sum(ex.pair is not None for ex in examples) // 2
    if n_pairs < MIN_PAIRS:
        problems.append(f"only {n_pairs} contrastive pairs (minimum {MIN_PAIRS})")

    n_test = sum(ex.split == "test" for ex in examples)
    if total and not TEST_SHARE[0] <= n_test / total <= TEST_SHARE[1]:
        problems.append(f"test share {n_test / total:.1%} outside {TEST_SHARE}")
    for split in SPLITS:
        part = [ex for ex in examples if ex.split == split]
        for mood in MOODS:
            if not any(ex.mood == mood for ex in part):
                problems.append(f"split {split}: no {mood} example")
        for flag in (True, False):
            if not any(ex.celebrate is flag for ex in part):
                problems.append(f"split {split}: no celebrate={str(flag).lower()} example")
        for tag in TAGS_IN_BOTH_SPLITS:
            if not any(tag in ex.tags for ex in part):
                problems.append(f"split {split}: no example tagged {tag}")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def composition_markdown(examples: Sequence[Example]) -> str:
    """The composition tables pasted into DATASHEET.md."""
    count = Counter((ex.mood, ex.celebrate, ex.split) for ex in examples)

    def n(mood: str | None = None, cel: bool | None = None, split: str | None = None) -> int:
        return sum(
            c
            for (m, f, s), c in count.items()
            if mood in (None, m) and cel in (None, f) and split in (None, s)
        )

    out: list[str] = [f"Examples: {len(examples)}\n", "Mood x split:\n"]
    out.append(
        _table(
            ["mood", "code", *SPLITS, "total"],
            [
                *[
                    [m, code, *[n(mood=m, split=s) for s in SPLITS], n(mood=m)]
                    for m, code in MOODS.items()
                ],
                ["**total**", "", *[n(split=s) for s in SPLITS], n()],
            ],
        )
    )
    out.append("\nCelebrate x split:\n")
    out.append(
        _table(
            ["celebrate", *SPLITS, "total"],
            [
                [str(f).lower(), *[n(cel=f, split=s) for s in SPLITS], n(cel=f)]
                for f in (True, False)
            ],
        )
    )
    out.append("\nMood x celebrate (both splits):\n")
    out.append(
        _table(
            ["mood", "celebrate=true", "celebrate=false"],
            [[m, n(mood=m, cel=True), n(mood=m, cel=False)] for m in MOODS],
        )
    )

    by_id = {ex.id: ex for ex in examples}
    pair_rows: Counter[tuple[str, str]] = Counter()
    for ex in examples:
        other = by_id.get(ex.pair) if ex.pair else None
        if other is None or ex.id > other.id:
            continue
        diff_mood = ex.mood != other.mood
        diff_cel = ex.celebrate != other.celebrate
        kind = (
            "mood and celebrate"
            if diff_mood and diff_cel
            else ("mood only" if diff_mood else "celebrate only")
        )
        pair_rows[(kind, ex.split)] += 1
    kinds = ("mood only", "celebrate only", "mood and celebrate")
    out.append("\nContrastive pairs (what the decisive detail changes):\n")
    out.append(
        _table(
            ["labels that differ", *SPLITS, "total"],
            [
                *[
                    [
                        k,
                        *[pair_rows[(k, s)] for s in SPLITS],
                        sum(pair_rows[(k, s)] for s in SPLITS),
                    ]
                    for k in kinds
                ],
                [
                    "**total pairs**",
                    *[sum(pair_rows[(k, s)] for k in kinds) for s in SPLITS],
                    sum(pair_rows.values()),
                ],
            ],
        )
    )

    tag_count = Counter((t, ex.split) for ex in examples for t in ex.tags)
    tag_total = Counter(t for ex in examples for t in ex.tags)
    out.append("\nTags x split (an example can have several tags):\n")
    out.append(
        _table(
            ["tag", *SPLITS, "total"],
            [
                [t, *[tag_count[(t, s)] for s in SPLITS], c]
                for t, c in sorted(tag_total.items(), key=lambda tc: (-tc[1], tc[0]))
            ],
        )
    )
    return "\n".join(out)


def main(argv: Sequence[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("dataset.jsonl")
    problems: list[str] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    examples: list[Example] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            problems.append(f"line {lineno}: empty line")
            continue
        ex = parse_line(lineno, line, problems)
        if ex is not None:
            examples.append(ex)
    check(examples, problems)
    print(composition_markdown(examples))
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    print(f"\nOK: {path.name} is valid.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
