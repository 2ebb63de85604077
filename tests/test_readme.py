"""The README is the operator's contract: every setting appears in its configuration tables,
and every path the docs name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backends.triton.settings import TritonSettings
from backends.vllm import VllmSettings
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_gateway_setting_is_documented() -> None:
    missing = [f"GATEWAY_{name.upper()}" for name in Settings.model_fields
               if f"`GATEWAY_{name.upper()}`" not in README]  # fmt: skip
    assert missing == []


def test_every_backend_field_is_documented() -> None:
    fields = set(VllmSettings.model_fields) | set(TritonSettings.model_fields)
    missing = [name for name in sorted(fields) if f"| `{name}` |" not in README]
    assert missing == []


def test_the_two_setup_commands_are_the_ci_command_and_the_demo() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "./dev test" in ci
    assert "./dev test" in README
    assert "./dev demo" in README


PATH_IN_DOCS = re.compile(r"\b(?:gateway|backends|tests|benchmarks|compose|prompts)/[\w./-]*\w")


@pytest.mark.parametrize("doc", ["README.md", "compose/README.md", "benchmarks/README.md"])
def test_every_path_the_docs_name_exists(doc: str) -> None:
    """Module and file paths in the docs point at real files (placeholders like <name> aside)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = {match.group(0) for match in PATH_IN_DOCS.finditer(text)}
    assert named, doc
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == []


def test_the_docs_path_check_sees_a_missing_module() -> None:
    found = [m.group(0) for m in PATH_IN_DOCS.finditer("see `gateway/proxy/nowhere.py`.")]
    assert found == ["gateway/proxy/nowhere.py"]
    assert not (ROOT / found[0]).exists()
