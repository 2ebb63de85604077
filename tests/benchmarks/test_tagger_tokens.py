"""`benchmarks/tagger_tokens.py` on the tiny model: every code is one token, every number it
prints is well formed and recounts the same, and the README's row for the tiny model is its
output; a code of several tokens fails the run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer

from gateway.tasks.task import Task, load_tasks

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "tagger_tokens.py"
PROMPTS = ROOT / "prompts"
DATASET = PROMPTS / "tagger" / "dataset.jsonl"
ENGINE_CONTEXT = 2048  # the test engines' context length (gateway/devstack, tests/conftest.py)

CODE_ROW = re.compile(r"(\S+) +(\d+)  (yes|no) +(\[.*\])")
JSON_ROW = re.compile(r" *(\d+)  (\{.*\})")
PROMPT_ROW = re.compile(
    r"prompt \(Phi-3 template\): shared prefix (\d+) tokens; per-request part over (\d+) "
    r"exchanges: mean (\d+), max (\d+)"
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


def test_every_code_is_one_token_and_the_numbers_are_well_formed(tiny_model_dir: Path) -> None:
    done = run(str(tiny_model_dir), "--dataset", str(DATASET))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    tagger = load_tasks(PROMPTS)["tagger"]
    assert (
        lines[0] == f"task tagger {tagger.version} (prompt {tagger.fingerprint}), {tiny_model_dir}"
    )
    codes = [match.groups() for line in lines if (match := CODE_ROW.fullmatch(line))]
    assert codes == [(code, "1", "yes", f"['{code}']") for code in tagger.codes]
    check_json_answers(lines, tagger, Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")))
    (prompt,) = [match for line in lines if (match := PROMPT_ROW.fullmatch(line))]
    shared, exchanges, mean, longest = map(int, prompt.groups())
    assert exchanges == len(DATASET.read_text(encoding="utf-8").splitlines())
    assert 0 < mean <= longest
    assert shared + longest + 1 <= ENGINE_CONTEXT  # the longest prompt and its code fit the engine
    assert lines[-1] == "OK: every code fits in max_tokens=1"
    readme_row = (
        f"| the tests' tiny model (`.cache/tiny-phi3`) | 1 | {json_ranges(lines)} | "
        f"{shared:,} | {mean} / {longest} (over the {exchanges} exchanges) |"
    )
    assert readme_row in (ROOT / "README.md").read_text(encoding="utf-8")


def check_json_answers(lines: list[str], tagger: Task, tokenizer: Tokenizer) -> None:
    """Two JSON answers per code, compact then spaced, each with its own token count."""
    rows = [match.groups() for line in lines if (match := JSON_ROW.fullmatch(line))]
    assert len(rows) == 2 * len(tagger.codes)
    for index, (count, text) in enumerate(rows):
        assert json.loads(text) == tagger.expand(tagger.codes[index // 2])
        assert (", " in text) == (index % 2 == 1)
        assert int(count) == len(tokenizer.encode(text, add_special_tokens=False).ids)


def json_ranges(lines: list[str]) -> str:
    """The README's "compact / spaced" cell: min-max token counts of each JSON style."""
    counts = [int(m[1]) for line in lines if (m := JSON_ROW.fullmatch(line))]
    compact, spaced = counts[0::2], counts[1::2]
    return f"{min(compact)}-{max(compact)} / {min(spaced)}-{max(spaced)}"


def test_a_code_of_several_tokens_fails_the_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    folder = tmp_path / "moods"
    folder.mkdir()
    (folder / "task.toml").write_text(
        'alias = "tagger"\nversion = "long-codes"\n'
        '[prompt]\nsystem = "Answer."\nexchange = "{user}"\n'
        '[[examples]]\nexchange = { user = "yay" }\nanswer = "xqzjv"\n'
        "[decoding]\ntemperature = 0.0\nmax_tokens = 1\n"
        "[output.codes]\nxqzjv = { positive = true }\nvjzqx = { positive = false }\n"
        '[output.schema]\ntype = "object"\nrequired = ["positive"]\n'
        'additionalProperties = false\nproperties = { positive = { type = "boolean" } }\n',
        encoding="utf-8",
    )
    done = run(str(tiny_model_dir), "--tasks-dir", str(tmp_path))
    assert done.returncode == 1
    assert re.search(r"FAIL: a code takes [2-9] tokens but max_tokens is 1", done.stderr)
    assert "OK:" not in done.stdout
