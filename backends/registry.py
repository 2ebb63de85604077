"""The registry of backend kinds: a plain dict from `kind` to its settings and its adapter.

Settings import nothing optional, so every configuration validates on a base install. An
adapter is imported by name when a backend of its kind is built (as uvicorn names its protocols
"module:attribute"), so a kind whose extra is missing fails there, in one line naming the extra.
A new engine is one module with a settings class and a `create(name, settings)` factory, plus
one entry here and one member of `BackendSettings`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from backends.base import Backend
from backends.pool.stats import LocalStats, PoolStats
from backends.triton.settings import TritonSettings
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings

BackendSettings = Annotated[
    VllmSettings | TrtllmServeSettings | TrtllmGrpcSettings | TritonSettings,
    Field(discriminator="kind"),
]


@dataclass(frozen=True, slots=True)
class Kind:
    adapter: str  # "module:factory", imported when a backend of this kind is built
    extra: str | None = None  # the `pika-gateway[extra]` its imports need; None: the base install
    # The extra the gateway's own tokenising needs when the backend has a `model_dir`.
    tokenising_extra: str | None = None


KINDS: dict[str, Kind] = {
    "vllm": Kind("backends.vllm:create"),
    "trtllm-serve": Kind("backends.trtllm_serve:create", tokenising_extra="trtllm-serve"),
    "trtllm-grpc": Kind("backends.trtllm_grpc.adapter:create", extra="trtllm-grpc"),
    "triton": Kind("backends.triton.adapter:create", extra="triton"),
}
TOKENISING = "backends.prompting"  # what `tokenising_extra` brings in


class MissingExtra(Exception):
    """A configured kind's adapter needs a package this install lacks; the message says which
    `pip install` brings it."""


def factory(kind: str) -> Callable[[str, Any], Backend]:
    """The adapter's factory for `kind`; `MissingExtra` when its extra is not installed."""
    entry = KINDS[kind]
    module, _, attribute = entry.adapter.partition(":")
    loaded = _load(module, f"the '{kind}' backend kind", entry.extra)
    made: Callable[[str, Any], Backend] = getattr(loaded, attribute)
    return made


def check(backends: Iterable[tuple[str, BackendSettings]]) -> list[str]:
    """One line per configured backend whose adapter cannot be imported here."""
    problems = []
    for name, settings in backends:
        try:
            factory(settings.kind)
            extra = KINDS[settings.kind].tokenising_extra
            if extra is not None and settings.model_dir is not None:
                _load(TOKENISING, f"the '{settings.kind}' backend kind with model_dir", extra)
        except MissingExtra as exc:
            problems.append(f"backend '{name}': {exc}")
    return problems


def _load(module: str, what: str, extra: str | None) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if extra is None or (exc.name or "").split(".")[0] in ("backends", "gateway"):
            raise
        raise MissingExtra(
            f"{what} needs the '{extra}' extra ({exc.name} is not installed): "
            f"pip install 'pika-gateway[{extra}]'"
        ) from None


def create(name: str, settings: BackendSettings, stats: PoolStats | None = None) -> Backend:
    """Builds the adapter for one configured backend, or a replica pool of them when it has
    several endpoints (`stats`: where the pool counts). Call it inside the running event loop."""
    made = factory(settings.kind)
    if not settings.pooled:
        return made(name, settings)
    from backends.pool.pooled import PooledBackend

    return PooledBackend(name, settings, made, stats or LocalStats())
