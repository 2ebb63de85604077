"""Settings shared by backend kinds: where the engine is, what it serves, and its limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class BackendSettingsBase(BaseModel):
    """Fields every backend kind has. Timeouts are seconds; limits are per gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Where the engine is, in the form its kind reads.")
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
        description="Extra attempts when a connect fails or times out, the connection drops "
        "before any answer byte, or the engine says 503.",
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

    # A replica pool (backends/pool): several endpoints of one engine, listed or resolved.
    urls: list[str] = Field(
        default_factory=list,
        description="Several endpoints serving the same model, each in `url`'s form; "
        "instead of `url`.",
    )
    discovery: Literal["static", "dns"] = Field(
        default="static",
        description="dns: resolve `url`'s host to all its addresses (a Kubernetes headless "
        "Service), one endpoint each, again every `resolve_interval`.",
    )
    resolve_interval: float = Field(
        default=10.0, gt=0, description="Seconds between DNS resolutions (discovery dns)."
    )
    balance: Literal["p2c", "round_robin"] = Field(
        default="p2c",
        description="p2c: of two endpoints drawn at random, the one with fewer requests in "
        "flight; round_robin: each in turn.",
    )
    affinity: Literal["none", "user", "prefix"] = Field(
        default="none",
        description="Keep requests of one `user`, or of one prompt prefix, on one endpoint "
        "(its prefix cache) while it is not loaded beyond `affinity_max_load`.",
    )
    affinity_prefix_chars: int = Field(
        default=512, ge=16, description="Characters of the prompt that make its prefix key."
    )
    affinity_max_load: float = Field(
        default=1.25,
        ge=1.0,
        description="An endpoint keeps its affinity while its requests in flight stay under "
        "this times (the pool's mean plus one); beyond, the next in the key's order.",
    )
    eject_failures: int = Field(
        default=3, ge=1, description="Consecutive engine failures that eject an endpoint."
    )
    eject_cooldown: float = Field(
        default=10.0, gt=0, description="Seconds an ejected endpoint stays out of rotation."
    )
    max_ejected_percent: int = Field(
        default=50,
        ge=0,
        le=100,
        description="Most endpoints ejected at once, in percent of the pool (rounded down).",
    )

    @field_validator("model_dir")
    @classmethod
    def _model_dir_is_a_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @model_validator(mode="before")
    @classmethod
    def _url_from_urls(cls, data: Any) -> Any:
        """`urls` stands in for `url`: its first endpoint fills `url`, which kinds without a
        default require and which a single listed endpoint is served from."""
        if isinstance(data, dict) and isinstance(data.get("urls"), list) and data["urls"]:
            if "url" in data:
                raise ValueError("set url (one endpoint, or a name to resolve) or urls, not both")
            data = {**data, "url": data["urls"][0]}
        return data

    @model_validator(mode="after")
    def _one_way_to_name_endpoints(self) -> BackendSettingsBase:
        if len(set(self.urls)) != len(self.urls):
            raise ValueError("urls lists an endpoint twice")
        if self.discovery == "dns" and self.urls:
            raise ValueError("discovery dns resolves url: set url, not urls")
        return self

    @property
    def pooled(self) -> bool:
        """Several endpoints (listed or resolved), served by `backends.pool`."""
        return len(self.urls) > 1 or self.discovery == "dns"

    def endpoint_urls(self) -> list[str]:
        """The endpoints as configured: `urls`, or the one `url`."""
        return list(self.urls) or [self.url]


class HTTPBackendSettings(BackendSettingsBase):
    """An engine reached over HTTP (vLLM, trtllm-serve)."""

    url: str = Field(description="Base URL of the engine's server, without /v1.")
    api_key: SecretStr | None = Field(default=None, description="Bearer key the engine expects.")
    health_path: str = Field(
        default="/health",
        pattern=r"^/[^\s?#]*$",
        description="What the readiness probe asks (GET, 200 is ready): /health for vLLM, "
        "/readiness for SMG, whose /health answers 200 with no worker.",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, values: list[str]) -> list[str]:
        return [http_url(value) for value in values]

    @model_validator(mode="after")
    def _dns_over_plain_http(self) -> HTTPBackendSettings:
        if self.discovery == "dns" and urlsplit(self.url).scheme == "https":
            # Each endpoint is dialled by its address, which a certificate does not name.
            raise ValueError("discovery dns is for plain http inside a cluster, not https")
        return self


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000")
    if parts.path.rstrip("/").endswith("/v1"):
        raise ValueError("give the server's base URL without the trailing /v1")
    return value.rstrip("/")
