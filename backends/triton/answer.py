"""Reading a TensorRT-LLM model's responses into one OpenAI answer: text, usage, finish reason,
and the one line of an engine's error that a client may see.

Pure: the adapter feeds it what Triton sent; it tests without servers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonclient.grpc import InferResult

from backends.text_stream import CumulativeText, StopStrings
from backends.triton.interface import ModelInterface
from backends.triton.request import Generation


@dataclass(frozen=True, slots=True)
class Piece:
    """One response of the engine."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    final: bool


class Answer:
    """Collects an engine's responses into OpenAI text, usage and finish reason."""

    def __init__(self, interface: ModelInterface, plan: Generation, prompt_tokens: int | None):
        self.plan = plan
        self.parts: list[str] = []
        self.input_tokens = prompt_tokens
        self.output_tokens: int | None = None
        self._cumulative = CumulativeText() if interface.cumulative else None
        self._stops = StopStrings(plan.stops)
        self._echo = None if interface.has("exclude_input") else plan.prompt
        self._deltas = 0
        self._counted = 0
        self._snapshot: str | None = None
        self._engine_reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    def feed(self, piece: Piece) -> str:
        text = piece.text
        if self._echo is not None and text.startswith(self._echo):
            text, self._echo = text[len(self._echo) :], None
        if self._cumulative is not None:
            self._snapshot = text
            text = self._cumulative.delta(text, final=piece.final)
        elif piece.text or not piece.final:
            self._deltas += 1  # one response per generated token in delta mode
        if piece.input_tokens is not None:
            self.input_tokens = piece.input_tokens
        if piece.output_tokens is not None and self.plan.stream:
            # Streamed responses count only their own new tokens.
            self._counted += piece.output_tokens
            self.output_tokens = self._counted
        elif piece.output_tokens is not None:
            self.output_tokens = piece.output_tokens
        elif self._cumulative is None and self.plan.stream:
            self.output_tokens = self._deltas
        self._engine_reason = piece.finish_reason or self._engine_reason
        visible = self._stops.feed(text)
        self.parts.append(visible)
        return visible

    def feed_rest(self) -> str:
        rest = self._stops.flush()
        if self._snapshot is not None:
            # An engine that cut a stop string itself may end shorter than an earlier snapshot;
            # held-back text beyond its final answer was never part of the answer.
            shown = sum(len(part) for part in self.parts)
            rest = rest[: max(0, len(self._snapshot) - shown)]
        self.parts.append(rest)
        return rest

    def finish_reason(self) -> str:
        if self._stops.stopped:
            return "stop"
        if self._engine_reason in ("stop", "length"):
            return self._engine_reason
        if self.output_tokens is not None and self.output_tokens >= self.plan.max_tokens:
            return "length"
        return "stop"


def piece_of(result: InferResult, final: bool) -> Piece:
    return Piece(
        text=_text(result, "text_output"),
        input_tokens=_int(result, "num_input_tokens"),
        output_tokens=_int(result, "num_output_tokens"),
        finish_reason=_reason(result),
        final=final,
    )


def _reason(result: InferResult) -> str | None:
    """The engine's finish reason: the LLM-API model sends `str()` of the LLM API's, so "None"
    until it has one (backends/TENSORRT_LLM.md C)."""
    reason = _text(result, "finish_reason")
    return None if reason in ("", "None") else reason


def _text(result: InferResult, name: str) -> str:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        return ""
    value = array.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _int(result: InferResult, name: str) -> int | None:
    array = result.as_numpy(name)
    if array is None or array.size == 0:
        return None
    return int(array.reshape(-1)[0])


ERROR_SUMMARY_CHARS = 200
_TRACEBACK = "Traceback (most recent call last):"
_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")  # "package.module." of a class
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def error_summary(message: str) -> str:
    r"""The line of an engine's error a client may see: no traceback, no stack, bounded.

    Python backends (PyTriton, BLS) send the whole traceback: the exception's own line is the
    first one after the last traceback's indented frames. C++ errors put their stack after the
    first line. Later lines go too, since a message may quote the request at length.

    >>> error_summary('Traceback (most recent call last):\n  File "m.py", line 1, in f\n'
    ...               '    g()\npkg.mod.EngineError: out of blocks\nprompt text')
    'EngineError: out of blocks'
    """
    lines = message.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(_TRACEBACK)]
    if starts:
        lines = [line for line in lines[starts[-1] + 1 :] if line and not line[0].isspace()]
    first = next((line.strip() for line in lines if line.strip()), "")
    first = _UNPRINTABLE.sub(" ", _QUALIFIED.sub("", first))
    if len(first) > ERROR_SUMMARY_CHARS:
        first = first[: ERROR_SUMMARY_CHARS - 1].rstrip() + "…"
    return first or "no detail given"


def is_final(result: InferResult) -> bool:
    parameters = result.get_response().parameters
    return "triton_final_response" in parameters and bool(
        parameters["triton_final_response"].bool_param
    )
