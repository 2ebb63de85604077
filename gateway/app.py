"""The gateway's ASGI application: hot routes served directly, the rest by FastAPI.

Example::

    uvicorn --factory gateway.app:create_app
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Coroutine
from time import perf_counter
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from backends import registry
from backends.base import Route
from backends.errors import GatewayError, InvalidRequest, MethodNotAllowed
from backends.registry import BackendSettings
from backends.transport.busy_poll import BusyPoll, usable_cpus, window_for
from backends.transport.write_batch import batch_of
from gateway.admin import build_admin
from gateway.http.asgi import Message, Receive, Scope, Send, request_id_from
from gateway.http.limits import STATE_KEY, ConnectionGuard
from gateway.logs import frames
from gateway.metrics import Metrics
from gateway.numbers import LocalNumbers, Numbers, SharedNumbers
from gateway.probes import Conformance, conform
from gateway.proxy.auth import KeyCheck
from gateway.proxy.guard import Circuit, Guarded
from gateway.proxy.handler import Proxy
from gateway.proxy.relay import Exchange, send_error
from gateway.proxy.routing import Router
from gateway.ratelimit.limiter import RateLimiter, RatePolicy
from gateway.records.store import Recorder, open_store
from gateway.runtime import Runtime, build_router, stream_reader
from gateway.settings import Settings, describe_errors
from gateway.tasks.config import TaskConfigError
from gateway.tasks.task import Task, load_tasks

log = logging.getLogger("gateway")

HOT_ROUTES = {route.path: route for route in Route}
# The hot path's objects die by reference counting, so the young generation is collected after
# 10,000 net new objects, not 700: frequent collections paused the loop and widened a stream's
# gaps. Not higher: a flood's refused requests leave exceptions in cycles, and the process grew
# for no better gaps (benchmarks/README.md, "The collector"; tests/gateway/proxy/test_flood.py).
GC_THRESHOLDS = (10_000, 10, 10)
PROBE_TIMEOUT = 10.0  # seconds; the adapters bound their own probes below this


class Gateway:
    """An ASGI app. Built from one `Settings`; owns its backends from startup to shutdown."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics(numbers_for(settings))
        # Both count in the metrics' numbers, which a scrape adds up over a worker group.
        self.connections = ConnectionGuard(
            settings.connection_limits(), numbers=self.metrics.numbers
        )
        # Counts of client use outlive reloads; each configuration brings its own limits.
        self.rate_limiter = RateLimiter(
            settings.rate_limit_url, settings.lease_ttl(), numbers=self.metrics.numbers
        )
        self.keys = KeyCheck(settings.key_digests())
        self.tasks = enabled_tasks(settings)
        self.admin = build_admin(self)
        self.recorder = Recorder(
            open_store(settings.records_url),
            settings.recorder_options(),
            counts=self.metrics.records,
        )
        self.conformance = Conformance()
        self.metrics.watch_conformance(self.conformance)
        self._runtime: Runtime | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the gateway has not started")
        return self._runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            route = HOT_ROUTES.get(scope["path"])
            if route is not None:
                if scope["method"] == "POST":
                    await self.runtime().proxy(route, scope, receive, send)
                else:
                    await _wrong_method(route, scope, send)
                return
            await self.admin(scope, receive, _with_gateway_headers(scope, send))
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.admin(scope, receive, send)

    async def start(self) -> None:
        self._runtime = await self._build(self.settings, self.keys, self.tasks)
        self._start_polling()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            # Only the main thread may own signals; tests run the app in other threads.
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGHUP, lambda: self._in_background(self._reload_quietly())
            )

    def _start_polling(self) -> None:
        """Busy polling for this process's loop: set once at start, not on reload."""
        cpus = usable_cpus()
        limit = window_for(self.settings.busy_poll_us, self.settings.workers, cpus)
        if limit:
            batch_of(asyncio.get_running_loop()).busy_poll = BusyPoll(limit)
        log.info(
            "busy polling: %s (GATEWAY_BUSY_POLL_US=%s, GATEWAY_WORKERS=%d, usable CPUs %g)",
            f"up to {limit * 1e6:.0f} microseconds" if limit else "off",
            self.settings.busy_poll_us, self.settings.workers, cpus,
        )  # fmt: skip

    async def stop(self) -> None:
        """Shutdown: finish shadow calls (bounded), store every accepted record, close pools."""
        if self._runtime is not None:
            await self._retire(self._runtime, wait_idle=False)
            self._runtime = None
        await self.recorder.close()
        await self.rate_limiter.close()

    async def reload(self) -> None:
        """Re-reads the configuration (environment and .env) and swaps it in without dropping
        in-flight requests.

        Everything new is built before anything is swapped. When something cannot be, the
        running configuration keeps serving and this raises, with the reason (logged too):
        `InvalidRequest` (400) for a bad setting or task file, `GatewayError` (500) for a
        backend that cannot be built.
        """
        settings, keys, tasks = _read_configuration()
        try:
            runtime = await self._build(settings, keys, tasks)
        except GatewayError as exc:
            raise _refused(GatewayError, exc.message) from None
        old = self._runtime
        self.settings, self.keys, self.tasks, self._runtime = settings, keys, tasks, runtime
        routes = ", ".join(f"{r.label or '?'} -> {r.primary.name}" for r in runtime.router.routes)
        log.info("configuration reloaded: %s", routes)
        if old is not None:
            self._in_background(self._retire(old, wait_idle=True))

    async def _reload_quietly(self) -> None:
        with contextlib.suppress(GatewayError):  # refused: logged, and the old one serves
            await self.reload()

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)  # a reference, so the task is not collected mid-flight
        task.add_done_callback(self._background.discard)

    async def _build(self, settings: Settings, keys: KeyCheck, tasks: dict[str, Task]) -> Runtime:
        """Everything one configuration serves with; `GatewayError` (500) naming the part that
        cannot be built, after closing the backends built by then."""
        backends: dict[str, Guarded] = {}
        try:
            for name, config in settings.backends.items():
                backends[name] = _guarded(name, config, self.metrics)
            return await self._assemble(settings, keys, tasks, backends)
        except Exception as exc:
            for backend in backends.values():
                with contextlib.suppress(Exception):
                    await backend.close()
            broken = [name for name in settings.backends if name not in backends]
            part = f"backend '{broken[0]}'" if broken else "the runtime"
            # The type, not the message: an adapter's message may quote a URL with a password.
            log.error("%s cannot be built: %s\n%s", part, type(exc).__name__, frames(exc))
            raise GatewayError(
                f"{part} cannot be built ({type(exc).__name__})", code="configuration_failed"
            ) from None

    async def _assemble(
        self,
        settings: Settings,
        keys: KeyCheck,
        tasks: dict[str, Task],
        backends: dict[str, Guarded],
    ) -> Runtime:
        reader = stream_reader(settings)
        router, shadows = build_router(
            settings, backends, tasks, self.recorder, self.metrics, reader
        )
        names = list(backends)
        for name, health in zip(
            names, await asyncio.gather(*(backends[n].health() for n in names)), strict=True
        ):
            router.note_health(name, health)
            log.info("backend %s: %s", name, "ready" if health.ready else health.detail)
        for route in router.routes:
            if route.name is None:
                log.warning(
                    "backend %s has not said which model it serves: until a readiness probe "
                    "learns it (GATEWAY_PROBE_INTERVAL), its requests get %s; GATEWAY_MODELS "
                    "names the route from the start",
                    route.primary.name,
                    "the fallback" if route.fallback else "a fast 503",
                )
        served = {alias: task for alias, task in tasks.items() if alias in router.tasks}
        limits = RatePolicy(self.rate_limiter, settings.rate_limits, settings.route_rate_limits())
        proxy = Proxy(
            router, keys, self.metrics, settings.max_body_bytes, served, self.conformance, limits
        )
        runtime = Runtime(
            settings,
            backends,
            router,
            proxy,
            keys,
            self.metrics,
            int(time.time()),
            shadows,
            reader,
        )
        if reader is not None:  # last of what can fail: nothing else needs undoing
            await reader.start()  # ReaderFailed: this configuration cannot shadow as asked
        if settings.probe_interval > 0:
            runtime.prober = asyncio.create_task(_probe(backends, router, settings.probe_interval))
        if settings.probe_conformance_interval > 0:
            runtime.conformer = asyncio.create_task(
                conform(backends, self.conformance, self.recorder.store,
                        settings.probe_conformance_interval)
            )  # fmt: skip
        return runtime

    async def _retire(self, runtime: Runtime, wait_idle: bool) -> None:
        for task in (runtime.prober, runtime.conformer):
            if task is not None:
                task.cancel()
        if wait_idle:  # requests that started on the old configuration finish on it
            deadline = time.monotonic() + runtime.settings.shadow_timeout + 600
            # Polling an int keeps the hot path free of per-request events.
            while runtime.proxy.active and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        for shadow in runtime.shadows:
            await shadow.close(shadow.longest_call)
        if runtime.reader is not None:
            await runtime.reader.close()
        for backend in runtime.backends.values():
            await backend.close()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The server's connections take their limits from here (gateway/http/limits.py).
        scope.setdefault("state", {})[STATE_KEY] = self.connections
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                # Everything alive now (modules, settings, pools) lives as long as the process:
                # frozen, the cyclic collector stops rescanning it after every few requests.
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def enabled_tasks(settings: Settings) -> dict[str, Task]:
    """The task aliases to serve, read once at start; a bad task file, or a route naming a
    task that is not there, stops the gateway."""
    specs = settings.route_table()
    named = {task: spec for spec in specs for task in spec.settings.tasks}
    if not settings.tasks_enabled:
        if named:
            task, spec = next(iter(named.items()))
            raise TaskConfigError(
                f"{spec.field('tasks')} names '{task}': set GATEWAY_TASKS_ENABLED"
            )
        return {}
    tasks = load_tasks(settings.tasks_dir)
    clash = sorted(set(tasks) & {name for spec in specs for name in spec.names})
    if clash:
        raise TaskConfigError(f"task aliases also model names: {', '.join(clash)}")
    for task, spec in named.items():
        if task not in tasks:
            raise TaskConfigError(
                f"{spec.field('tasks')} names '{task}', which {settings.tasks_dir} does not have"
            )
    return tasks


