"""OpenAI request fields to TensorRT-LLM generation parameters; nothing is silently dropped.

A field is either mapped, neutral (it cannot change the answer, e.g. `user`), or refused with
a 400 that names it, so a client never gets an answer computed without what it asked for.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backends.base import Route
from backends.chat_template import ChatTemplate, template_variables
from backends.constraints import constraint_of
from backends.errors import InvalidRequest, UnsupportedParameter
from backends.fields import SAMPLING_FIELDS, refuse_unhonoured
from backends.sampling import Sampling
from backends.triton.interface import ModelInterface

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# What the Triton models map (names discovered per model); everything else is refused.
HONOURED = SAMPLING_FIELDS - {"min_p"} | {"min_tokens", "chat_template_kwargs"}
# The value that changes nothing: sent where the model has the input, else only refused when
# the request asks for another (the LLM-API model has no repetition_penalty or min_tokens).
NEUTRAL: dict[str, float] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_tokens": 0,
                             "repetition_penalty": 1.0, "presence_penalty": 0.0,
                             "frequency_penalty": 0.0}  # fmt: skip
GUIDE_TYPES = {"json_schema": "json_schema", "json_object": "json", "regex": "regex",
               "grammar": "ebnf_grammar"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation, in TensorRT-LLM's terms."""

    prompt: str
    max_tokens: int
    stream: bool
    include_usage: bool
    stops: tuple[str, ...]
    temperature: float
    top_p: float | None = None  # None when greedy: top_k 1 decides
    top_k: int = 0  # 0 is the whole vocabulary
    seed: int | None = None
    min_tokens: int | None = None
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    guide_type: str | None = None
    guide: str = ""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(frozen=True, slots=True)
class Tokenizing:
    """What the model's tokenizer step does with `text_input`, so the engine reads vLLM's ids.

    vLLM tokenizes a rendered chat without special tokens (the template decides about BOS) and
    a completion prompt with them; TensorRT-LLM preprocessing tokenizes `text_input` with its
    `add_special_tokens` parameter. `bos` is the BOS text the tokenizer adds with special tokens,
    "" when it adds none. Example, Phi-3 served with `add_special_tokens:False`::

        tokenizing = Tokenizing(add_special_tokens=False, bos="<s>")
        tokenizing.text_input(Route.COMPLETIONS, {"prompt": "Hi"}, template)   # "<s>Hi"
        tokenizing.strips_template_bos       # False: a chat goes as the template rendered it
    """

    add_special_tokens: bool
    bos: str = ""

    @classmethod
    def of(cls, add_special_tokens: bool, tokenizer: Tokenizer | None, bos: str) -> Tokenizing:
        """`bos` is kept where the tokenizer adds it: encoding with special tokens starts with
        its id."""
        if tokenizer is None or not bos:
            return cls(add_special_tokens)
        first = tokenizer.encode("x", add_special_tokens=True).ids[:1]
        return cls(add_special_tokens, bos if first == [tokenizer.token_to_id(bos)] else "")

    @property
    def strips_template_bos(self) -> bool:
        """A BOS the chat template writes is dropped only where the engine adds it again."""
        return self.add_special_tokens and bool(self.bos)

    def text_input(self, route: Route, payload: Mapping[str, Any], template: ChatTemplate) -> str:
        """The prompt text to send, so that the engine's tokenizer reads vLLM's token ids."""
        prompt = prompt_of(route, payload)
        if prompt is None:
            return template.render(
                payload["messages"],
                strip_bos=self.strips_template_bos,
                variables=template_variables(payload),
            )
        # A special token's text encodes to its id, so the BOS can go as text.
        return prompt if self.add_special_tokens else self.bos + prompt


def prompt_of(route: Route, payload: Mapping[str, Any]) -> str | None:
    """The completion prompt as text (chat prompts are rendered by the template)."""
    if route is Route.CHAT:
        return None
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise UnsupportedParameter(
            "this backend takes one text prompt (not token ids or a batch)", param="prompt"
        )
    return prompt


