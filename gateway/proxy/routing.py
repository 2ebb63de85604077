"""Which backend serves a request, and which model names clients may send."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from backends.base import Backend, Health
from backends.errors import BackendUnavailable, NotFound
from gateway.proxy.guard import Guarded


@dataclass(frozen=True, slots=True)
class Roles:
    """Which configured backend plays which part (GATEWAY_PRIMARY, _CANARY, _FALLBACK, ...)."""

    primary: str
    canary: str | None
    canary_percent: float  # share of users, 0 to 100
    fallback: str | None
    models: frozenset[str]  # the public names; empty: the primary's served name


class Router:
    """Maps public model names to the primary backend.

    With `GATEWAY_MODELS` unset the public name is the primary's served name, read from the
    engine when it first answers: clients keep the name they already send to vLLM.
    """

    def __init__(
        self,
        roles: Roles,
        backends: Mapping[str, Guarded],
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.backends = backends
        self.primary = backends[roles.primary]
        self.canary = backends[roles.canary] if roles.canary else None
        self.fallback = backends[roles.fallback] if roles.fallback else None
        self._canary_share = roles.canary_percent / 100.0 if self.canary else 0.0
        self._draw = draw
        self._configured = roles.models
        self._served: dict[str, str] = {}

    def serving(self, user: str | None) -> Guarded:
        """The primary, or the canary for its share of users (the same user, the same side);
        the fallback while the chosen backend's circuit is open."""
        chosen = self.primary
        share = self._canary_share
        if self.canary is not None and share > 0.0 and canary_bucket(user, self._draw) < share:
            chosen = self.canary
        if self.fallback is not None and not chosen.available():
            return self.fallback
        return chosen

    def note_health(self, name: str, health: Health) -> None:
        if health.served_model:
            self._served[name] = health.served_model

    async def public_models(self) -> list[str]:
        if self._configured:
            return sorted(self._configured)
        served = await self._primary_served()
        return [served]

    def knows(self, model: str) -> bool:
        """Whether `model` is served, if that is known without asking the engine."""
        if self._configured:
            return model in self._configured
        return model == self._served.get(self.primary.name)

    async def backend_for(self, model: str) -> Backend:
        if self.knows(model):
            return self.primary
        if not self._configured and model == await self._primary_served():
            return self.primary  # the engine asked once, the first time
        raise NotFound(f"the model '{model}' does not exist", param="model", code="model_not_found")

    async def _primary_served(self) -> str:
        served = self._served.get(self.primary.name)
        if served is None:
            health = await self.primary.health()
            self.note_health(self.primary.name, health)
            served = health.served_model
        if served is None:
            raise BackendUnavailable(
                f"backend '{self.primary.name}' has not said which model it serves: {health.detail}"
            )
        return served


def canary_bucket(user: str | None, draw: Callable[[], float] = random.random) -> float:
    """A user's fixed place in [0, 1), so a user stays on one side; anonymous requests draw."""
    if not user:
        return draw()
    digest = hashlib.blake2b(user.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64
