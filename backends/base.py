"""The `Backend` protocol every engine adapter implements, and the values it exchanges.

An adapter is one module with one class that satisfies `Backend` structurally (no base class)
and a factory registered by its `kind` in `backends.registry`. Adapters raise only the errors of
`backends.errors`, translating their transport's errors at their own boundary.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends.sampling import Sampling
from backends.values import value_class


class Route(enum.Enum):
    """The OpenAI operations a backend serves, by their public path."""

    CHAT = "/v1/chat/completions"
    COMPLETIONS = "/v1/completions"

    @property
    def path(self) -> str:
        return self.value


@value_class
class UpstreamRequest:
    """One client request, validated, as handed to a backend.

    `raw` is the client's JSON body exactly as received: adapters that can forward it untouched
    (the OpenAI-over-HTTP engines) do so; `payload` is the same body parsed, for adapters that
    must translate it (Triton) or change a field (the served model name).
    """

    route: Route
    raw: bytes
    payload: Mapping[str, Any]
    public_model: str
    request_id: str
    stream: bool
    # Asked for a shadowed request: the token ids the engine read and wrote, where it can say
    # (`Completion.ids`, `EventStream.ids`); the client's answer stays as it would be without.
    token_ids: bool = False

    def tagged(self, tag: str) -> UpstreamRequest:
        """The same request under the id `<request_id>-<tag>` (a shadow or noise call)."""
        # Built directly, every field: dataclasses.replace costs several times as much, and this
        # runs on every shadow call (benchmarks/README.md, "Figures behind the code's choices").
        return UpstreamRequest(
            self.route, self.raw, self.payload, self.public_model,
            f"{self.request_id}-{tag}", self.stream, self.token_ids,
        )  # fmt: skip

    def with_token_ids(self) -> UpstreamRequest:
        return UpstreamRequest(
            self.route, self.raw, self.payload, self.public_model, self.request_id,
            self.stream, token_ids=True,
        )  # fmt: skip


@dataclass(slots=True)
class TokenIds:
    """The token ids of one answer: the prompt the engine read and what it generated. None
    where the engine does not say (and the gateway did not send them itself)."""

    prompt: tuple[int, ...] | None = None
    output: list[int] | None = None


@value_class
class Completion:
    """A finished non-streaming answer: the OpenAI JSON body the client receives."""

    body: bytes
    # The body parsed, when the adapter parsed it anyway: a shadowed pair's legs are read from
    # it (`gateway.shadow.legs.from_body`) instead of parsing the body again.
    answer: dict[str, Any] | None = None
    ids: TokenIds | None = None  # when the request asked for `token_ids`
    endpoint: str | None = None  # which endpoint of a replica pool answered (backends.pool)


@dataclass(frozen=True, slots=True)
class Health:
    """A backend's readiness as its engine reports it."""

    ready: bool
    detail: str = ""
    served_model: str | None = None


class EventStream(Protocol):
    """Server-sent events from an opened stream: each item is one or more whole events. `ids`
    fills as the events pass when the request asked for `token_ids`, else stays None;
    `endpoint` names the endpoint of a replica pool that streams it (None: not a pool)."""

    ids: TokenIds | None
    endpoint: str | None

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    """An inference engine behind the gateway.

    Example::

        backend = registry.create("vllm", VllmSettings(url="http://127.0.0.1:8000"))
        completion = await backend.complete(request)
        events = await backend.stream(request)  # raises before the first byte, or iterates
        async for chunk in events:
            ...
        await backend.close()
    """

    name: str

    def sampling(self, request: UpstreamRequest) -> Sampling:
        """The sampling parameters the engine runs `request` with (`backends.sampling`)."""
        ...

    async def complete(self, request: UpstreamRequest) -> Completion: ...

    async def stream(self, request: UpstreamRequest) -> EventStream: ...

    async def health(self) -> Health: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelCard:
    """One entry of `/v1/models`."""

    id: str
    owned_by: str = "pika-gateway"
    backends: tuple[str, ...] = field(default=())