def generation(
    payload: Mapping[str, Any],
    prompt: str,
    room: int,
    default_max_tokens: int,
    interface: ModelInterface,
    sampling: Sampling,
    turn_end: str = "",
) -> Generation:
    """Maps a validated request; `room` is how many tokens the context has left, `sampling`
    what the request runs with (`backends.sampling.resolve`), sent explicitly.

    `turn_end` is the text of the token that ends the assistant's turn, for when the engine
    cannot be given its id (`end_id`): it then goes as a stop word, cut from the answer.
    """
    refuse_unhonoured(payload, HONOURED, "TensorRT-LLM on Triton")
    if room <= 0:
        raise InvalidRequest(
            "the prompt leaves no room for an answer in this model's context", param="messages"
        )
    requested = payload.get("max_completion_tokens") or payload.get("max_tokens")
    max_tokens = min(int(requested or default_max_tokens), room)
    # Every value goes explicitly, top_k 0 included: the LLM-API model decodes greedily when
    # temperature, top_p and top_k are all left out (backends/TENSORRT_LLM.md C, D).
    top_p: float | None = sampling.top_p
    top_k = sampling.top_k
    seed = sampling.seed
    if sampling.greedy:
        top_k, top_p = 1, None  # greedy as every model reads it: the C++ one has no temperature 0
    elif seed is None:
        seed = secrets.randbits(63)  # its default seed is fixed: every answer would be the same
    if sampling.min_p:
        raise UnsupportedParameter(
            f"Triton model '{interface.model}' has no min_p input (min_p {sampling.min_p})",
            param="min_p",
        )
    guide_type, guide = _guide(payload)
    if guide_type is not None and not interface.has("guide_type"):
        raise UnsupportedParameter(
            f"Triton model '{interface.model}' has no guided-decoding inputs, so this backend "
            "cannot honour a structured output (response_format / structured_outputs)",
            param="response_format" if "response_format" in payload else "structured_outputs",
        )
    stops = payload.get("stop") or ()
    stops = (stops,) if isinstance(stops, str) else tuple(stops)
    stream_options = payload.get("stream_options") or {}
    return Generation(
        prompt=prompt,
        max_tokens=max_tokens,
        stream=bool(payload.get("stream")),
        include_usage=bool(stream_options.get("include_usage")),
        stops=(*stops, turn_end) if turn_end and turn_end not in stops else stops,
        temperature=sampling.temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        min_tokens=payload.get("min_tokens"),
        repetition_penalty=sampling.repetition_penalty,
        presence_penalty=sampling.presence_penalty,
        frequency_penalty=sampling.frequency_penalty,
        guide_type=guide_type,
        guide=guide,
    )


def _guide(payload: Mapping[str, Any]) -> tuple[str | None, str]:
    """TensorRT-LLM's guided decoding (`guided_decoding_guide_type`, `..._guide`)."""
    constraint = constraint_of(payload)
    if constraint is None:
        return None, ""
    return GUIDE_TYPES[constraint.kind], constraint.text


def inputs_for(
    interface: ModelInterface, generation: Generation, end_id: int | None
) -> list[tuple[str, str, Any]]:
    """The input tensors of one request."""
    values: dict[str, Any] = {
        "prompt": generation.prompt,
        "max_tokens": generation.max_tokens,
        "temperature": generation.temperature if not generation.greedy else None,
        "top_p": generation.top_p,
        "top_k": generation.top_k,
        "seed": generation.seed,
        "min_tokens": generation.min_tokens,
        "repetition_penalty": generation.repetition_penalty,
        "presence_penalty": generation.presence_penalty,
        "frequency_penalty": generation.frequency_penalty,
        "stop": list(generation.stops) or None,
        "end_id": end_id,
        "exclude_input": True,
        "return_input_tokens": True,
        "return_output_tokens": True,
        "return_finish_reason": True,
        "guide_type": generation.guide_type,
        "guide": generation.guide if generation.guide_type else None,
    }
    if interface.decoupled:
        values["stream"] = generation.stream
    for logical, neutral in NEUTRAL.items():
        if values[logical] not in (None, neutral) and not interface.has(logical):
            raise UnsupportedParameter(
                f"Triton model '{interface.model}' has no input for '{logical}' "
                f"({values[logical]})",
                param=logical,
            )
    if generation.seed is not None and not interface.has("seed") and not generation.greedy:
        raise UnsupportedParameter(
            f"Triton model '{interface.model}' has no seed input", param="seed"
        )
    return [
        interface.tensor(logical, value)
        for logical, value in values.items()
        if value is not None and interface.has(logical)
    ]
