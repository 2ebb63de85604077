"""``TrtllmService`` as upstream's SMG servicer implements it, generating with ``TinyLlm``.

``trtllm_grpc_engine`` serves it; the facts it follows, and where it departs from them, are in
that module's docstring. Here: the request mapping (``Job.of``) and the RPCs.

Errors, as upstream's servicer raises them: a ``ValueError`` (``InvalidRequestError`` included)
aborts the call with INVALID_ARGUMENT, any other exception with INTERNAL, both with ``str(e)``.
What this test engine cannot do (beam search, n > 1, logprobs, logits, LoRA, images, an
embedding bias, EBNF and structural-tag guides) is a ``NotImplementedError``, which aborts with
UNIMPLEMENTED, so a test never mistakes a stand-in gap for upstream's behaviour.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from smg_grpc_proto.generated import (  # ships no py.typed
    trtllm_service_pb2 as pb2,
)
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as pb2_grpc

from tests.engines.tiny_llm import Guide, Sampling, TinyLlm

MAX_INPUT_LEN = 1024  # the default; the engine's `--max-input-len` sets it, as `max_input_len`
MAX_SEQ_LEN = 2048
STANDIN_VERSION = "0+tiny-llm"  # GetServerInfo's version: not a TensorRT-LLM release

_GUIDES = pb2.GuidedDecodingParams
_GUIDE_KINDS = {
    _GUIDES.GUIDE_TYPE_JSON: "json",
    _GUIDES.GUIDE_TYPE_JSON_SCHEMA: "json_schema",
    _GUIDES.GUIDE_TYPE_REGEX: "regex",
}


@dataclass(frozen=True)
class Job:
    """One Generate request in the engine's terms: prompt ids, sampling, and how stops end."""

    request_id: str
    prompt_ids: list[int]
    sampling: Sampling
    streaming: bool
    stops: tuple[tuple[int | str, tuple[int, ...]], ...]  # (stop reason, its ids), in order
    keep_stop: bool

    @classmethod
    def of(
        cls, request: Any, llm: TinyLlm, *, guided_decoding: bool,
        max_input_len: int = MAX_INPUT_LEN,
    ) -> Job:  # fmt: skip
        """Map a GenerateRequest as upstream's ``create_sampling_params_from_proto`` and
        ``SamplingParams._setup`` do; raises ValueError or NotImplementedError."""
        prompt_ids = list(request.tokenized.input_token_ids)
        _check_prompt(prompt_ids, request.max_tokens, len(llm.tokenizer), max_input_len)
        _check_supported(request, llm.tokenizer.vocab_size)
        config = request.sampling_config
        # Upstream materialises these three when absent; so the default is sampling, not greedy.
        temperature = config.temperature if config.HasField("temperature") else 1.0
        top_p = config.top_p if config.HasField("top_p") else 1.0
        top_k = config.top_k if config.HasField("top_k") else 0  # 0: the whole vocabulary
        min_p = config.min_p if config.HasField("min_p") else 0.0
        stops = (
            *((token, (token,)) for token in request.stop_token_ids),
            *((text, tuple(llm.encode(text, special=False))) for text in request.stop),
        )
        stops = tuple((reason, ids) for reason, ids in stops if ids)
        # End ids as `_setup` resolves them (tokenizer eos) plus generation_config's eos ids;
        # a requested stop token stays a stop token, so that it is reported as matched.
        eos = set() if request.ignore_eos else {llm.eos_id, *llm.generation_eos_ids}
        bad: list[tuple[int, ...]] = [(token,) for token in request.bad_token_ids]
        bad += [tuple(llm.encode(text, special=False)) for text in request.bad]
        prompt = llm.decode(prompt_ids)
        sampling = Sampling(
            max_tokens=request.max_tokens,
            end_ids=frozenset(eos - set(request.stop_token_ids)),
            greedy=temperature == 0.0 or top_p == 0.0 or top_k == 1 or min_p == 1.0,
            temperature=temperature,
            top_k=max(top_k, 0),
            top_p=top_p,
            seed=config.seed if config.HasField("seed") else secrets.randbits(63),
            min_tokens=config.min_tokens if config.HasField("min_tokens") else 0,
            repetition_penalty=_given(config, "repetition_penalty", 1.0),
            presence_penalty=_given(config, "presence_penalty", 0.0),
            frequency_penalty=_given(config, "frequency_penalty", 0.0),
            stop_sequences=tuple(ids for _, ids in stops),
            bad_sequences=tuple(ids for ids in bad if ids),
            forced=llm.forced_ids(prompt),
            fail_after=llm.fail_after(prompt),
            guide=_guide(request, llm) if guided_decoding else None,
        )
        return cls(
            request.request_id,
            prompt_ids,
            sampling,
            request.streaming,
            stops,
            request.include_stop_token_in_output,
        )

    def matched_stop(self, tokens: Sequence[int]) -> tuple[int | str, int]:
        """The first stop (token ids before strings) that ends `tokens`, and its length."""
        for reason, ids in self.stops:
            if tuple(tokens[len(tokens) - len(ids) :]) == ids:
                return reason, len(ids)
        raise AssertionError(f"no stop ends {list(tokens)}")  # TinyLlm stopped on one of them


