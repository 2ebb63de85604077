"""Runtime code says why, not what one machine measured: figures live in benchmarks/README.md.

Every comment (read by `tokenize`) and docstring (read by `ast`) of a module under `gateway/`
and `backends/` is searched for a number followed by a unit of time, throughput or memory,
for a ratio of costs ("2.3 times quicker") and for a share of CPU ("5 % of"). A design
constant that must name a unit goes in `ALLOWED`, with its reason.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("gateway", "backends")
BENCHMARKS_README = ROOT / "benchmarks" / "README.md"

_NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"
_UNIT = r"(?:µs|us|ns|ms|req/s|requests?/s|requests a second|KB|KiB|MB|MiB|GB|GiB)(?!\w)"
_RATIO = (
    r"(?:\d+(?:\.\d+)?|two|three|four|five|six|ten) times"
    r" (?:as much|the cost|quicker|faster|slower|more|less|cheaper)"
)
MEASUREMENT = re.compile(
    rf"{_NUMBER}(?:\s*(?:to|-|->|against|and)\s*{_NUMBER})?\s*{_UNIT}"
    rf"|\b{_RATIO}\b"
    rf"|{_NUMBER}\s*%\s+of\b",
    re.IGNORECASE,
)

# Phrases that name a unit without quoting a measurement: (phrase, why it may stay).
ALLOWED: list[tuple[str, str]] = [
    (
        "nginx's default allows 32 KiB",
        "another server's documented default, beside the gateway's own MAX_HEAD limit",
    ),
]

# `(benchmarks/README.md, "Section")`: the section a figure moved to.
SECTION_REFERENCE = re.compile(r'benchmarks/README\.md,\s*"([^"]+)"')


def runtime_modules() -> list[Path]:
    return sorted(path for package in RUNTIME for path in (ROOT / package).rglob("*.py"))


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(first line, text) of each docstring and each run of comment lines, whitespace folded."""
    source = path.read_text(encoding="utf-8")
    run: list[str] = []
    start = last = 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        line = token.start[0]
        if run and line != last + 1:
            yield start, " ".join(run)
            run = []
        if not run:
            start = line
        run.append(token.string.lstrip("#").strip())
        last = line
    if run:
        yield start, " ".join(run)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, " ".join(docstring.split())


def measurements(text: str) -> list[str]:
    """The measurement-like phrases of `text`, once the allowed phrases are taken out."""
    for phrase, _ in ALLOWED:
        text = text.replace(phrase, " ")
    return [match.group(0) for match in MEASUREMENT.finditer(text)]


def readme_sections() -> set[str]:
    """Headings of benchmarks/README.md, and its bold run-in labels (`- **Workers.** ...`)."""
    text = BENCHMARKS_README.read_text(encoding="utf-8")
    headings = {line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")}
    labels = {label.rstrip(".:") for label in re.findall(r"\*\*([^*]+)\*\*", text)}
    return headings | labels


def test_no_runtime_comment_or_docstring_quotes_a_measurement() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {phrase!r}"
        for path in runtime_modules()
        for line, text in prose(path)
        for phrase in measurements(text)
    ]
    assert found == [], "move these figures to benchmarks/README.md and say why instead"


def test_every_allowed_phrase_is_still_used() -> None:
    """An allow-list entry whose phrase is gone would let a later measurement through unseen."""
    texts = [text for path in runtime_modules() for _, text in prose(path)]
    unused = [phrase for phrase, _ in ALLOWED if not any(phrase in text for text in texts)]
    assert unused == []


def test_sections_the_runtime_docs_point_to_exist() -> None:
    sections = readme_sections()
    missing = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for path in runtime_modules()
        for line, text in prose(path)
        for name in SECTION_REFERENCE.findall(text)
        if name not in sections
    ]
    assert missing == []


@pytest.mark.parametrize(
    "text",
    [
        "a write that wakes a reader costs 27 to 31 µs per send of 400 bytes",
        "SQLite alone: 22 -> 15 µs per row",
        "dataclasses.replace costs four times as much (1.5 against 0.36 µs)",
        "a tuple: 2.3 times quicker than a union",
        "locked() and acquire() took about 5% of the CPU at 4,500 requests a second",
        "the gap p99 was 147 to 227 ms",
        "the process grew by 25 MB",
        "the gateway did 3,741 -> 5,016 req/s",
    ],
)
def test_the_search_catches_a_measurement(text: str) -> None:
    assert measurements(text) != []


@pytest.mark.parametrize(
    "text",
    [
        *(phrase for phrase, _ in ALLOWED),
        "MAX_HEAD: bytes of request line and headers; nginx's default allows 32 KiB",
        "the normal quantile of a two-sided 95% interval",
        "a timer for every quarter of the shadow timeout, bumped about four times per request",
        "Upstream latency spans engines' range (ms to minutes)",
        "x-request-id: r1, HTTP/1.1, SHA-256, 0.5 seconds",
    ],
)
def test_the_search_allows_design_constants(text: str) -> None:
    assert measurements(text) == []


def test_prose_joins_a_comment_run_and_reads_docstrings(tmp_path: Path) -> None:
    module = tmp_path / "module.py"
    module.write_text(
        '"""Summary.\n\nCosts 27 to\n31 µs."""\n\n# one\n# two\nX = 1  # three\n',
        encoding="utf-8",
    )
    assert sorted(prose(module)) == [(1, "Summary. Costs 27 to 31 µs."), (6, "one two three")]
