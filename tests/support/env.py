"""A test's gateway reads only the settings the test gives it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def without_gateway_env(monkeypatch: pytest.MonkeyPatch, cwd: Path) -> None:
    """Unsets every `GATEWAY_*` variable of the developer's shell and moves into `cwd`, where
    no stray `.env` is read."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(cwd)
