"""`PooledBackend`: one backend served by several endpoints of the same engine.

Each endpoint is its kind's own adapter on the endpoint's address, made without retries of its
own: a failure that is safe to repeat (nothing was sent, or nothing came back before the status
line, or the engine said 503) is sent again to another endpoint, up to `retries` times, before
any byte reaches the client. A stream that fails once it has started is never sent again; it
ends with the error, which the gateway renders as an SSE error event.

Example::

    pool = PooledBackend("vllm", settings, registry.factory("vllm"), LocalStats())
    completion = await pool.complete(request)   # completion.endpoint: "10.0.3.7:8000"
    health = await pool.health()                 # probes every endpoint; ready if any is
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from backends.base import Backend, Completion, EventStream, Health, UpstreamRequest
from backends.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    GatewayError,
)
from backends.piping import Deliver, pipe
from backends.pool import discovery
from backends.pool.affinity import key_of
from backends.pool.balance import Balancer, Endpoint, Rules
from backends.pool.stats import PoolStats
from backends.sampling import Sampling
from backends.settings import BackendSettingsBase

T = TypeVar("T")
Factory = Callable[[str, Any], Backend]
# Errors that say the endpoint is unwell, not that the request was bad.
ENGINE_FAILURES = (BackendUnavailable, BackendTimeout, BackendProtocolError)
BACKOFF = 0.05  # seconds: the scale of the jittered wait before a retry on a tried endpoint
PROBE_TIMEOUT = 2.5  # seconds: the longest one endpoint's readiness probe may take
log = logging.getLogger("backends.pool")


class PooledBackend:
    """A `Backend` over the endpoints of one engine; see the module's docstring."""

    def __init__(
        self, name: str, settings: BackendSettingsBase, factory: Factory, stats: PoolStats
    ) -> None:
        self.name = name
        self._settings = settings
        self._factory = factory
        self._stats = stats
        self._retried = stats.retries(name)
        self.balancer = Balancer(
            Rules(settings.balance, settings.affinity_max_load, settings.eject_failures,
                  settings.eject_cooldown, settings.max_ejected_percent)
        )  # fmt: skip
        self._leaving: list[Endpoint] = []
        # The probe of one endpoint ends in this, answered or not: a hanging endpoint must not
        # hold up the pool's readiness, which `/ready` waits 3 s for.
        self._probe_timeout = min(settings.connect_timeout + 1.0, PROBE_TIMEOUT)
        self._template = factory(name, self._settings_for(settings.url))  # `sampling`, always
        self._resolved = asyncio.Event()
        self._discovering: asyncio.Task[None] | None = None
        self._target = discovery.Target.of(settings.url)
        if settings.discovery == "dns":
            self._discovering = asyncio.get_running_loop().create_task(self._discover())
        else:
            for url in settings.endpoint_urls():
                self._add(discovery.static_name(url), url)
            self._resolved.set()

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return self._template.sampling(request)

    async def complete(self, request: UpstreamRequest) -> Completion:
        key = self._key(request)
        endpoint = self._pick(key)
        self._enter(endpoint)
        try:  # the first attempt runs bare, as most do: no closure, no coroutine around it
            completion = await endpoint.backend.complete(request)
        except GatewayError as exc:
            tried: list[Endpoint] = []
            self._failed(endpoint, exc, tried)
            completion, endpoint = await self._attempts(
                key, lambda e: e.backend.complete(request), tried
            )
        except BaseException:  # cancelled: the client left, no verdict on the endpoint
            self._leave(endpoint)
            raise
        else:
            self._leave(endpoint)
        self._settle(endpoint, None)
        return Completion(completion.body, completion.answer, completion.ids, endpoint.name)

    async def stream(self, request: UpstreamRequest) -> EventStream:
        key = self._key(request)
        endpoint = self._pick(key)
        self._enter(endpoint)  # left when the stream ends (`_PooledStream`)
        try:
            events = await endpoint.backend.stream(request)
        except GatewayError as exc:
            tried: list[Endpoint] = []
            self._failed(endpoint, exc, tried)
            events, endpoint = await self._attempts(
                key, lambda e: e.backend.stream(request), tried, keep=True
            )
        except BaseException:
            self._leave(endpoint)
            raise
        return _PooledStream(self, endpoint, events)

    async def _attempts(
        self,
        key: int | None,
        call: Callable[[Endpoint], Awaitable[T]],
        tried: list[Endpoint],
        keep: bool = False,
    ) -> tuple[T, Endpoint]:
        """The attempts after the first failed safely: each on an endpoint not yet `tried`
        (any, once all were), after a jittered wait when all were, until one answers or
        `retries` were made. With `keep`, the endpoint that answers stays counted in flight
        (a stream holds it until it ends)."""
        while True:
            if all(e in tried for e in self.balancer.rotation()):
                await asyncio.sleep(random.uniform(0, BACKOFF * len(tried)))
            endpoint = self._pick(key, tried)
            self._enter(endpoint)
            try:
                result = await call(endpoint)
            except GatewayError as exc:
                self._failed(endpoint, exc, tried)
                continue
            except BaseException:  # cancelled: the client left, no verdict on the endpoint
                self._leave(endpoint)
                raise
            if not keep:
                self._leave(endpoint)
            return result, endpoint

    def _key(self, request: UpstreamRequest) -> int | None:
        settings = self._settings
        if settings.affinity == "none":
            return None
        return key_of(request.payload, settings.affinity, settings.affinity_prefix_chars)

    def _pick(self, key: int | None, tried: Sequence[Endpoint] = ()) -> Endpoint:
        endpoint = self.balancer.pick(key, tried)
        if endpoint is None:
            raise BackendUnavailable(f"backend '{self.name}' has no endpoint yet")
        return endpoint

    def _failed(self, endpoint: Endpoint, exc: GatewayError, tried: list[Endpoint]) -> None:
        """The verdict on an attempt that failed: `exc` again, unless it is safe to repeat and
        retries are left; then `endpoint` joins those `tried`."""
        self._leave(endpoint)
        self._settle(endpoint, exc)
        exc.endpoint = endpoint.name
        if not exc.retryable or len(tried) >= self._settings.retries:
            raise exc
        tried.append(endpoint)
        self._retried.inc()

    def _enter(self, endpoint: Endpoint) -> None:
        endpoint.active += 1
        endpoint.stats.in_flight.inc()

    def _leave(self, endpoint: Endpoint) -> None:
        endpoint.active -= 1
        endpoint.stats.in_flight.dec()

    def _settle(self, endpoint: Endpoint, failure: BaseException | None) -> None:
        """The verdict of one call on its endpoint: engine failures count towards ejection."""
        if isinstance(failure, ENGINE_FAILURES):
            endpoint.stats.failed.inc()
            if self.balancer.failed(endpoint):
                endpoint.stats.ejections.inc()
                endpoint.stats.out.set(1.0)
                log.warning("backend %s: endpoint %s ejected after %d failures",
                            self.name, endpoint.name, endpoint.failures)  # fmt: skip
            return
        endpoint.stats.answered.inc()
        self.balancer.succeeded(endpoint)

    async def health(self) -> Health:
        """Probes every endpoint at once; ready when at least one is."""
        if not self._resolved.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_timeout):
                    await self._resolved.wait()
        members = list(self.balancer.members)
        if not members:
            return Health(False, f"no endpoint: {self._target.host} has no address yet")
        checks = await asyncio.gather(*(self._probe(endpoint) for endpoint in members))
        ready = [health for health in checks if health.ready]
        unready = [f"{e.name}: {h.detail}" for e, h in zip(members, checks, strict=True)
                   if not h.ready]  # fmt: skip
        detail = f"{len(ready)} of {len(members)} endpoints ready"
        served = next((health.served_model for health in ready if health.served_model), None)
        return Health(bool(ready), "; ".join([detail, *unready]), served)

    async def _probe(self, endpoint: Endpoint) -> Health:
        try:
            async with asyncio.timeout(self._probe_timeout):
                health = await endpoint.backend.health()
        except TimeoutError:
            health = Health(False, f"no answer to the probe in {self._probe_timeout:.3g} s")
        endpoint.ready = health.ready
        endpoint.stats.out.set(float(self.balancer.out_of_rotation(endpoint)))
        return health

    async def close(self) -> None:
        if self._discovering is not None:
            self._discovering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._discovering
        for endpoint in [*self.balancer.members, *self._leaving]:
            await endpoint.backend.close()
        await self._template.close()

    def _settings_for(self, url: str) -> Any:
        """The kind's settings for one endpoint: its address, no pool, no retries of its own."""
        update = {"url": url, "urls": [], "discovery": "static", "retries": 0}
        return self._settings.model_copy(update=update)

    def _add(self, name: str, url: str) -> None:
        backend = self._factory(self.name, self._settings_for(url))
        self.balancer.join(Endpoint(name, backend, self._stats.endpoint(self.name, name)))

    async def _discover(self) -> None:
        """Resolves the name now and every `resolve_interval`: new addresses join, gone ones
        leave (closed once their calls are done); a failed resolution keeps what is there."""
        while True:
            try:
                found = await discovery.resolve(self._target)
            except OSError as exc:
                log.warning("backend %s: %s does not resolve (%s); keeping %d endpoints",
                            self.name, self._target.host, type(exc).__name__,
                            len(self.balancer.members))  # fmt: skip
            else:
                if found:
                    self._update(found)
                self._resolved.set()
            await self._close_drained()
            await asyncio.sleep(self._settings.resolve_interval)

    def _update(self, found: dict[str, str]) -> None:
        current = {endpoint.name: endpoint for endpoint in self.balancer.members}
        for name, url in found.items():
            if name not in current:
                self._add(name, url)
                log.info("backend %s: endpoint %s joined", self.name, name)
        for name, endpoint in current.items():
            if name not in found:
                self.balancer.leave(endpoint)
                endpoint.stats.out.set(1.0)
                self._leaving.append(endpoint)
                log.info("backend %s: endpoint %s left", self.name, name)

    async def _close_drained(self) -> None:
        for endpoint in [e for e in self._leaving if e.active == 0]:
            self._leaving.remove(endpoint)
            await endpoint.backend.close()


