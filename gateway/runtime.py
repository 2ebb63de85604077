"""What one configuration builds and serves with, and what the admin routes see of the gateway.

A reload builds a new `Runtime` and swaps it in; the old one serves its requests to the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.metrics import Metrics
from gateway.probes import Conformance
from gateway.proxy.auth import KeyCheck
from gateway.proxy.guard import Guarded
from gateway.proxy.handler import Proxy
from gateway.proxy.routing import ModelRoute, Router
from gateway.ratelimit.limiter import RateLimiter
from gateway.records.store import Recorder
from gateway.routes import RouteSpec
from gateway.settings import Settings
from gateway.shadow.leg import ShadowConfig, ShadowLeg
from gateway.shadow.reader import StreamReader
from gateway.tasks.task import Task


@dataclass(slots=True)
class Runtime:
    """What one configuration builds: backends (with their pools), router, shadow, proxy."""

    settings: Settings
    backends: dict[str, Guarded]
    router: Router
    proxy: Proxy
    keys: KeyCheck
    metrics: Metrics
    started_at: int
    shadows: list[ShadowLeg]  # one per route that shadows
    reader: StreamReader | None = None  # the child reading streamed shadow calls, if one
    prober: asyncio.Task[None] | None = None  # readiness probes
    conformer: asyncio.Task[None] | None = None  # conformance probes


class Served(Protocol):
    """The running gateway as its admin routes see it (`gateway.app.Gateway` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def tasks(self) -> Mapping[str, Task]: ...

    @property
    def recorder(self) -> Recorder: ...

    @property
    def conformance(self) -> Conformance: ...

    @property
    def rate_limiter(self) -> RateLimiter: ...

    def runtime(self) -> Runtime: ...

    async def reload(self) -> None: ...


def build_router(
    settings: Settings,
    backends: Mapping[str, Guarded],
    tasks: Mapping[str, Task],
    recorder: Recorder,
    metrics: Metrics,
    reader: StreamReader | None = None,
) -> tuple[Router, list[ShadowLeg]]:
    """Every route of the configuration with its backends and shadow leg; a task alias runs
    on the route that names it (in the single-model shorthand, on the one route). `reader`:
    where the shadow legs read streamed calls, if not inline (`shadow_reader`)."""
    routes, legs = [], []
    on: dict[str, ModelRoute] = {}
    for spec in settings.route_table():
        route = ModelRoute(spec, backends)
        names = list(tasks) if spec.shorthand else spec.settings.tasks
        on |= dict.fromkeys(names, route)
        if spec.settings.shadow is not None:
            leg = ShadowLeg(
                route.primary, backends[spec.settings.shadow], shadow_config(settings, spec),
                recorder, metrics.shadow_for(route.label),
                task_schemas={alias: task.schema for alias, task in tasks.items()},
                reader=reader,
            )  # fmt: skip
            leg.route = route.label
            route.shadow = leg
            legs.append(leg)
        routes.append(route)
    return Router(routes, on), legs


def stream_reader(settings: Settings) -> StreamReader | None:
    """The child process for `shadow_reader = "process"`, knowing every backend a shadow
    leg calls (the candidate, and the primary for the noise floor), not yet started; None when
    calls are read inline or nothing shadows."""
    if settings.shadow_reader != "process":
        return None
    called: set[str] = set()
    for spec in settings.route_table():
        if spec.settings.shadow is not None:
            called.add(spec.settings.shadow)
            if spec.settings.noise_rate > 0:
                called.add(spec.settings.primary)
    if not called:
        return None
    return StreamReader({name: settings.backends[name] for name in called}, settings.log_level)


def shadow_config(settings: Settings, spec: RouteSpec) -> ShadowConfig:
    return ShadowConfig(
        rate=spec.settings.shadow_rate,
        noise_rate=spec.settings.noise_rate,
        max_in_flight=settings.shadow_max_in_flight,
        queue=settings.shadow_queue,
        timeout=settings.shadow_timeout,
        keep_text=settings.records_text == "full",
    )
