"""The operator's contract: one typed `Settings`, read from `GATEWAY_*` env vars and `.env`.

Built once at start, validated with messages that name the env var at fault, and passed down;
nothing else in the gateway reads the environment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backends.registry import FACTORIES, BackendSettings
from backends.vllm import VllmSettings


def _default_backends() -> dict[str, BackendSettings]:
    return {"vllm": VllmSettings()}


class Settings(BaseSettings):
    """Everything an operator can set. Each field is `GATEWAY_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    backends: dict[str, BackendSettings] = Field(
        default_factory=_default_backends,
        description="Named backends, as JSON or GATEWAY_BACKENDS__<name>__<field>.",
    )
    primary: str = Field(default="vllm", description="The backend that serves clients.")
    models: list[str] = Field(
        default_factory=list,
        description="Model names clients may send; empty means the primary's served name.",
    )
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted client keys; `sha256:<hex>` entries are stored hashed.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file with one key (or sha256:<hex>) per line."
    )
    host: str = Field(default="127.0.0.1", description="Address `gateway serve` binds.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port `gateway serve` binds.")
    workers: int = Field(default=1, ge=1, description="Worker processes (one per core).")
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level; request text and keys are never logged."
    )
    # Task aliases (gateway/tasks.py): off unless asked for, so no new model name appears on
    # /v1/models of an existing deployment by surprise.
    tasks_enabled: bool = Field(
        default=False, description="Serve the task aliases defined under tasks_dir."
    )
    tasks_dir: Path = Field(
        default=Path("prompts"), description="Folder with one <task>/task.toml per task alias."
    )

    @model_validator(mode="after")
    def _primary_is_configured(self) -> Settings:
        if not self.backends:
            raise ValueError("GATEWAY_BACKENDS must name at least one backend")
        if self.primary not in self.backends:
            raise ValueError(
                f"GATEWAY_PRIMARY={self.primary!r} is not one of GATEWAY_BACKENDS "
                f"({', '.join(sorted(self.backends))})"
            )
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ValueError(f"GATEWAY_API_KEYS_FILE={self.api_keys_file} is not a readable file")
        if self.tasks_enabled and not self.tasks_dir.is_dir():
            raise ValueError(f"GATEWAY_TASKS_DIR={self.tasks_dir} is not a directory")
        return self

    def key_digests(self) -> list[bytes]:
        """SHA-256 digests of every accepted key, from the list and the file."""
        entries = [key.get_secret_value() for key in self.api_keys]
        if self.api_keys_file is not None:
            lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            entries += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        return [_digest(entry) for entry in entries]


def _digest(entry: str) -> bytes:
    if entry.startswith("sha256:"):
        return bytes.fromhex(entry.removeprefix("sha256:"))
    return hashlib.sha256(entry.encode()).digest()


def describe_errors(error: ValidationError) -> str:
    """One line per problem, naming the env var an operator has to fix."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False):
        parts = [str(part) for part in problem["loc"]]
        if parts[:1] == ["backends"] and len(parts) > 3 and parts[2] in FACTORIES:
            del parts[2]  # the union's tag, which is not part of the env var name
        message = problem["msg"].removeprefix("Value error, ")
        name = f"GATEWAY_{'__'.join(parts).upper()}: " if parts else ""
        lines.append(f"{name}{message}")
    return "\n".join(lines)
