"""The operator's contract: one typed `Settings`, read from `GATEWAY_*` env vars and `.env`.

Built once at start, validated with messages that name the env var at fault, and passed down;
nothing else in the gateway reads the environment.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backends import registry
from backends.registry import KINDS, BackendSettings
from backends.vllm import VllmSettings
from gateway.gate_rule import GateRule, Metric
from gateway.http.limits import ConnectionLimits
from gateway.ratelimit.config import RateLimits
from gateway.records.base import StoreError
from gateway.records.store import RecorderOptions, check_url, open_store
from gateway.routes import RouteSettings, RouteSpec, check_routes, load_routes_file

_ROUTE = RouteSettings.model_fields  # a route's defaults, which the shorthand shares
# The single-model variables that make one route when no routes are configured.
SHORTHAND = ("primary", "models", "shadow", "shadow_rate", "noise_rate", "canary",
             "canary_percent", "fallback")  # fmt: skip
MAX_BUSY_POLL_US = 10_000  # a longer wait is not one a wake-up's tens of µs matter to
_GATE = GateRule()  # the gate's defaults, which `GATEWAY_GATE_*` override
_LIMITS = ConnectionLimits()  # what a worker allows its clients by default


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
    routes: dict[str, RouteSettings] = Field(
        default_factory=dict,
        description="Routes by public model name, as JSON (or GATEWAY_ROUTES_FILE); unset: the "
        "single-model variables below make one route.",
    )
    routes_file: Path | None = Field(
        default=None, description="A TOML file of [routes.<model>] tables (gateway/routes.py)."
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
    metrics_dir: Path | None = Field(
        default=None,
        description="With several workers: the folder where each keeps its metrics' numbers, "
        "which a scrape adds up; unset: a new temporary folder. Emptied at start.",
    )
    busy_poll_us: int | Literal["auto"] = Field(
        default="auto",
        description="Longest µs a worker polls its sockets after a write instead of sleeping, "
        "adapting to how soon answers come; 0 is off; auto is 1000 when every worker has a CPU "
        "of its own, else off (README, Performance).",
    )
    shutdown_timeout: int = Field(
        default=30, gt=0, description="Seconds after SIGTERM for in-flight requests to finish."
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    # Slow and surplus clients (gateway/http/limits.py): read at start, not on reload.
    client_head_timeout: float = Field(
        default=_LIMITS.head_timeout,
        gt=0,
        description="Seconds from a request's first byte to the end of its head; then 408.",
    )
    client_body_read_timeout: float = Field(
        default=_LIMITS.body_read_timeout,
        gt=0,
        description="Longest silence, in seconds, while a request body arrives; then 408.",
    )
    client_body_timeout: float = Field(
        default=_LIMITS.body_timeout,
        gt=0,
        description="Seconds from the end of a request's head to the end of its body; then 408.",
    )
    max_connections: int = Field(
        default=_LIMITS.max_connections,
        ge=1,
        description="Open client connections per worker; beyond, new ones are closed at once.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level; request text and keys are never logged."
    )
    # Task aliases (gateway/tasks/task.py): off unless asked for, so no new model name appears on
    # /v1/models of an existing deployment by surprise.
    tasks_enabled: bool = Field(
        default=False, description="Serve the task aliases defined under tasks_dir."
    )
    tasks_dir: Path = Field(
        default=Path("prompts"), description="Folder with one <task>/task.toml per task alias."
    )

    shadow: str | None = Field(
        default=None, description="A backend that gets a copy of sampled traffic (the candidate)."
    )
    shadow_rate: float = Field(
        default=_ROUTE["shadow_rate"].default,
        ge=0.0,
        le=1.0,
        description="Fraction of requests mirrored to the shadow.",
    )
    shadow_max_in_flight: int = Field(
        default=32, ge=1, description="Most shadow calls running at once, per process."
    )
    shadow_queue: int = Field(
        default=128, ge=0, description="Sampled requests that may wait for a slot; more drop."
    )
    shadow_timeout: float = Field(default=30.0, gt=0, description="Seconds per shadow call.")
    shadow_reader: Literal["inline", "process"] = Field(
        default="inline",
        description="Where the shadow's streamed calls are read: in the worker's own event loop, "
        "or in a child process at a lower CPU priority, so the relay never waits behind them.",
    )
    noise_rate: float = Field(
        default=_ROUTE["noise_rate"].default,
        ge=0.0,
        le=1.0,
        description="Fraction of shadowed requests also re-sent to the primary (noise floor).",
    )
    probe_interval: float = Field(
        default=5.0, ge=0, description="Seconds between readiness probes of every backend; 0 off."
    )
    probe_conformance_interval: float = Field(
        default=600.0,
        ge=0,
        description="Seconds between conformance probes of every backend (a constraint honoured, "
        "a stop cut, max_tokens, a seed, a Vietnamese stream); they also run at start; 0 off.",
    )
    fallback: str | None = Field(
        default=None, description="A backend that serves while the primary's circuit is open."
    )
    canary: str | None = Field(
        default=None, description="A backend that serves a share of live traffic."
    )
    canary_percent: float = Field(
        default=_ROUTE["canary_percent"].default,
        ge=0.0,
        le=100.0,
        description="Share of users the canary serves, sticky.",
    )

    # Shadow pair storage (gateway/records/store.py, gateway/records/redaction.py). Text is kept
    # only as hashes unless asked for: the requests are children's writing, personal data.
    records_url: str = Field(
        default="sqlite:///var/shadow.db",
        description="Where pairs are stored: sqlite:///<path> or postgresql://user:pass@host/db.",
    )
    records_retention_days: int = Field(
        default=30, ge=1, description="`gateway purge` deletes pairs older than this many days."
    )
    records_text: Literal["full", "hashes"] = Field(
        default="hashes",
        description="`hashes`: store text hashes and short labels only; `full`: the text too.",
    )
    records_queue: int = Field(
        default=10000, ge=1, description="Pairs waiting to be written; more are dropped, counted."
    )
    records_batch: int = Field(default=200, ge=1, description="Most pairs written at once.")

    # The cutover gate (gateway/report/gate.py): `gateway report` exits 1 when the candidate
    # fails it. The defaults are `GateRule`'s (gateway/gate_rule.py), so they are written once.
    gate_min_pairs: int = Field(
        default=_GATE.min_pairs,
        ge=1,
        description="Compared shadow pairs the gate needs before it can pass.",
    )
    gate_min_noise_pairs: int = Field(
        default=_GATE.min_noise_pairs,
        ge=1,
        description="Primary-vs-primary pairs the noise floor needs.",
    )
    gate_agreement: Metric = Field(
        default=_GATE.agreement,
        description="The agreement measure the gate compares to the noise floor.",
    )
    gate_max_agreement_drop: float = Field(
        default=_GATE.max_agreement_drop,
        ge=0.0,
        le=1.0,
        description="How far below the noise floor agreement may be.",
    )
    gate_max_p95_ratio: float = Field(
        default=_GATE.max_p95_ratio,
        gt=0.0,
        description="Candidate p95 (e2e, TTFT) at most this times primary's.",
    )
    gate_max_error_rate: float = Field(
        default=_GATE.max_error_rate,
        ge=0.0,
        le=1.0,
        description="Candidate errors on requests primary answered.",
    )
    gate_max_schema_violations: float = Field(
        default=_GATE.max_schema_violations,
        ge=0.0,
        le=1.0,
        description="Candidate answers breaking the requested schema.",
    )
    gate_max_parity_flagged: float = Field(
        default=_GATE.max_parity_flagged,
        ge=0.0,
        le=1.0,
        description="Pairs where the candidate ran another request.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /admin/*; unset: those routes answer 404."
    )
    # Per-client limits (gateway/ratelimit): each API key's budget on every route; routes add
    # their own (`rate_limits` in a route's table).
    rate_limits: RateLimits = Field(
        default_factory=RateLimits,
        description="Each API key's requests/tokens per minute and requests in flight.",
    )
    rate_limit_url: str | None = Field(
        default=None,
        description="redis://host:port/db: limits shared by every process and replica; unset: "
        "counted in each process. Read at start.",
    )

    @field_validator("records_url")
    @classmethod
    def _records_url_names_a_store(cls, url: str) -> str:
        check_url(url)
        return url

    @field_validator("rate_limit_url")
    @classmethod
    def _rate_limit_url_is_redis(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://[:password@]host:port/db, rediss://... or unix://")
        return url

    @field_validator("busy_poll_us", mode="before")
    @classmethod
    def _busy_poll_is_auto_or_bounded(cls, value: object) -> object:
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value == "auto" or (type(value) is int and 0 <= value <= MAX_BUSY_POLL_US):
            return value
        raise ValueError(f"must be auto, or whole µs from 0 (off) to {MAX_BUSY_POLL_US}")

    @field_validator("admin_token")
    @classmethod
    def _admin_token_is_long(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return token

    @model_validator(mode="before")
    @classmethod
    def _routes_from_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("routes_file"):
            if data.get("routes"):
                raise ValueError("set GATEWAY_ROUTES or GATEWAY_ROUTES_FILE, not both")
            data = {**data, "routes": load_routes_file(Path(data["routes_file"]))}
        return data

    @model_validator(mode="after")
    def _routes_are_consistent(self) -> Settings:
        if not self.backends:
            raise ValueError("GATEWAY_BACKENDS must name at least one backend")
        both = [name for name in SHORTHAND if name in self.model_fields_set]
        if self.routes and both:
            raise ValueError(
                f"GATEWAY_{both[0].upper()} is for a single model: with routes configured, set "
                "it in each route"
            )
        check_routes(self.route_table(), self.backends)
        return self

    @model_validator(mode="after")
    def _files_exist(self) -> Settings:
        if self.api_keys_file is not None and not self.api_keys_file.is_file():
            raise ValueError(f"GATEWAY_API_KEYS_FILE={self.api_keys_file} is not a readable file")
        if self.tasks_enabled and not self.tasks_dir.is_dir():
            raise ValueError(f"GATEWAY_TASKS_DIR={self.tasks_dir} is not a directory")
        return self

    def route_table(self) -> list[RouteSpec]:
        """The routes to serve: those configured, or the one the single-model variables make,
        named by GATEWAY_MODELS, else by its primary's `model` setting, else (None) by the name
        its primary's engine serves, which the readiness probes learn."""
        if self.routes:
            return [RouteSpec(name, route) for name, route in self.routes.items()]
        route = RouteSettings(
            primary=self.primary, aliases=self.models[1:], shadow=self.shadow,
            shadow_rate=self.shadow_rate, noise_rate=self.noise_rate, canary=self.canary,
            canary_percent=self.canary_percent, fallback=self.fallback,
        )  # fmt: skip
        primary = self.backends.get(self.primary)
        name = self.models[0] if self.models else primary.model if primary else None
        return [RouteSpec(name, route, shorthand=True)]

    def missing_extras(self) -> list[str]:
        """One line for each configured part this install cannot run: a backend kind or a
        records store whose optional dependencies are missing, naming the extra to install."""
        problems = registry.check(self.backends.items())
        try:
            open_store(self.records_url)  # imports the store's driver; connects to nothing
        except StoreError as exc:
            problems.append(f"GATEWAY_RECORDS_URL: {exc}")
        if self.rate_limit_url is not None and importlib.util.find_spec("redis") is None:
            problems.append(
                "GATEWAY_RATE_LIMIT_URL: shared limits need the Redis client: "
                "pip install 'pika-gateway[rate-limit-redis]'"
            )
        return problems

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            head_timeout=self.client_head_timeout,
            body_read_timeout=self.client_body_read_timeout,
            body_timeout=self.client_body_timeout,
            max_connections=self.max_connections,
        )

    def route_rate_limits(self) -> dict[str, RateLimits]:
        """Each named route's own limits per key (a route learning its name has none)."""
        return {
            spec.name: spec.settings.rate_limits
            for spec in self.route_table()
            if spec.name is not None
        }

    def lease_ttl(self) -> float:
        """How long a request in flight may hold a shared slot: the longest a backend lets one
        take, and a minute more."""
        return max(backend.total_timeout for backend in self.backends.values()) + 60.0

    def recorder_options(self) -> RecorderOptions:
        return RecorderOptions(
            self.records_queue, self.records_batch, keep_text=self.records_text == "full"
        )

    def route_rules(self) -> dict[str, GateRule]:
        """Each named route's gate: `GATEWAY_GATE_*` with the route's own thresholds. Every
        route, not only those shadowing now: pairs a route took before its shadow was
        removed are still judged by its own gate."""
        rule = self.gate_rule()
        return {
            spec.name: spec.settings.gate.over(rule)
            for spec in self.route_table()
            if spec.name is not None
        }

    def shadowing_routes(self) -> list[str]:
        """The named routes that shadow: the report judges each, pairs or none."""
        return [
            spec.name
            for spec in self.route_table()
            if spec.name is not None and spec.settings.shadow is not None
        ]

    def gate_rule(self) -> GateRule:
        """The cutover gate as configured (`GATEWAY_GATE_*`)."""
        return GateRule(
            min_pairs=self.gate_min_pairs,
            min_noise_pairs=self.gate_min_noise_pairs,
            agreement=self.gate_agreement,
            max_agreement_drop=self.gate_max_agreement_drop,
            max_p95_ratio=self.gate_max_p95_ratio,
            max_error_rate=self.gate_max_error_rate,
            max_schema_violations=self.gate_max_schema_violations,
            max_parity_flagged=self.gate_max_parity_flagged,
        )

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
        if parts[:1] == ["backends"] and len(parts) >= 3 and parts[2] in KINDS:
            del parts[2]  # the union's tag, which is not part of the env var name
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{_named(parts)}{message}")
    return "\n".join(lines)


def _named(parts: list[str]) -> str:
    """Where a problem is: the env var, or a route and its field. Model names keep their case,
    and a routes file has no env var names."""
    if parts[:1] == ["routes"] and len(parts) > 1:
        field = ".".join(parts[2:])
        return f"route {parts[1]!r}{' ' + field if field else ''}: "
    return f"GATEWAY_{'__'.join(parts).upper()}: " if parts else ""
