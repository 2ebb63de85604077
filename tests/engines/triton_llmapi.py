"""The LLM-API Triton model ``tensorrt_llm`` (``triton_backend/all_models/llmapi/tensorrt_llm``),
the one Triton path TensorRT-LLM keeps, as ``backends/TENSORRT_LLM.md`` section C reads it from
upstream's ``config.pbtxt``, ``1/model.py`` and ``1/helpers.py``. ``TinyLlm`` generates.

Interface (C): no batch dim. ``text_input`` (STRING ``[-1]``) is required and only its element 0
is read; every other input is optional: ``streaming``, the ``sampling_param_*`` of the helpers'
mapping (``best_of``, ``temperature``, ``top_k``, ``top_p``, ``frequency_penalty``,
``presence_penalty``, ``max_tokens``, ``stop``, ``seed``, ``exclude_input_from_output``,
``return_perf_metrics``) and ``return_finish_reason``, ``return_stop_reason``,
``return_cumulative_logprob``. Nothing sets repetition_penalty, min_p, min_tokens, an end id,
guided decoding or ``add_special_tokens``.

Defaults (C, D): an omitted input is not passed to ``SamplingParams``, so the LLM API's defaults
hold: greedy when temperature, top_p and top_k are all omitted (and with temperature 0, top_p 0
or top_k 1), else temperature 1, top_p 1 and top_k 0 (the whole vocabulary); max_tokens 32;
penalties 0; best_of 1; ``exclude_input_from_output`` false; the prompt tokenized with special
tokens; every eos id of ``generation_config.json`` ends the answer.

Outputs (C): ``text_output`` always; ``finish_reason``, ``stop_reason`` and
``cumulative_logprob`` only when their ``return_*`` input is true, each the ``str()`` of the
LLM API's value in a string tensor, so ``"None"`` until it has one. No token counts. Streaming
sends the cumulative text at each step. Any failure, from reading the request to the last step,
is one error ``Error generating request: <e>``.

Read from upstream's code, not run (``backends/TENSORRT_LLM.md`` C): stop strings match as
token ids and their tokens leave the answer, with ``stop_reason`` the stop string; a
non-streamed answer with ``exclude_input_from_output`` false is the decode of the prompt's and
the answer's ids together (streamed ones never hold the prompt); ``cumulative_logprob`` is
``"None"``, as the model has no input to request log probs; best_of > 1 is refused for greedy
decoding and otherwise answers the first sequence (nothing ranks them without log probs).

Where PyTriton makes it differ from the real model: the error's text is the Python traceback
ending in ``GenerationError: Error generating request: <e>`` and carries no ``text_output``
(the real ``"N/A"`` never reaches a gRPC client either: Triton clears an error response's
outputs); ``cumulative_logprob`` is declared STRING where the real config says FP32 (PyTriton
would cast the string); ``sampling_param_return_perf_metrics`` is read but adds no metric
outputs; the ``stop`` (cancel), ``lora_*`` and ``image_url`` inputs are absent.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pytriton.model_config import Tensor
from pytriton.proxy.types import Request

from tests.engines.tiny_llm import InvalidRequestError, Sampling, TinyLlm
from tests.engines.triton_io import (
    Response,
    bytes_out,
    check_length,
    scalar,
    single,
    steps_async,
    strings,
    tensor,
    text,
)

# SamplingParams.max_tokens (D); newer code may deduce it instead (D, Uncertain 5).
DEFAULT_MAX_TOKENS = 32
REASONS = ("finish_reason", "stop_reason", "cumulative_logprob")

Stops = tuple[tuple[str, tuple[int, ...]], ...]  # (stop string, its token ids)


class GenerationError(RuntimeError):
    """How the real model answers any failure: ``Error generating request: <e>`` (C)."""


@dataclass(frozen=True)
class _Job:
    """One parsed request: what to generate and what to send back."""

    prompt_ids: list[int]
    sampling: Sampling
    streaming: bool
    exclude_input: bool
    stops: Stops
    outputs: frozenset[str]  # the REASONS asked for


class LlmApiModel:
    """The LLM-API ``tensorrt_llm``; ``add_special_tokens`` is how it tokenizes ``text_input``
    (true for the real model: it has no input to say otherwise)."""

    def __init__(self, llm: TinyLlm, add_special_tokens: bool) -> None:
        self.llm = llm
        self.add_special_tokens = add_special_tokens

    async def __call__(self, requests: list[Request]) -> AsyncIterator[list[Response]]:
        try:
            async for response in self._generate(single(requests)):
                yield [response]
        except Exception as exc:  # one error response, whatever failed (model.py, C)
            raise GenerationError(f"Error generating request: {exc}") from None

    async def _generate(self, request: Request) -> AsyncIterator[Response]:
        job = self._job(request)
        ids: list[int] = []
        finish: str | None = None
        stop: str | None = None
        async for step in steps_async(self.llm.steps(job.prompt_ids, job.sampling)):
            if step.token is not None:
                ids.append(step.token)
                if step.finish == "stop":
                    ids, stop = _without_stop(ids, job.stops)
            finish = step.finish
            if job.streaming:  # the LLM API's output.text: all text so far (C)
                yield _response(job, self.llm.decode(ids), finish, stop)
        if not job.streaming:
            shown = ids if job.exclude_input else [*job.prompt_ids, *ids]
            yield _response(job, self.llm.decode(shown), finish, stop)

    def _job(self, request: Request) -> _Job:
        texts = request.data["text_input"]
        if texts.ndim > 1:
            raise InvalidRequestError(
                "The current implementation only supports text_input being a 1D tensor."
            )
        prompt = text(texts[0])  # only element 0: one prompt per request (C)
        prompt_ids = self.llm.encode(prompt, special=self.add_special_tokens)
        # Stop strings are tokenized without special tokens (D).
        encoded = ((stop, tuple(self.llm.encode(stop, special=False)))
                   for stop in strings(request, "sampling_param_stop"))  # fmt: skip
        stops = tuple((stop, ids) for stop, ids in encoded if ids)
        scalar(request, "sampling_param_return_perf_metrics")  # read, as the real model does
        return _Job(
            prompt_ids=prompt_ids,
            sampling=self._sampling(request, prompt, prompt_ids, stops),
            streaming=bool(scalar(request, "streaming")),
            exclude_input=bool(scalar(request, "sampling_param_exclude_input_from_output")),
            stops=stops,
            outputs=frozenset(name for name in REASONS if scalar(request, f"return_{name}")),
        )

    def _sampling(self, request: Request, prompt: str, prompt_ids: list[int], stops: Stops
                  ) -> Sampling:  # fmt: skip
        def given(name: str) -> Any:
            return scalar(request, f"sampling_param_{name}")

        max_tokens = given("max_tokens")
        max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
        check_length(prompt_ids, max_tokens)
        temperature, top_k, top_p = given("temperature"), given("top_k"), given("top_p")
        _check_best_of(given("best_of"), top_k, top_p)
        seed = given("seed")
        unset = temperature is None and top_k is None and top_p is None
        return Sampling(
            max_tokens=max_tokens,
            end_ids=self.llm.generation_eos_ids,
            greedy=unset or temperature == 0.0 or top_p == 0.0 or top_k == 1,  # D
            temperature=1.0 if temperature is None else float(temperature),
            top_k=0 if top_k is None else int(top_k),
            top_p=1.0 if top_p is None else float(top_p),
            seed=secrets.randbits(63) if seed is None else int(seed),
            presence_penalty=float(given("presence_penalty") or 0.0),
            frequency_penalty=float(given("frequency_penalty") or 0.0),
            stop_sequences=tuple(ids for _, ids in stops),
            forced=self.llm.forced_ids(prompt),
            fail_after=self.llm.fail_after(prompt),
        )


def _check_best_of(best_of: Any, top_k: Any, top_p: Any) -> None:
    """``SamplingParams._validate`` with n 1 (A.2): its greedy test ignores temperature."""
    value = 1 if best_of is None else int(best_of)  # the helpers' default (C)
    if value < 1:
        raise InvalidRequestError(f"best_of ({value}) cannot be less than n (1)")
    greedy = top_k in (None, 1) and top_p in (None, 0.0)
    if value > 1 and greedy:
        raise InvalidRequestError(
            "Greedy decoding in the LLM API does not allow multiple returns. Please set to "
            f"best_of=1, got best_of={value}."
        )


def _without_stop(ids: list[int], stops: Stops) -> tuple[list[int], str | None]:
    """The answer without the stop string's tokens that ended it, and that string: the LLM API
    keeps them only with ``include_stop_str_in_output``, which has no input here (C)."""
    for stop, stop_ids in stops:
        if tuple(ids[-len(stop_ids) :]) == stop_ids:
            return ids[: -len(stop_ids)], stop
    return ids, None


def _response(job: _Job, output: str, finish: str | None, stop: str | None) -> Response:
    response = {"text_output": bytes_out(output, batched=False)}
    values = {"finish_reason": finish, "stop_reason": stop, "cumulative_logprob": None}
    for name in job.outputs:
        response[name] = np.array([str(values[name]).encode()], dtype=object)
    return response


def _flags(names: Sequence[str]) -> tuple[Tensor, ...]:
    return tuple(tensor(name, np.bool_) for name in names)


# config.pbtxt's inputs and dims (C), without the cancel, LoRA and image inputs.
LLMAPI_INPUTS = (
    tensor("text_input", bytes, (-1,), optional=False),
    tensor("streaming", np.bool_),
    tensor("sampling_param_best_of", np.int32),
    tensor("sampling_param_temperature", np.float32),
    tensor("sampling_param_top_k", np.int32),
    tensor("sampling_param_top_p", np.float32),
    tensor("sampling_param_frequency_penalty", np.float32),
    tensor("sampling_param_presence_penalty", np.float32),
    tensor("sampling_param_max_tokens", np.int32),
    tensor("sampling_param_stop", bytes, (-1,)),
    tensor("sampling_param_seed", np.uint64),
    *_flags(("sampling_param_exclude_input_from_output", "sampling_param_return_perf_metrics")),
    *_flags([f"return_{name}" for name in REASONS]),
)
# PyTriton refuses optional outputs; a response simply leaves out the ones not asked for.
LLMAPI_OUTPUTS = (
    tensor("text_output", bytes, (-1,), optional=False),
    *(tensor(name, bytes, (-1,), optional=False) for name in REASONS),
)
