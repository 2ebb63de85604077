"""What the trtllm-serve stand-in generates: requests to jobs, jobs to outputs, on ``TinyLlm``.

``StandIn`` turns a chat or completion request into a ``Job`` as ``to_sampling_params`` and the
LLM API do (section A of ``backends/TENSORRT_LLM.md``, from ``openai_protocol.py@0076e939``;
the executor's checks from ``executor/worker.py`` and ``executor/result.py``), then runs it on
``TinyLlm`` and reports one ``Output`` per engine iteration, as ``CompletionOutput`` does.
``trtllm_serve_server`` shapes those outputs into HTTP answers.

Where the tiny engine cannot do what the real one does (several sequences per request, beam
search, logprobs, logit bias, min-p, LoRA, disaggregated serving, multimodal input, forced tool
calls, EBNF and structural-tag grammars) ``trtllm_serve_requests.StandInLimitError`` says so (a
400 naming the stand-in) rather than answering differently. Each request generates in a thread
of its own, so requests run concurrently and never block the event loop; their decode steps
interleave one forward pass at a time (``TinyLlm`` holds a lock) instead of being batched into
one step as on the real engine.

Example::

    stand_in = StandIn(ServeOptions(model_dir=Path("/tmp/tiny-phi3")))
    text, ids = stand_in.chat_prompt(request)
    output = await stand_in.result(stand_in.job(request, text, ids, request.max_completion_tokens))
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tokenizers.decoders import DecodeStream

from tests.engines import trtllm_serve_protocol as api
from tests.engines.tiny_llm import Guide, Sampling, Step, TinyLlm
from tests.engines.trtllm_serve_requests import (
    StandInLimitError,
    check_choices,
    check_template_kwargs,
    conversation_message,
    guide_source,
    refuse_what_the_stand_in_cannot,
    validate_ranges,
)

GUIDE_KINDS = {"json": "json_schema", "json_object": "json", "regex": "regex"}
# facts A.2: what `--generation-config auto` takes from generation_config.json
AUTO_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
# TorchSampler (_torch/pyexecutor/sampler.py) samples unseeded requests from one generator seeded
# with 42: a fresh server repeats its answers run after run, while two requests differ. Each
# unseeded request here takes the next seed from such a generator.
_UNSEEDED_SEED = 42


@dataclass(frozen=True)
class ServeOptions:
    """What the command line sets: the upstream flags the stand-in mirrors."""

    model_dir: Path
    served_name: str | None = None
    guided_decoding_backend: Literal["xgrammar"] | None = None
    generation_config: Literal["trtllm", "auto"] = "trtllm"
    max_seq_len: int = 2048
    max_num_tokens: int = 8192


class EngineError(RuntimeError):
    """An error the executor reports for a request once it has been submitted."""


@dataclass(frozen=True)
class Job:
    """One prompt to generate for, with everything the answer needs."""

    prompt_ids: list[int]
    sampling: Sampling
    stops: tuple[tuple[int | str, tuple[int, ...]], ...] = ()  # (stop_reason, token ids)
    include_stop: bool = False
    skip_special_tokens: bool = True
    detokenize: bool = True
    engine_error: str | None = None  # raised once generation starts, as the executor does


@dataclass
class Output:
    """One sequence as ``CompletionOutput``: cumulative ids and text, and this step's diff."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    new_ids: list[int] = field(default_factory=list)
    text_diff: str = ""


