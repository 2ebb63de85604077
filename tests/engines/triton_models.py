"""Triton models with TensorRT-LLM's tensor interfaces, generating with HF transformers on CPU.

Three models are bound to one PyTriton server (see ``triton_engine``), all decoupled:

- ``ensemble``: TensorRT-LLM's ``inflight_batcher_llm/ensemble``. Batched interface (clients
  send ``[1, 1]`` shapes), ``max_tokens`` required, greedy unless ``top_k``/``top_p`` is given
  (``temperature`` alone does nothing; the seed defaults to 0, so sampling repeats), one
  ``end_id`` that defaults to the tokenizer's eos ``<|endoftext|>`` rather than ``<|end|>``,
  token-level ``stop_words`` kept in the output, the prompt echoed unless
  ``exclude_input_in_output``, and streamed ``text_output`` holding the decode of only the new
  token, so a character split across tokens arrives as U+FFFD. Guided decoding through
  ``guided_decoding_guide_type`` and ``guided_decoding_guide``, as with ``xgrammar`` (see below).
- ``tensorrt_llm_bls``: the same interface with ``accumulate_tokens=true``: each streamed
  ``text_output`` is the decode of every token so far.
- ``tensorrt_llm``: the LLM-API model (``llmapi/tensorrt_llm``), which TensorRT-LLM keeps after
  removing the two above in July 2026 (``backends/TENSORRT_LLM.md`` C); see ``triton_llmapi``.
  The gateway keeps supporting the legacy pair.

Tokenizing ``text_input``: as the real preprocessing model with its ``add_special_tokens``
parameter (``bind_models``' ``add_special_tokens``): the ``ensemble`` keeps TensorRT-LLM's default
(true, BOS added), the BLS is served as ``compose/legacy/trtllm/build_engine.sh`` fills it
(false: the text as it comes, for parity with vLLM's chat). The LLM-API model always adds
special tokens (its ``SamplingParams`` default; the real model has no input for it).

Generation, guided decoding and the test hooks (``[[force:TEXT]]``, ``[[fail:N]]``) are
``tiny_llm``'s.

Errors (legacy models): ``InvalidRequestError`` (bad or over-long input) is raised inside the
infer function, which PyTriton turns into an in-band Triton error whose text is the Python
traceback ending in the message. (``PyTritonUnrecoverableError`` would shut the whole server down.)

Where PyTriton makes it differ from the real server: the final flag always comes alone after the
last data response (so ``triton_final_response`` is false on every response a ``grpc.aio``
client sees, and the stream simply ends), each request must have batch size 1, the configs show
``backend: python``, and a client's cancellation never reaches the model, so a cancelled request
still runs to its end (tests watch the gRPC call instead).

Example (``TinyLlm`` from ``tiny_llm``)::

    triton = Triton(config=TritonConfig(grpc_port=8001))
    bind_models(triton, TinyLlm(model_dir), {"ensemble": True, "tensorrt_llm_bls": False, ...})
    triton.serve()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import numpy as np
from pytriton.model_config import ModelConfig
from pytriton.proxy.types import Request
from pytriton.triton import Triton

from tests.engines.tiny_llm import Guide, InvalidRequestError, Sampling, TinyLlm
from tests.engines.triton_io import Response
from tests.engines.triton_io import bytes_out as _bytes_out
from tests.engines.triton_io import check_length as _check_length
from tests.engines.triton_io import scalar as _scalar
from tests.engines.triton_io import single as _single
from tests.engines.triton_io import steps_async as _steps_async
from tests.engines.triton_io import strings as _strings
from tests.engines.triton_io import tensor as _tensor
from tests.engines.triton_io import text as _text
from tests.engines.triton_llmapi import LLMAPI_INPUTS, LLMAPI_OUTPUTS, LlmApiModel

_MAX_BATCH_SIZE = 8


@dataclass(frozen=True)
class _Job:
    """One parsed request: what to generate and what to send back."""

    prompt_ids: list[int]
    sampling: Sampling
    stream: bool
    exclude_input: bool
    outputs: frozenset[str]


class TrtllmTextModel:
    """``ensemble`` (per-token streamed text) or ``tensorrt_llm_bls`` (cumulative streamed text);
    ``add_special_tokens`` is the preprocessing model's parameter of that name."""

    def __init__(self, llm: TinyLlm, *, accumulate_tokens: bool, add_special_tokens: bool) -> None:
        self.llm = llm
        self.accumulate_tokens = accumulate_tokens
        self.add_special_tokens = add_special_tokens

    async def __call__(self, requests: list[Request]) -> AsyncIterator[list[Response]]:
        job = self._job(_single(requests))
        steps = _steps_async(self.llm.steps(job.prompt_ids, job.sampling))
        if not job.stream:
            ids = [step.token async for step in steps if step.token is not None]
            shown = ids if job.exclude_input else [*job.prompt_ids, *ids]
            # Like the C++ backend, num_output_tokens counts the echoed prompt too.
            yield [self._response(job, self.llm.decode(shown), len(shown))]
            return
        # Streaming never echoes the prompt: the executor sends only new tokens then.
        ids = []
        async for step in steps:
            new = [] if step.token is None else [step.token]
            ids += new
            text = self.llm.decode(ids if self.accumulate_tokens else new)
            yield [self._response(job, text, len(new))]

    def _job(self, request: Request) -> _Job:
        texts = request.data["text_input"]
        if texts.shape[0] != 1:
            raise InvalidRequestError("this test model serves batch size 1 only")
        prompt = _text(texts.reshape(-1)[0])
        prompt_ids = self.llm.encode(prompt, special=self.add_special_tokens)
        wanted = {
            name
            for name in ("num_input_tokens", "num_output_tokens")
            if _scalar(request, f"return_{name}")
        }
        return _Job(
            prompt_ids=prompt_ids,
            sampling=self._sampling(request, prompt, prompt_ids),
            stream=bool(_scalar(request, "stream")),
            exclude_input=bool(_scalar(request, "exclude_input_in_output")),
            outputs=frozenset(wanted),
        )

    def _sampling(self, request: Request, prompt: str, prompt_ids: list[int]) -> Sampling:
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None:
            raise InvalidRequestError("max_tokens is required")
        _check_length(prompt_ids, int(max_tokens))
        top_k = int(_scalar(request, "top_k") or 0)
        top_p = float(_scalar(request, "top_p") or 0.0)
        temperature = _scalar(request, "temperature")
        end_id = _scalar(request, "end_id")
        return Sampling(
            max_tokens=int(max_tokens),
            end_ids=frozenset([self.llm.eos_id if end_id is None else int(end_id)]),
            greedy=top_k == 1 or (top_k == 0 and top_p == 0.0) or temperature == 0.0,
            temperature=1.0 if temperature is None else float(temperature),
            top_k=top_k,
            top_p=top_p,
            seed=int(_scalar(request, "seed") or 0),
            min_tokens=int(_scalar(request, "min_tokens") or 0),
            repetition_penalty=float(_scalar(request, "repetition_penalty") or 1.0),
            presence_penalty=float(_scalar(request, "presence_penalty") or 0.0),
            frequency_penalty=float(_scalar(request, "frequency_penalty") or 0.0),
            stop_sequences=self._word_ids(request, "stop_words"),
            bad_sequences=self._word_ids(request, "bad_words"),
            forced=self.llm.forced_ids(prompt),
            fail_after=self.llm.fail_after(prompt),
            guide=self._guide(request),
        )

    def _guide(self, request: Request) -> Guide | None:
        kinds = _strings(request, "guided_decoding_guide_type")
        if not kinds:
            return None
        return self.llm.guide(kinds[0], "".join(_strings(request, "guided_decoding_guide")))

    def _word_ids(self, request: Request, name: str) -> tuple[tuple[int, ...], ...]:
        words = (self.llm.encode(word, special=False) for word in _strings(request, name))
        return tuple(tuple(ids) for ids in words if ids)

    def _response(self, job: _Job, text: str, output_tokens: int) -> Response:
        counts = {"num_input_tokens": len(job.prompt_ids), "num_output_tokens": output_tokens}
        response = {"text_output": _bytes_out(text, batched=True)}
        for name in job.outputs:
            response[name] = np.array([[counts[name]]], dtype=np.int32)
        return response


