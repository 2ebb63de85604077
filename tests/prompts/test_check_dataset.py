"""`prompts/tagger/check_dataset.py`: the dataset passes it, its tables are the datasheet's, and
each kind of broken line or count makes it fail, naming the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.tasks.task import load_tasks

TAGGER = Path(__file__).resolve().parents[2] / "prompts" / "tagger"
CHECK = TAGGER / "check_dataset.py"
DATASET = TAGGER / "dataset.jsonl"

Rows = list[dict[str, Any]]


def check(path: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(CHECK), *([str(path)] if path else [])]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def dataset_rows() -> Rows:
    return [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]


def test_the_dataset_is_valid_and_the_datasheet_quotes_its_tables() -> None:
    done = check()
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "OK: dataset.jsonl is valid."
    assert done.stdout.startswith(f"Examples: {len(dataset_rows())}\n")
    datasheet = (TAGGER / "DATASHEET.md").read_text(encoding="utf-8")
    assert done.stdout.strip() in datasheet  # pasted verbatim: counts cannot drift


def test_every_code_of_the_tagger_has_twenty_examples_and_a_in_both_splits() -> None:
    tagger = load_tasks(TAGGER.parent)["tagger"]
    labels = [(row["mood"], row["celebrate"], row["split"]) for row in dataset_rows()]
    for code in tagger.codes:
        expanded = tagger.expand(code) or {}
        wanted = (expanded["mood"], expanded["celebrate"])
        assert sum(1 for mood, flag, _ in labels if (mood, flag) == wanted) >= 20, code
    # Code A (comforting + celebrate) was the thin one: about a quarter of it is held back.
    assert labels.count(("comforting", True, "dev")) >= 15
    assert labels.count(("comforting", True, "test")) >= 5


def drop_comforting_celebrations(rows: Rows) -> Rows:
    kept = [r for r in rows if (r["mood"], r["celebrate"]) != ("comforting", True)]
    return kept + [r for r in rows if (r["mood"], r["celebrate"]) == ("comforting", True)][:19]


def celebrate_a_wrong_answer(rows: Rows) -> Rows:
    wrong = next(r for r in rows if r["mood"] == "encouraging")
    return [{**r, "celebrate": True} if r is wrong else r for r in rows]


def duplicate_an_id(rows: Rows) -> Rows:
    return [*rows[:-1], {**rows[-1], "id": rows[0]["id"]}]


def break_a_pair(rows: Rows) -> Rows:
    paired = next(r for r in rows if r["pair"] is not None)
    return [{**r, "pair": None} if r is paired else r for r in rows]


def move_one_twin_to_test(rows: Rows) -> Rows:
    paired = next(r for r in rows if r["pair"] is not None and r["split"] == "dev")
    return [{**r, "split": "test"} if r is paired else r for r in rows]


def pair_same_labels(rows: Rows) -> Rows:
    first = next(r for r in rows if r["pair"] is not None)
    twin = next(r for r in rows if r["id"] == first["pair"])
    labels = {"mood": first["mood"], "celebrate": first["celebrate"]}
    return [{**r, **labels} if r is twin else r for r in rows]


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (drop_comforting_celebrations, "comforting with celebrate=true: 19 examples (minimum 20)"),
        (celebrate_a_wrong_answer, "encouraging with celebrate=true is not a label"),
        (duplicate_an_id, "duplicate id"),
        (break_a_pair, "does not point back"),
        (move_one_twin_to_test, "is in another split"),
        (pair_same_labels, "has the same labels"),
    ],
)
def test_a_broken_dataset_fails_naming_the_problem(
    tmp_path: Path, edit: Callable[[Rows], Rows], problem: str
) -> None:
    broken = tmp_path / "dataset.jsonl"
    lines = [json.dumps(row, ensure_ascii=False) for row in edit(dataset_rows())]
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = check(broken)
    assert done.returncode == 1
    assert problem in done.stderr
    assert done.stdout.startswith("Examples: ")  # the tables still print, to see what changed


def test_escaped_vietnamese_and_bad_lines_are_refused(tmp_path: Path) -> None:
    rows = dataset_rows()
    broken = tmp_path / "dataset.jsonl"
    lines = [json.dumps(rows[0]), "", "{not json", *map(json.dumps, rows[1:2])]
    broken.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = check(broken)
    assert done.returncode == 1
    for problem in ("line 1: contains \\u escapes", "line 2: empty line", "line 3: invalid JSON"):
        assert problem in done.stderr
