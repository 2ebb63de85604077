"""Settings shared by backend kinds: where the engine is, what it serves, and its limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


class BackendSettingsBase(BaseModel):
    """Fields every backend kind has. Timeouts are seconds; limits are per gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(
        default=None,
        description="The engine's served model name; unset means: ask the engine at start.",
    )
    connect_timeout: float = Field(default=2.0, gt=0, description="TCP connect timeout.")
    read_timeout: float = Field(
        default=60.0, gt=0, description="Longest wait for the next bytes (first token included)."
    )
    total_timeout: float = Field(default=600.0, gt=0, description="Longest whole request.")
    max_concurrency: int = Field(
        default=256, ge=1, description="Most requests in flight to this backend at once."
    )
    queue_timeout: float = Field(
        default=1.0, ge=0, description="Longest wait for a free slot; then 429 with Retry-After."
    )
    max_queue: int = Field(
        default=256, ge=0, description="Most requests waiting for a slot; more get 429 at once."
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Extra attempts when refused, dropped before any answer byte, or a 503.",
    )
    circuit_failures: int = Field(
        default=5, ge=1, description="Consecutive engine failures that open the circuit."
    )
    circuit_cooldown: float = Field(
        default=10.0, gt=0, description="Seconds an open circuit waits before a probe request."
    )
    model_dir: Path | None = Field(
        default=None,
        description="The served model's folder as the gateway can read it: its "
        "generation_config.json (and, for kinds the gateway tokenises for, tokenizer.json and "
        "tokenizer_config.json).",
    )
    generation_config: Literal["auto", "engine"] = Field(
        default="auto",
        description="auto: fields a request leaves out take the defaults of model_dir's "
        "generation_config.json, as vLLM's default --generation-config auto does (sent "
        "explicitly to TensorRT-LLM kinds); engine: the engine's own defaults.",
    )

    @field_validator("model_dir")
    @classmethod
    def _model_dir_is_a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value


class HTTPBackendSettings(BackendSettingsBase):
    """An engine reached over HTTP (vLLM, trtllm-serve)."""

    url: str = Field(description="Base URL of the engine's server, without /v1.")
    api_key: SecretStr | None = Field(default=None, description="Bearer key the engine expects.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000")
        if parts.path.rstrip("/").endswith("/v1"):
            raise ValueError("give the server's base URL without the trailing /v1")
        return value.rstrip("/")
