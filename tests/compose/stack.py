"""Reads compose/ as Docker Compose does: YAML with Compose's tags, interpolation, merging.

No Docker engine runs in CI, so the tests load the files the way the Compose specification
says (https://github.com/compose-spec/compose-spec: 12-interpolation.md, 13-merge.md) and
validate the result against the specification's own JSON schema (vendored beside this file).
Errors: `InterpolationError` for a `${VAR:?message}` whose variable is unset.

Example::

    model = load_stack(["docker-compose.yml"], TEST_ENV)
    model["services"]["vllm"]["command"]
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose"
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.single-gpu.yml")
LEGACY_FILE = "docker-compose.legacy-triton.yml"  # the runbook's appendix, on top of the main file
# The Phi-3 route's migration, one routes file per step (env/routes/<step>.toml), in order.
STEPS = ("start", "phi3-shadow", "phi3-canary", "phi3-cutover", "phi3-rollback")

# What an operator puts in compose/.env (.env.example lists the same names).
TEST_ENV = {
    "GATEWAY_ADMIN_TOKEN": "test-admin-token",
    "POSTGRES_PASSWORD": "0123456789abcdef",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana",
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", "-", ":?", "?", ":+", "+")
_OVERRIDE_KEYS = {"command", "entrypoint"}  # merged by replacement, not appended
_UNIQUE_BY_TARGET = {"volumes", "secrets", "configs"}


class InterpolationError(ValueError):
    """A required variable (`${VAR:?message}`) is unset or empty."""


@dataclass(frozen=True)
class Override:
    """`!override value`: replaces the attribute instead of merging with it."""

    value: Any


@dataclass(frozen=True)
class Reset:
    """`!reset value`: removes the attribute."""

    value: Any


class _Loader(yaml.SafeLoader):
    pass


def _tagged(kind: type[Override] | type[Reset]) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return kind(loader.construct_sequence(node, deep=True))
        if isinstance(node, yaml.MappingNode):
            return kind(loader.construct_mapping(node, deep=True))
        return kind(loader.construct_scalar(node))  # type: ignore[arg-type]

    return construct


_Loader.add_constructor("!override", _tagged(Override))
_Loader.add_constructor("!reset", _tagged(Reset))


def load_yaml(path: Path) -> Any:
    """One file, anchors and merge keys resolved, Compose's tags kept as Override/Reset."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Applies `${VAR}`, `${VAR:-default}`, `${VAR:?err}`, ... to every value (never to keys)."""
    if isinstance(value, str):
        return _substitute(value, env)
    if isinstance(value, (Override, Reset)):
        return type(value)(interpolate(value.value, env))
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    return value


def _substitute(text: str, env: Mapping[str, str]) -> str:
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i + 2)
            out.append(_expand(text[i + 2 : end], env))
            i = end + 1
        elif text[i] == "$" and (match := _NAME.match(text, i + 1)):
            out.append(_lookup(match.group(), env))
            i = match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise InterpolationError(f"unclosed ${{ in {text!r}")


def _expand(body: str, env: Mapping[str, str]) -> str:
    name = _NAME.match(body)
    if name is None:
        raise InterpolationError(f"invalid variable ${{{body}}}")
    rest = body[name.end() :]
    if not rest:
        return _lookup(name.group(), env)
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid variable ${{{body}}}")
    word = _substitute(rest[len(operator) :], env)
    value = env.get(name.group())
    empty = value is None or (operator.startswith(":") and value == "")
    if operator in (":-", "-"):
        return word if empty else str(value)
    if operator in (":?", "?"):
        if empty:
            raise InterpolationError(f"{name.group()}: {word}")
        return str(value)
    return "" if empty else word  # :+ and +


def _lookup(name: str, env: Mapping[str, str]) -> str:
    if name not in env:
        # Compose warns and substitutes "": here a variable without a default is a mistake.
        raise InterpolationError(f"{name} is unset and has no default")
    return env[name]


def merge(base: Any, override: Any, key: str = "") -> Any:
    """Merges an override file into a model (13-merge.md)."""
    if isinstance(override, Override):
        return copy.deepcopy(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = copy.deepcopy(base)
        for name, value in override.items():
            if isinstance(value, Reset):
                merged.pop(name, None)
            elif name in merged:
                merged[name] = merge(
                    _normalised(name, merged[name]), _normalised(name, value), name
                )
            else:
                merged[name] = copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _OVERRIDE_KEYS:
        if key in _UNIQUE_BY_TARGET:
            kept = [item for item in base if _target(item) not in {_target(o) for o in override}]
            return kept + copy.deepcopy(override)
        return base + [item for item in override if item not in base]
    return copy.deepcopy(override)


def _normalised(key: str, value: Any) -> Any:
    if key == "environment" and isinstance(value, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in value)
    if key == "depends_on" and isinstance(value, list):
        return {name: {"condition": "service_started"} for name in value}
    return value


def _target(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target", item.get("source", "")))
    parts = str(item).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def plain(value: Any) -> Any:
    """The model with the tags resolved, as one file is read on its own."""
    if isinstance(value, Override):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def load_stack(files: Sequence[str], env: Mapping[str, str]) -> dict[str, Any]:
    """The application model of `docker compose -f a -f b ...`: interpolated, then merged."""
    model: dict[str, Any] = {}
    for name in files:
        model = merge(model, interpolate(load_yaml(COMPOSE / name), env))
    merged: dict[str, Any] = plain(model)
    return merged


def schema_errors(model: Any) -> list[str]:
    """Where the model breaks the Compose specification's schema."""
    errors = Draft7Validator(SCHEMA).iter_errors(model)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in errors]


def read_env_file(path: Path) -> dict[str, str]:
    """A Compose env_file: KEY=VALUE lines, `#` comments, single quotes literal."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not _NAME.fullmatch(key):
            raise ValueError(f"{path.name}:{number}: not KEY=VALUE")
        if value[:1] in ("'", '"'):
            if len(value) < 2 or value[-1] != value[0]:
                raise ValueError(f"{path.name}:{number}: unterminated quote")
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        values[key] = value
    return values


def image_env() -> dict[str, str]:
    """The GATEWAY_* variables the gateway image's final stage sets with ENV."""
    text = re.sub(r"\\\n\s*", " ", (COMPOSE / "gateway.Dockerfile").read_text(encoding="utf-8"))
    final_stage = text.rsplit("\nFROM ", 1)[1]
    values: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                values[key] = value
    return {key: value for key, value in values.items() if key.startswith("GATEWAY_")}
