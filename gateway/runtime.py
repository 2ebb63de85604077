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
from gateway.proxy.routing import Router
from gateway.records.store import Recorder
from gateway.settings import Settings
from gateway.shadow.leg import ShadowLeg
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
    shadow: ShadowLeg | None = None
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

    def runtime(self) -> Runtime: ...

    async def reload(self) -> None: ...