TRTLLM_INPUTS = (
    _tensor("text_input", bytes, optional=False),
    _tensor("max_tokens", np.int32, optional=False),
    *(_tensor(name, np.int32) for name in ("end_id", "pad_id", "top_k", "min_tokens")),
    *(
        _tensor(name, np.float32)
        for name in (
            "top_p",
            "temperature",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        )
    ),
    _tensor("seed", np.uint64),
    _tensor("stop_words", bytes, (-1,)),
    _tensor("bad_words", bytes, (-1,)),
    _tensor("guided_decoding_guide_type", bytes),
    _tensor("guided_decoding_guide", bytes),
    *(
        _tensor(name, np.bool_)
        for name in (
            "exclude_input_in_output",
            "stream",
            "return_num_input_tokens",
            "return_num_output_tokens",
        )
    ),
)
# PyTriton refuses optional outputs; a response simply leaves out the ones not asked for.
TRTLLM_OUTPUTS = (
    _tensor("text_output", bytes, (-1,), optional=False),
    _tensor("num_input_tokens", np.int32, optional=False),
    _tensor("num_output_tokens", np.int32, optional=False),
)


def bind_models(triton: Triton, llm: TinyLlm, add_special_tokens: Mapping[str, bool]) -> None:
    """Bind ``ensemble``, ``tensorrt_llm_bls`` and ``tensorrt_llm`` to a PyTriton server, each
    tokenizing with special tokens or not as `add_special_tokens` says."""
    # No dynamic batcher: each call then carries one request, whose responses stream alone.
    batched = ModelConfig(max_batch_size=_MAX_BATCH_SIZE, batcher=None, decoupled=True)
    for name, accumulate in (("ensemble", False), ("tensorrt_llm_bls", True)):
        special = add_special_tokens[name]
        model = TrtllmTextModel(llm, accumulate_tokens=accumulate, add_special_tokens=special)
        triton.bind(name, model, TRTLLM_INPUTS, TRTLLM_OUTPUTS, config=batched, strict=True)
    unbatched = ModelConfig(batching=False, decoupled=True)
    triton.bind(
        "tensorrt_llm",
        LlmApiModel(llm, add_special_tokens["tensorrt_llm"]),
        LLMAPI_INPUTS,
        LLMAPI_OUTPUTS,
        config=unbatched,
        strict=True,
    )