async def _wrong_method(route: Route, scope: Scope, send: Send) -> None:
    """The hot routes take POST only: 405 with `Allow: POST`, in OpenAI's error format."""
    request_id = dict(scope["headers"]).get(b"x-request-id")
    exchange = Exchange(route, request_id_from(request_id), perf_counter())
    await send_error(send, exchange, MethodNotAllowed(scope["method"], route.path))


def _with_gateway_headers(scope: Scope, send: Send) -> Send:
    """Adds the gateway's headers to answers that FastAPI produces."""
    started = perf_counter()
    request_id = b""
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            request_id = value
    rid = request_id_from(request_id or None).encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            overhead = f"{(perf_counter() - started) * 1000.0:.3f}".encode()
            message["headers"] = [
                *message.get("headers", []),
                (b"x-request-id", rid),
                (b"x-gateway-backend", b"none"),
                (b"x-gateway-overhead-ms", overhead),
            ]
        await send(message)

    return wrapped


def numbers_for(settings: Settings) -> Numbers:
    """Where the metrics' numbers live: shared by the group's workers when there are several
    (`gateway serve` made the folder and emptied it), else this process's own."""
    if settings.workers > 1 and settings.metrics_dir is not None:
        return SharedNumbers(settings.metrics_dir)
    return LocalNumbers()