class StandIn:
    """The server: one ``TinyLlm`` and the options it was started with."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.llm = TinyLlm(options.model_dir)
        self.tokenizer: Any = self.llm.tokenizer
        # facts A.6: the model dir's basename; a served name, if given, instead
        self.model = options.served_name or options.model_dir.name
        self.auto_defaults = _auto_defaults(options)
        self._unseeded = random.Random(_UNSEEDED_SEED)
        self._request_ids = itertools.count(1)

    def request_id(self) -> int:
        """The executor's integer id for a new request (streamed chunk ids are built on it)."""
        return next(self._request_ids)

    # -- requests to jobs ------------------------------------------------------------------

    def chat_prompt(self, request: api.ChatCompletionRequest) -> tuple[str, list[int]]:
        """The prompt text (for the test hooks) and ids of a chat request."""
        if request.chat_template is not None:  # facts A.1: request templates off by default
            raise ValueError(
                "chat_template cannot be supplied per request unless request-level "
                "chat templates are enabled at server startup."
            )
        conversation = [conversation_message(message) for message in request.messages]
        ids = request.prompt_token_ids
        if ids is None and request.prompt_token_ids_b64:
            raw = base64.b64decode(request.prompt_token_ids_b64)
            ids = [
                int.from_bytes(raw[i : i + 4], "little", signed=True) for i in range(0, len(raw), 4)
            ]
        if ids is not None:  # facts A.4: prompt_token_ids skips the chat template
            return self.llm.decode(ids), list(ids)
        tools = None if request.tools is None else [tool.model_dump() for tool in request.tools]
        kwargs = request.chat_template_kwargs or {}
        check_template_kwargs(self.tokenizer.get_chat_template(None, tools), kwargs)
        text = self.tokenizer.apply_chat_template(
            conversation,
            tools=tools,
            documents=request.documents,
            add_generation_prompt=request.add_generation_prompt,
            tokenize=False,
            **kwargs,
        )
        return str(text), self.llm.encode(str(text), special=request.add_special_tokens)

    def job(
        self,
        request: api.ChatCompletionRequest | api.CompletionRequest,
        prompt_text: str,
        prompt_ids: list[int],
        max_tokens: int | None,
    ) -> Job:
        """``to_sampling_params`` and the executor's checks, as the stand-in honours them."""
        refuse_what_the_stand_in_cannot(request)
        if request.truncate_prompt_tokens is not None:
            prompt_ids = prompt_ids[-request.truncate_prompt_tokens :]
        if len(prompt_ids) > self.options.max_num_tokens:  # checked before submission
            raise ValueError(
                f"The sum of prompt length ({float(len(prompt_ids))}), query length (0) should "
                f"not exceed max_num_tokens ({self.options.max_num_tokens})"
            )
        provided = {name for name in request.model_fields_set if getattr(request, name) is not None}
        value = self._sampling_value(request, provided)
        temperature, top_p = value("temperature", 1.0), value("top_p", 1.0)  # facts A.2
        top_k, min_p = value("top_k", 0), value("min_p", 0.0)
        validate_ranges(temperature, top_p, top_k)
        if min_p > 0.0:
            raise StandInLimitError("apply min_p")
        greedy = temperature == 0.0 or top_p == 0.0 or top_k == 1 or min_p == 1.0
        check_choices(request.n, request.best_of, greedy=greedy)
        guide = self._guide(request.response_format)
        stops = self._stops(request)
        end_ids = self.llm.generation_eos_ids | {self.llm.eos_id}
        budget, engine_error = self._max_tokens(max_tokens, len(prompt_ids))
        sampling = Sampling(
            max_tokens=budget,
            end_ids=frozenset() if request.ignore_eos else frozenset(end_ids),
            greedy=greedy,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=self._unseeded.getrandbits(63) if request.seed is None else request.seed,
            min_tokens=request.min_tokens,
            repetition_penalty=value("repetition_penalty", 1.0),
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            # executor: ignore_eos also drops the stop words
            stop_sequences=() if request.ignore_eos else tuple(ids for _, ids in stops),
            forced=self.llm.forced_ids(prompt_text),
            fail_after=self.llm.fail_after(prompt_text),
            guide=guide,
        )
        return Job(
            prompt_ids=prompt_ids,
            sampling=sampling,
            stops=stops,
            include_stop=request.include_stop_str_in_output,
            skip_special_tokens=request.skip_special_tokens,
            detokenize=getattr(request, "detokenize", True),
            engine_error=engine_error,
        )

    def _sampling_value(
        self, request: api.ChatCompletionRequest | api.CompletionRequest, provided: set[str]
    ) -> Callable[[str, Any], Any]:
        def value(name: str, default: Any) -> Any:
            # facts A.2: with `auto`, a field the request left unset (or null) takes the JSON's
            if name not in provided and name in self.auto_defaults:
                return self.auto_defaults[name]
            given = getattr(request, name)
            return default if given is None else given

        return value

    def _guide(self, response_format: api.ResponseFormat | None) -> Guide | None:
        """facts A.3: response_format to a guide; validated always, enforced with a backend."""
        if response_format is None or response_format.type == "text":
            return None
        kind, text = guide_source(response_format)
        if self.options.guided_decoding_backend is None:
            return None  # facts A.3: no guided decoding backend: silently dropped, 200
        if kind not in GUIDE_KINDS:
            raise StandInLimitError(f"guide by {response_format.type!r} (only xgrammar can)")
        return self.llm.guide(GUIDE_KINDS[kind], text)

    def _stops(
        self, request: api.ChatCompletionRequest | api.CompletionRequest
    ) -> tuple[tuple[int | str, tuple[int, ...]], ...]:
        # facts D: stop strings are tokenised without special tokens; ids come first
        strings = [request.stop] if isinstance(request.stop, str) else request.stop or []
        pairs: list[tuple[int | str, tuple[int, ...]]] = [
            (token, (token,)) for token in request.stop_token_ids or []
        ]
        pairs += [(text, tuple(self.llm.encode(text, special=False))) for text in strings]
        return tuple((reason, ids) for reason, ids in pairs if ids)

    def _max_tokens(self, requested: int | None, prompt_len: int) -> tuple[int, str | None]:
        # facts A.2: an omitted max_tokens is max_seq_len minus the prompt (_deduce_max_tokens)
        limit = self.options.max_seq_len
        room = limit - prompt_len
        if room <= 0:
            return 1, (
                f"`default_max_tokens` ({room}) must be greater than 0, `default_max_tokens` "
                f"({room}) = max_seq_len ({limit}) - `splited_prompt_len` ({prompt_len}) "
                "- `query_token_len` (0)"
            )
        if requested is None or requested > room:
            return room, None
        if requested <= 0:
            return 1, f"`max_tokens` ({requested}) must be greater than 0"
        return requested, None

    # -- generation ------------------------------------------------------------------------

    async def outputs(self, job: Job, *, streaming: bool) -> AsyncIterator[Output]:
        """One ``Output`` per engine iteration (one token, or the end), as the executor
        reports them; streamed text is detokenized incrementally, whole text at the end."""
        if job.engine_error is not None:
            raise EngineError(job.engine_error)
        output = Output()
        decoder = DecodeStream(skip_special_tokens=job.skip_special_tokens)
        async for step in _steps_in_thread(self.llm, job.prompt_ids, job.sampling):
            known, text_before = len(output.token_ids), output.text
            if step.token is not None:
                output.token_ids.append(step.token)
            if step.finish is not None:
                output.finish_reason = step.finish
                if step.token is not None and step.finish == "stop":
                    _match_stop(job, output)
            output.new_ids = output.token_ids[known:]
            if job.detokenize and streaming:
                output.text += self._decode_stream(decoder, output.new_ids)
            elif job.detokenize and step.finish is not None:
                output.text = self._decode(output.token_ids, job.skip_special_tokens)
            output.text_diff = output.text[len(text_before) :]
            yield output
            if step.finish is not None:
                return

    async def result(self, job: Job) -> Output:
        """The finished sequence of a non-streamed request."""
        final = Output()
        async for output in self.outputs(job, streaming=False):
            final = output
        return final

    def _decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens))

    def _decode_stream(self, decoder: DecodeStream, ids: Sequence[int]) -> str:
        # The HF incremental detokenizer upstream streams with: a token that ends inside a
        # character adds no text until the character is complete.
        pieces = [decoder.step(self.tokenizer.backend_tokenizer, token) for token in ids]
        text = "".join(piece for piece in pieces if piece is not None)
        if self.tokenizer.clean_up_tokenization_spaces:
            text = str(self.tokenizer.clean_up_tokenization(text))
        return text


