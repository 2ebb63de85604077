"""The shape of a task's `task.toml`, validated with messages that name the key at fault.

Only what can be checked without an engine is checked here: placeholders, examples, codes
(distinct, prefix-free), the output schema and that every code expands to a valid answer.
Whether each code is one token of a given model is `benchmarks/tagger_tokens.py`'s job.
"""

from __future__ import annotations

import string
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Chat roles a task's client may send; each fills the placeholder of the same name.
ROLES = ("user", "assistant")
Label = str | bool


class TaskConfigError(ValueError):
    """A task file that cannot be served, with the file and the key at fault."""


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptConfig(_Config):
    system: Annotated[str, Field(min_length=1)]
    exchange: Annotated[str, Field(min_length=1)]


class ExampleConfig(_Config):
    source: str | None = None
    exchange: dict[str, str]
    answer: str


class DecodingConfig(_Config):
    temperature: Annotated[float, Field(ge=0.0, le=2.0)]
    max_tokens: Annotated[int, Field(ge=1, le=256)]


class OutputConfig(_Config):
    codes: Annotated[dict[str, dict[str, Label]], Field(min_length=1)]
    json_schema: dict[str, Any] = Field(alias="schema")


class DatasetConfig(_Config):
    exchange: dict[str, str]


class BlockConfig(_Config):
    """The exchange as one user message of quoted fields (`gateway/tasks/block.py`)."""

    header: Annotated[str, Field(min_length=1, pattern=r"^[^\s\x00-\x1f].*$")]
    fields: dict[str, Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]]


class TaskConfig(_Config):
    alias: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
    description: str = ""
    prompt: PromptConfig
    examples: list[ExampleConfig] = Field(default_factory=list)
    decoding: DecodingConfig
    output: OutputConfig
    dataset: DatasetConfig | None = None
    block: BlockConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TaskConfig:
        roles = placeholders(self.prompt.exchange)
        codes = self.output.codes
        _check_codes(list(codes))
        allowed = fields_of(self.output.json_schema)
        for code, labels in codes.items():
            _check_labels(f"output.codes.{code}", labels, allowed)
        for index, example in enumerate(self.examples):
            _check_roles(f"examples[{index}].exchange", example.exchange, roles)
            if example.answer not in codes:
                raise ValueError(f"examples[{index}].answer: {example.answer!r} is not a code")
        if self.dataset is not None:
            _check_roles("dataset.exchange", self.dataset.exchange, roles)
        if self.block is not None:
            _check_roles("block.fields", self.block.fields, roles)
            if len(set(self.block.fields.values())) < len(self.block.fields):
                raise ValueError("block.fields: each role needs a field name of its own")
        return self


def placeholders(template: str) -> tuple[str, ...]:
    """The roles a template fills, e.g. `Trẻ: {user}` -> ("user",); anything else is refused."""
    found: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"prompt.exchange: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in ROLES or spec or conversion:
            raise ValueError(f"prompt.exchange: {{{name}}} is not one of {{user}}, {{assistant}}")
        if name in found:
            raise ValueError(f"prompt.exchange: {{{name}}} appears twice")
        found.append(name)
    if not found:
        raise ValueError("prompt.exchange: needs at least one of {user}, {assistant}")
    return tuple(found)


def fields_of(schema: dict[str, Any]) -> dict[str, tuple[Label, ...]]:
    """Each field of an object schema with its allowed values (string enums and booleans)."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, dict) or not properties:
        raise ValueError("output.schema: must be an object schema with properties")
    if sorted(schema.get("required", [])) != sorted(properties):
        raise ValueError("output.schema.required: must list every property")
    if schema.get("additionalProperties") is not False:
        raise ValueError("output.schema.additionalProperties: must be false")
    allowed: dict[str, tuple[Label, ...]] = {}
    for name, spec in properties.items():
        enum = spec.get("enum") if isinstance(spec, dict) else None
        if spec == {"type": "boolean"}:
            allowed[name] = (False, True)
        elif isinstance(enum, list) and enum and spec.get("type") == "string":
            if not all(isinstance(value, str) for value in enum) or len(set(enum)) < len(enum):
                raise ValueError(f"output.schema.properties.{name}.enum: distinct strings only")
            allowed[name] = tuple(enum)
        else:
            raise ValueError(
                f"output.schema.properties.{name}: a field is a string enum or a boolean"
            )
    return allowed


def _check_codes(codes: list[str]) -> None:
    for code in codes:
        if not code or code != code.strip() or any(char.isspace() for char in code):
            raise ValueError(f"output.codes: {code!r} must be non-empty, without whitespace")
    for code in codes:
        for other in codes:
            if code != other and other.startswith(code):
                # A truncated answer would then be read as a different, valid code.
                raise ValueError(f"output.codes: {code!r} is a prefix of {other!r}")


def _check_labels(
    where: str, labels: dict[str, Label], allowed: dict[str, tuple[Label, ...]]
) -> None:
    if sorted(labels) != sorted(allowed):
        raise ValueError(f"{where}: needs exactly the fields {', '.join(allowed)}")
    for name, value in labels.items():
        if type(value) is not type(allowed[name][0]) or value not in allowed[name]:
            raise ValueError(f"{where}.{name}: {value!r} is not allowed by output.schema")


def _check_roles(where: str, exchange: dict[str, str], roles: tuple[str, ...]) -> None:
    if sorted(exchange) != sorted(roles):
        raise ValueError(f"{where}: needs exactly the keys {', '.join(roles)}")


def read_config(path: Path) -> TaskConfig:
    """Reads and validates one `task.toml`; every problem is a `TaskConfigError` naming it."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TaskConfigError(f"{path}: {exc}") from None
    try:
        return TaskConfig.model_validate(data)
    except ValidationError as exc:
        raise TaskConfigError(f"{path}: {_describe(exc)}") from None


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
