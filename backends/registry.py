"""The registry of backend kinds: a plain dict from `kind` to its factory.

A new engine is one module with a settings class and a `create(name, settings)` factory, plus
one entry here and one member of `BackendSettings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from backends import trtllm_serve, vllm
from backends.base import Backend
from backends.triton import adapter as triton

BackendSettings = Annotated[
    vllm.VllmSettings | trtllm_serve.TrtllmServeSettings | triton.TritonSettings,
    Field(discriminator="kind"),
]

FACTORIES: dict[str, Callable[[str, Any], Backend]] = {
    "vllm": vllm.create,
    "trtllm-serve": trtllm_serve.create,
    "triton": triton.create,
}


def create(name: str, settings: BackendSettings) -> Backend:
    """Builds the adapter for one configured backend. Call it inside the running event loop."""
    return FACTORIES[settings.kind](name, settings)