def _auto_defaults(options: ServeOptions) -> dict[str, Any]:
    """facts A.2: only the values present in generation_config.json, and only with `auto`."""
    if options.generation_config != "auto":
        return {}
    path = options.model_dir / "generation_config.json"
    found = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    values = {name: found[name] for name in AUTO_FIELDS if found.get(name) is not None}
    if values.get("min_p", 0.0) > 0.0 or found.get("no_repeat_ngram_size"):
        raise StandInLimitError("apply min_p or no_repeat_ngram_size from generation_config.json")
    return values


def _match_stop(job: Job, output: Output) -> None:
    """executor/result.py: name the stop that matched and cut it unless asked to keep it."""
    for reason, ids in job.stops:
        if tuple(output.token_ids[-len(ids) :]) == ids:
            output.stop_reason = reason
            if not job.include_stop:
                del output.token_ids[-len(ids) :]
            return


async def _steps_in_thread(
    llm: TinyLlm, prompt_ids: list[int], sampling: Sampling
) -> AsyncIterator[Step]:
    """``TinyLlm.steps`` in a thread of its own, handed to the event loop step by step; the
    generation stops after the current step once the consumer goes away."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Step | BaseException | None] = asyncio.Queue()
    stop = threading.Event()

    def hand_over(item: Step | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            stop.set()

    def generate() -> None:
        steps = llm.steps(prompt_ids, sampling)
        try:
            for step in steps:
                hand_over(step)
                if stop.is_set():
                    return
            hand_over(None)
        except Exception as exc:  # handed to the request that asked, as the executor does
            hand_over(exc)
        finally:
            steps.close()

    threading.Thread(target=generate, name="tiny-llm-request", daemon=True).start()
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise EngineError(str(item)) from item
            yield item
    finally:
        stop.set()
