"""Conformance probes: a small synthetic suite each backend runs through its adapter, at start
and every `GATEWAY_PROBE_CONFORMANCE_INTERVAL`, because an engine can accept a request and not
honour it (trtllm-serve drops `response_format` without a guided-decoding backend and answers
200; backends/TENSORRT_LLM.md, A.3).

Each check says `pass`, `fail` (the engine accepted and did otherwise) or `refused` (it said
no: a 4xx), with a one-line detail. The prompts are the gateway's own, never a client's.

Example::

    results = await run_probes(backend)
    [r.check for r in results if r.outcome == "fail"]     # ["constraint"]
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson

from backends.base import Backend, Route, UpstreamRequest
from backends.errors import GatewayError, UpstreamRejected
from backends.values import value_class

Outcome = Literal["pass", "fail", "refused", "error"]
CHECKS = ("constraint", "stop", "max_tokens", "seed", "vietnamese_stream")
# Options no model would write by chance, so an answer in them shows the constraint held.
CHOICES = ("qz7", "xj9")
ASK = [{"role": "user", "content": "Pika ơi, hôm nay con học được gì? Kể cho Pika nghe nhé."}]
PROBE_MODEL = "conformance-probe"
log = logging.getLogger("gateway.probes")


@value_class
class ProbeResult:
    backend: str
    check: str
    outcome: Outcome
    detail: str
    at: float  # unix seconds

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"


def request(tag: str, stream: bool = False, **fields: Any) -> UpstreamRequest:
    payload = {"model": PROBE_MODEL, "messages": ASK, **fields, "stream": stream}
    return UpstreamRequest(
        Route.CHAT, orjson.dumps(payload), payload, PROBE_MODEL, f"probe-{tag}", stream
    )


async def answer(backend: Backend, tag: str, **fields: Any) -> dict[str, Any]:
    completion = await backend.complete(request(tag, **fields))
    parsed = completion.answer if completion.answer is not None else orjson.loads(completion.body)
    return dict(parsed)


def text_of(answer: Mapping[str, Any]) -> str:
    return str(answer["choices"][0]["message"].get("content") or "")


async def constraint(backend: Backend) -> tuple[Outcome, str]:
    """A choice of two made-up words, sampled three times: each answer must be one of them."""
    outside = []
    for seed in (1, 2, 3):
        got = text_of(
            await answer(
                backend, "constraint", temperature=1.0, seed=seed, max_tokens=8,
                structured_outputs={"choice": list(CHOICES)},
            )
        )  # fmt: skip
        if got not in CHOICES:
            outside.append(got[:20])
    if outside:
        return "fail", f"accepted a choice of {list(CHOICES)} and answered {outside!r}"
    return "pass", f"3 sampled answers within {list(CHOICES)}"


async def stop(backend: Backend) -> tuple[Outcome, str]:
    full = text_of(await answer(backend, "stop-free", temperature=0, max_tokens=16))
    if len(full) < 8:
        return "pass", f"greedy answer too short to place a stop in ({len(full)} characters)"
    word = full[4:7]
    cut = await answer(backend, "stop", temperature=0, max_tokens=16, stop=[word])
    expected = full[: full.index(word)]
    if text_of(cut) != expected:
        return (
            "fail",
            f"stop {word!r} not applied: {len(text_of(cut))} characters, not {len(expected)}",
        )
    return "pass", f"cut before {word!r}"


async def max_tokens(backend: Backend) -> tuple[Outcome, str]:
    got = await answer(backend, "max-tokens", temperature=0, max_tokens=2)
    used = (got.get("usage") or {}).get("completion_tokens")
    if used is None:
        return "fail", "no usage to judge by"
    if used > 2:
        return "fail", f"wrote {used} tokens for max_tokens 2"
    return "pass", f"{used} tokens for max_tokens 2"


async def seed(backend: Backend) -> tuple[Outcome, str]:
    sampled = [
        text_of(await answer(backend, f"seed-{n}", temperature=1.0, seed=4242, max_tokens=12))
        for n in (1, 2)
    ]
    if sampled[0] != sampled[1]:
        return "fail", "seed 4242 gave two different answers"
    return "pass", "seed 4242 gave the same answer twice"


async def vietnamese_stream(backend: Backend) -> tuple[Outcome, str]:
    """Greedy, streamed and not: the same text, with no character broken across chunks."""
    whole = text_of(await answer(backend, "vi-whole", temperature=0, max_tokens=24))
    events = await backend.stream(request("vi-stream", True, temperature=0, max_tokens=24))
    parts: list[str] = []
    try:
        async for chunk in events:
            parts += _deltas(chunk)
    finally:
        await events.aclose()
    streamed = "".join(parts)
    if streamed != whole:  # a character split over two chunks arrives as U+FFFD twice
        return "fail", f"streamed text differs from the answer ({len(streamed)} vs {len(whole)})"
    return "pass", f"{len(parts)} chunks, {len(whole)} characters intact"


def _deltas(chunk: bytes) -> list[str]:
    found = []
    for line in chunk.split(b"\n"):
        if line.startswith(b"data: {"):
            event = orjson.loads(line[6:])
            for choice in event.get("choices") or ():
                found.append((choice.get("delta") or {}).get("content") or "")
    return found


SUITE: dict[str, Callable[[Backend], Awaitable[tuple[Outcome, str]]]] = {
    "constraint": constraint,
    "stop": stop,
    "max_tokens": max_tokens,
    "seed": seed,
    "vietnamese_stream": vietnamese_stream,
}


async def run_probes(backend: Backend) -> list[ProbeResult]:
    """Every check on one backend; a check that cannot run says why, and the rest still run."""
    results = []
    for check, probe in SUITE.items():
        try:
            outcome, detail = await probe(backend)
        except UpstreamRejected as exc:
            outcome, detail = "refused", f"{exc.status_code}: {exc.message[:160]}"
        except GatewayError as exc:
            # A 400 of the gateway's own (a field this kind cannot honour) is a refusal too.
            refused = 400 <= exc.status_code < 500
            outcome, detail = ("refused" if refused else "error"), exc.message[:160]
        results.append(ProbeResult(backend.name, check, outcome, detail, time.time()))
    return results


class Conformance:
    """The latest probe results of each backend, as the probes find them."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, ProbeResult]] = {}

    def record(self, results: list[ProbeResult]) -> None:
        for result in results:
            self.results.setdefault(result.backend, {})[result.check] = result

    def ignores_constraints(self, backend: str) -> ProbeResult | None:
        """The failed constraint probe of `backend`: it accepted a constraint and ignored it."""
        result = self.results.get(backend, {}).get("constraint")
        return result if result is not None and result.outcome == "fail" else None

    def detail(self, backend: str) -> dict[str, dict[str, str]]:
        """For `/ready`: each check's outcome and why."""
        return {
            check: {"outcome": result.outcome, "detail": result.detail}
            for check, result in self.results.get(backend, {}).items()
        }


class ProbeSink(Protocol):
    async def write_probes(self, results: Sequence[ProbeResult]) -> None: ...


async def conform(
    backends: Mapping[str, Backend], conformance: Conformance, sink: ProbeSink, interval: float
) -> None:
    """Probes every backend now and every `interval` seconds; results go to `conformance`
    (for `/ready`, the metrics and task aliases) and to the records store (for the report)."""
    while True:
        for backend in backends.values():
            try:
                results = await run_probes(backend)
                conformance.record(results)
                await sink.write_probes(results)
            except Exception as exc:  # a probe must never end the loop
                log.warning("conformance probe of %s failed: %s", backend.name, type(exc).__name__)
        await asyncio.sleep(interval)
