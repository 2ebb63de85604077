"""Which route a request's model name selects, and which of the route's backends serves it.

Routes are looked up by name in one dict: the hot path never waits to learn a name. A route
configured without a name (the single-model shorthand without `GATEWAY_MODELS`) learns it from
its primary's engine through the background readiness probes (`note_health`); until then its
requests get the circuit's fast 503 with `Retry-After`, or the fallback.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

from backends.base import Health
from backends.errors import BackendUnavailable, NotFound, Overloaded
from gateway.proxy.guard import Guarded
from gateway.routes import RouteSpec
from gateway.shadow.leg import ShadowLeg

UNLEARNT_RETRY_AFTER = "1"  # seconds: about as long as the next readiness probe may take


class ModelRoute:
    """One route's backends and state: who serves it, its shadow, its cap in flight."""

    def __init__(
        self,
        spec: RouteSpec,
        backends: Mapping[str, Guarded],
        draw: Callable[[], float] = random.random,
    ) -> None:
        settings = spec.settings
        self.name = spec.name
        self.spec = spec
        self.primary = backends[settings.primary]
        self.canary = backends[settings.canary] if settings.canary else None
        self.fallback = backends[settings.fallback] if settings.fallback else None
        self._canary_share = settings.canary_percent / 100.0 if self.canary else 0.0
        self._draw = draw
        self.shadow: ShadowLeg | None = None  # set by the app once the leg is built
        self.limit = settings.max_concurrency
        self.active = 0  # requests in flight on this route, for `limit`

    @property
    def label(self) -> str:
        """The route's name as metrics and records know it ("" until learnt)."""
        return self.name or ""

    def serving(self, user: str | None) -> Guarded:
        """The primary, or the canary for its share of users (the same user, the same side);
        the fallback while the chosen backend's circuit is open. A route still learning its
        name never waits on its primary: the fallback serves, or a fast 503."""
        if self.name is None:
            return self._while_unlearnt()
        chosen = self.primary
        share = self._canary_share
        if self.canary is not None and share > 0.0 and canary_bucket(user, self._draw) < share:
            chosen = self.canary
        if self.fallback is not None and not chosen.available():
            return self.fallback
        return chosen

    def _while_unlearnt(self) -> Guarded:
        # Its primary did not answer its health check at start, so the fallback serves
        # whatever the circuit's state: a request let through would wait out its timeout.
        if self.fallback is not None:
            return self.fallback
        raise BackendUnavailable(
            f"backend '{self.primary.name}' has not said which model it serves yet",
            headers={"Retry-After": UNLEARNT_RETRY_AFTER},
        )

    def admit(self) -> None:
        """Counts a request in; 429 on this route only when it is at its cap."""
        if self.limit is not None and self.active >= self.limit:
            raise Overloaded(
                f"the model '{self.label}' is at its limit of {self.limit} requests in flight",
                headers={"Retry-After": "1"},
            )
        self.active += 1


class Router:
    """Every route by each of its public names, and the task aliases by name."""

    def __init__(self, routes: Sequence[ModelRoute], tasks: Mapping[str, ModelRoute]) -> None:
        self.routes = list(routes)
        self._by_name: dict[str, ModelRoute] = {n: r for r in self.routes for n in r.spec.names}
        self.tasks = dict(tasks)
        self._unlearnt = [route for route in self.routes if route.name is None]

    def route_for(self, model: str) -> ModelRoute:
        """The route that serves `model`: 404 for a name no route has."""
        route = self._by_name.get(model)
        if route is not None:
            return route
        if self._unlearnt:  # the shorthand route whose engine has not said its name yet
            return self._unlearnt[0]  # it serves with its fallback, or answers a fast 503
        raise NotFound(f"the model '{model}' does not exist", param="model", code="model_not_found")

    def note_health(self, name: str, health: Health) -> None:
        """A readiness probe's answer: a route still learning its name takes its primary's."""
        if not health.served_model:
            return
        for route in list(self._unlearnt):
            if route.primary.name == name:
                route.name = health.served_model
                self._by_name.setdefault(route.name, route)
                self._unlearnt.remove(route)
                if route.shadow is not None:
                    route.shadow.route = route.name

    def public_models(self) -> list[str]:
        return sorted(self._by_name)


def canary_bucket(user: str | None, draw: Callable[[], float] = random.random) -> float:
    """A user's fixed place in [0, 1), so a user stays on one side; anonymous requests draw."""
    if not user:
        return draw()
    digest = hashlib.blake2b(user.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