def _given(config: Any, name: str, default: float) -> float:
    return float(getattr(config, name)) if config.HasField(name) else default


def _check_prompt(prompt_ids: list[int], max_tokens: int, vocab: int, max_input_len: int) -> None:
    if not prompt_ids:
        raise ValueError("Missing tokenized input: input_token_ids is empty")
    if max(prompt_ids) >= vocab:
        raise ValueError(f"Token ID out of range: {max(prompt_ids)} >= vocab size {vocab}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if len(prompt_ids) > max_input_len:
        raise ValueError(f"Prompt length {len(prompt_ids)} exceeds max_input_len {max_input_len}")
    if len(prompt_ids) + max_tokens > MAX_SEQ_LEN:
        raise ValueError(
            f"Prompt length + max_tokens ({len(prompt_ids)} + {max_tokens}) exceeds "
            f"max_seq_len ({MAX_SEQ_LEN})"
        )


def _check_supported(request: Any, vocab_size: int) -> None:
    config, output = request.sampling_config, request.output_config
    bias = len(request.embedding_bias)
    if bias and bias != vocab_size:  # upstream's own check and message
        raise ValueError(f"embedding_bias length ({bias}) must match vocab_size ({vocab_size})")
    gaps = {
        "beam search": config.beam_width > 1,
        "num_return_sequences > 1": config.num_return_sequences > 1,
        "logprobs": output.HasField("logprobs") or output.HasField("prompt_logprobs"),
        "logits": output.return_context_logits or output.return_generation_logits,
        "LoRA": request.HasField("lora_config") and request.lora_config.task_id != 0,
        "images": len(request.multimodal_input.image_data) > 0,
        "embedding_bias": bias > 0,
    }
    missing = [name for name, asked in gaps.items() if asked]
    if missing:
        raise NotImplementedError(f"this test engine does not support {', '.join(missing)}")


def _guide(request: Any, llm: TinyLlm) -> Guide | None:
    """Upstream applies a guide only when its text is non-empty; JSON ignores the text."""
    params = request.guided_decoding
    if not request.HasField("guided_decoding") or not params.guide:
        return None
    if params.guide_type == _GUIDES.GUIDE_TYPE_UNSPECIFIED:
        return None
    kind = _GUIDE_KINDS.get(params.guide_type)
    if kind is None:
        name = _GUIDES.GuideType.Name(params.guide_type)
        raise NotImplementedError(f"this test engine cannot guide by {name}")
    return llm.guide(kind, params.guide)


@dataclass
class _Running:
    aborted: asyncio.Event = field(default_factory=asyncio.Event)


class TrtllmServicer(pb2_grpc.TrtllmServiceServicer):  # type: ignore[misc]  # an Any base
    """The SMG servicer's RPCs over one ``TinyLlm``; GetTokenizer and SubscribeKvEvents are
    left to the generated base (UNIMPLEMENTED), as upstream leaves them."""

    def __init__(
        self, llm: TinyLlm, *, model_id: str, guided_decoding: bool,
        max_input_len: int = MAX_INPUT_LEN,
    ) -> None:  # fmt: skip
        self.llm = llm
        self.model_id = model_id
        self.guided_decoding = guided_decoding
        self.max_input_len = max_input_len
        self._running: dict[str, _Running] = {}

    async def Generate(self, request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            if not request.HasField("tokenized"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Missing tokenized input")
            job = Job.of(
                request, self.llm, guided_decoding=self.guided_decoding,
                max_input_len=self.max_input_len,
            )  # fmt: skip
            async for response in self._generate(job):
                yield response
        except grpc.aio.AbortError:
            raise
        except NotImplementedError as exc:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(exc))
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))

    async def _generate(self, job: Job) -> AsyncIterator[Any]:
        run = self._running[job.request_id] = _Running()
        steps = self.llm.steps(job.prompt_ids, job.sampling)
        tokens: list[int] = []
        sent, finish = 0, "cancelled"  # what an Abort leaves, as upstream's cancelled result
        matched: int | str | None = None
        try:
            while not run.aborted.is_set():
                # A worker thread per step keeps the loop serving Abort and other calls; a
                # cancelled call (client gone) leaves it at this await, ending generation.
                step = await asyncio.to_thread(next, steps)
                if run.aborted.is_set():
                    break
                tokens += [] if step.token is None else [step.token]
                if step.finish == "stop" and step.token is not None:
                    matched, length = job.matched_stop(tokens)
                    if not job.keep_stop:
                        del tokens[len(tokens) - length :]
                if job.streaming and tokens[sent:]:
                    yield self._chunk(job, tokens[sent:], len(tokens))
                    sent = len(tokens)
                if step.finish is not None:
                    finish = step.finish
                    break
        finally:
            if self._running.get(job.request_id) is run:
                del self._running[job.request_id]
        yield self._complete(job, tokens, finish, matched)

    def _chunk(self, job: Job, new: list[int], total: int) -> Any:
        chunk = pb2.GenerateStreamChunk(
            token_ids=new, prompt_tokens=len(job.prompt_ids), completion_tokens=total
        )
        return pb2.GenerateResponse(request_id=job.request_id, chunk=chunk)

    def _complete(self, job: Job, tokens: list[int], finish: str, matched: int | str | None) -> Any:
        complete = pb2.GenerateComplete(
            output_token_ids=tokens,
            finish_reason=finish,
            prompt_tokens=len(job.prompt_ids),
            completion_tokens=len(tokens),
        )
        if isinstance(matched, int):
            complete.matched_token_id = matched
        elif matched is not None:
            complete.matched_stop_str = matched
        return pb2.GenerateResponse(request_id=job.request_id, complete=complete)

    async def Embed(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Embed RPC not yet implemented")

    async def HealthCheck(self, request: Any, context: Any) -> Any:
        return pb2.HealthCheckResponse(status="OK")

    async def Abort(self, request: Any, context: Any) -> Any:
        run = self._running.pop(request.request_id, None)
        if run is not None:
            run.aborted.set()
        outcome = "aborted" if run is not None else "not found"
        return pb2.AbortResponse(
            success=run is not None, message=f"Request {request.request_id} {outcome}"
        )

    async def GetModelInfo(self, request: Any, context: Any) -> Any:
        return pb2.GetModelInfoResponse(
            model_id=self.model_id,
            max_input_len=self.max_input_len,
            max_seq_len=MAX_SEQ_LEN,
            vocab_size=self.llm.tokenizer.vocab_size,  # the base vocabulary, as upstream's
        )

    async def GetServerInfo(self, request: Any, context: Any) -> Any:
        return pb2.GetServerInfoResponse(
            version=STANDIN_VERSION,
            backend="tensorrt-llm",
            tensor_parallel_size=1,
            pipeline_parallel_size=1,
            context_parallel_size=1,
            world_size=1,
        )
