"""The README is the operator's contract: every setting appears in its configuration tables."""

from __future__ import annotations

from pathlib import Path

from backends.triton.adapter import TritonSettings
from backends.vllm import VllmSettings
from gateway.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


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
