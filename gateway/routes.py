"""Routes: one per public model name, each with its own backends and its own migration.

A route names the backends (from the shared, named pool) that serve its model: the primary,
and optionally a shadow with its rate and noise rate, a canary with its share of users, a
fallback, the task aliases that run on it, a cap on its requests in flight, each client key's
limits on it, and the gate's thresholds it is judged by. Routes come from a TOML file
(`GATEWAY_ROUTES_FILE`), or JSON (`GATEWAY_ROUTES`); without either, today's single-model
variables (`GATEWAY_PRIMARY`, ...) make one route (`Settings.route_table`).

Example, `routes.toml`::

    [routes."qwen3-chat"]
    primary = "vllm-qwen3"
    shadow = "trt-qwen3"
    shadow_rate = 1.0

    [routes.phi-3-mini]
    primary = "vllm-phi3"
    canary = "trt-phi3"
    canary_percent = 50
    tasks = ["tagger"]
    gate = { agreement = "structured" }
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.gate_rule import GateRule, Metric
from gateway.ratelimit.config import RateLimits


class GateOverrides(BaseModel):
    """The gate's thresholds for one route where they differ from `GATEWAY_GATE_*`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_pairs: int | None = Field(default=None, ge=1)
    min_noise_pairs: int | None = Field(default=None, ge=1)
    agreement: Metric | None = None
    max_agreement_drop: float | None = Field(default=None, ge=0.0, le=1.0)
    max_p95_ratio: float | None = Field(default=None, gt=0.0)
    max_error_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    max_schema_violations: float | None = Field(default=None, ge=0.0, le=1.0)
    max_parity_flagged: float | None = Field(default=None, ge=0.0, le=1.0)

    def over(self, rule: GateRule) -> GateRule:
        """`rule` with this route's own thresholds."""
        own = {name: value for name, value in self.model_dump().items() if value is not None}
        return replace(rule, **own)


class RouteSettings(BaseModel):
    """One public model name and the backends serving it. Rates and shares as in the
    single-model variables of the same names (README, Configuration)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    primary: str = Field(description="The backend that serves this route's clients.")
    aliases: list[str] = Field(
        default_factory=list, description="Other model names clients may send for this route."
    )
    shadow: str | None = Field(default=None, description="A backend mirrored a sample of traffic.")
    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="Share mirrored.")
    noise_rate: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="Share of shadowed requests re-sent to the primary.",
    )
    canary: str | None = Field(default=None, description="A backend serving a share of users.")
    canary_percent: float = Field(default=0.0, ge=0.0, le=100.0, description="Its share, sticky.")
    fallback: str | None = Field(
        default=None, description="Serves while the primary's circuit is open."
    )
    tasks: list[str] = Field(
        default_factory=list, description="Task aliases (e.g. tagger) that run on this route."
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="Requests in flight on this route; beyond, 429."
    )
    gate: GateOverrides = Field(default_factory=GateOverrides)
    rate_limits: RateLimits = Field(
        default_factory=RateLimits,
        description="Each API key's limits on this route, besides GATEWAY_RATE_LIMITS.",
    )

    def backend_names(self) -> dict[str, str]:
        """Each role and the backend it names."""
        roles = {"primary": self.primary, "shadow": self.shadow, "canary": self.canary}
        roles["fallback"] = self.fallback
        return {role: name for role, name in roles.items() if name is not None}


def load_routes_file(path: Path) -> dict[str, Any]:
    """The `[routes.<name>]` tables of a TOML file, for `Settings` to validate."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"GATEWAY_ROUTES_FILE={path}: {exc}") from None
    unknown = sorted(set(data) - {"routes"})
    if unknown:
        raise ValueError(f"GATEWAY_ROUTES_FILE={path}: unknown table {unknown[0]!r}")
    routes = data.get("routes", {})
    if not isinstance(routes, dict) or not routes:
        raise ValueError(f"GATEWAY_ROUTES_FILE={path}: no [routes.<model>] table")
    return routes


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as configured: its name (None: learnt from its primary's engine, in the
    single-model shorthand without `GATEWAY_MODELS`) and its settings. `shorthand`: made of
    the single-model variables, which messages then name."""

    name: str | None
    settings: RouteSettings
    shorthand: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        """Every public name of the route that is known from the configuration."""
        return (*((self.name,) if self.name else ()), *self.settings.aliases)

    def field(self, name: str) -> str:
        """How a message names one of this route's fields."""
        if self.shorthand:
            return "GATEWAY_MODELS" if name in ("name", "aliases") else f"GATEWAY_{name.upper()}"
        return f"route {self.name!r} {name}"


_AS = {"name": "the name of", "aliases": "an alias of", "tasks": "a task on"}


def check_routes(specs: list[RouteSpec], backends: Iterable[str]) -> None:
    """ValueError naming the route and field of the first contradiction: a backend that is not
    configured, a shadow or canary that is its route's primary, an empty name, a model name or
    task on two routes. (A fallback may be the primary: it serves while the canary's circuit
    is open.)"""
    known = sorted(backends)
    seen: dict[str, str] = {}
    for spec in specs:
        _check_backends(spec, known)
        named = [("name", spec.name)] if spec.name is not None else []
        named += [("aliases", alias) for alias in spec.settings.aliases]
        named += [("tasks", task) for task in spec.settings.tasks]
        for field, name in named:
            if not name.strip():
                raise ValueError(f"{spec.field(field)}: a model name cannot be empty")
            if name in seen:
                raise ValueError(f"{spec.field(field)}: {name!r} is also {seen[name]}")
            seen[name] = f"{_AS[field]} route {spec.name!r}"


def _check_backends(spec: RouteSpec, known: list[str]) -> None:
    roles = spec.settings.backend_names()
    for role, backend in roles.items():
        if backend not in known:
            raise ValueError(
                f"{spec.field(role)}={backend!r} is not one of GATEWAY_BACKENDS "
                f"({', '.join(known)})"
            )
    for role in ("shadow", "canary"):  # the primary compared with, or sharing with, itself
        if roles.get(role) == roles["primary"]:
            raise ValueError(f"{spec.field(role)} must differ from {spec.field('primary')}")
