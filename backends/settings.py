"""Settings shared by backend kinds: where the engine is, what it serves, and its limits."""

from __future__ import annotations

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