def _guarded(name: str, config: BackendSettings, metrics: Metrics) -> Guarded:
    return Guarded(
        registry.create(name, config, metrics),
        config.max_concurrency,
        config.queue_timeout,
        Circuit(config.circuit_failures, config.circuit_cooldown),
        max_queue=config.max_queue,
    )


def _read_configuration() -> tuple[Settings, KeyCheck, dict[str, Task]]:
    """The settings, keys and tasks a reload would serve; `InvalidRequest` saying what is wrong
    (messages that could quote a value, such as a key, are reduced to their type)."""
    try:
        settings = Settings()
        tasks = enabled_tasks(settings)
    except ValidationError as exc:
        raise _refused(InvalidRequest, describe_errors(exc).replace("\n", "; ")) from None
    except (SettingsError, TaskConfigError) as exc:  # their messages quote no values
        raise _refused(InvalidRequest, str(exc)) from None
    missing = settings.missing_extras()
    if missing:
        raise _refused(InvalidRequest, "; ".join(missing))
    try:
        keys = KeyCheck(settings.key_digests())
    except (OSError, ValueError) as exc:
        reason = f"the API keys cannot be read ({type(exc).__name__})"
        raise _refused(InvalidRequest, reason) from None
    return settings, keys, tasks


def _refused(error: type[GatewayError], reason: str) -> GatewayError:
    message = f"reload refused, the running configuration is kept: {reason}"
    log.error("%s", message)
    return error(message, code="reload_refused")


def create_app(settings: Settings | None = None) -> Gateway:
    """The app for `uvicorn --factory`; settings come from the environment when not given."""
    return Gateway(settings if settings is not None else Settings())


async def _probe(backends: dict[str, Guarded], router: Router, interval: float) -> None:
    """Readiness probes: a failing one opens the backend's circuit (unless requests are being
    answered: `gateway.proxy.guard`), a passing one closes it, and a route still learning its
    name takes it from its primary's answer. A probe gets at least `PROBE_TIMEOUT`: a replica
    pool probes each endpoint within its own bound and is ready while one is, so a slow
    endpoint must not open the whole pool's circuit."""
    while True:
        await asyncio.sleep(interval)
        for backend in backends.values():
            try:
                timeout = max(interval, PROBE_TIMEOUT)
                health = await asyncio.wait_for(backend.health(), timeout=timeout)
                router.note_health(backend.name, health)
            except TimeoutError:
                backend.probe_failed()
            except Exception as exc:  # a probe must never end the loop
                log.warning("probe of %s failed: %s", backend.name, type(exc).__name__)