class _PooledStream:
    """An endpoint's stream; the endpoint stays in flight until the stream ends, and a failure
    while it runs counts against it. Piped (`backends.piping`) when its endpoint's stream can
    be, as a single backend's stream is: pulled, every event woke a task and climbed a
    generator more (benchmarks/README.md, "A replica pool at engine steps")."""

    def __init__(self, pool: PooledBackend, endpoint: Endpoint, events: EventStream) -> None:
        self._pool = pool
        self._endpoint: Endpoint | None = endpoint
        self._events = events
        self.ids = events.ids
        self.endpoint: str | None = endpoint.name
        self._relayed = self._relay()

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._relayed

    async def pipe(self, deliver: Deliver) -> bool:
        try:
            ended = await pipe(self._events, deliver)
        except GatewayError as exc:
            self._done(exc)
            raise
        if ended:
            self._done(None)
        return ended

    async def _relay(self) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in self._events:
                yield chunk
        except GatewayError as exc:
            self._done(exc)
            raise
        self._done(None)

    def _done(self, failure: GatewayError | None) -> None:
        """The stream ended, whole or with `failure` (which then names the endpoint)."""
        if failure is not None:
            failure.endpoint = self.endpoint
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            self._pool._leave(endpoint)
            self._pool._settle(endpoint, failure)

    async def aclose(self) -> None:
        try:
            await self._relayed.aclose()
            await self._events.aclose()
        finally:
            endpoint, self._endpoint = self._endpoint, None
            if endpoint is not None:  # closed before its end: the client left, no verdict
                self._pool._leave(endpoint)
