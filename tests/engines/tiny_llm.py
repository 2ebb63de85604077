"""The tests' tiny causal LM on CPU, token by token, with the sampling controls TensorRT-LLM has.

``TinyLlm`` wraps an HF transformers model and its tokenizer (one forward pass at a time, a KV
cache per generation, a prompt's blocks reused by the next prompt that shares them, as
TensorRT-LLM reuses KV blocks: ``kv_reuse``); ``triton_models`` serves it behind TensorRT-LLM's
tensor interfaces.
``Sampling`` holds what steers one generation, already in token ids: greedy or sampled
(temperature, top-k, top-p, seed), penalties, minimum length, stop and banned token
sequences, end ids, and a guide.

Guided decoding: each step allows only the tokens whose bytes keep the answer a prefix of a
match of the guide, and the end id only once it matches in full. ``regex`` guides are matched as
given; a ``json_schema`` becomes a regex of compact JSON for the usual subset (``enum``,
``const``, objects with all their ``properties``, arrays, scalar types); ``json`` is a flat
object. An ``ebnf_grammar`` or a schema outside the subset is an ``InvalidRequestError``.

Test hook: a prompt containing ``[[force:TEXT]]`` makes the model emit exactly the tokens of
TEXT (encoded without special tokens), then the end-of-turn token (Phi-3's ``<|end|>``, Qwen3's
``<|im_end|>``), then whatever it likes, through a logits mask. So ``[[force:Chúc mừng con!]]``
gives a known Vietnamese answer, and with the ensemble's default ``end_id`` (Phi-3's
``<|endoftext|>``) the answer runs past ``<|end|>`` as on the real server. A prompt containing
``[[fail:N]]`` makes the model raise ``InjectedFaultError`` after N generated tokens (0: before
the first), with a message that quotes the prompt, as engine errors can: an in-band error in
the middle of a stream, or instead of an answer.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex  # type: ignore[import-untyped]  # no stubs; a dependency of transformers
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from tests.engines.kv_reuse import BLOCK, BlockReuse, reusable_length

_FORCE = re.compile(r"\[\[force:(.*?)\]\]", re.DOTALL)
_FAIL = re.compile(r"\[\[fail:(\d+)\]\]")


class InvalidRequestError(ValueError):
    """A request the real model would reject; the client receives it as a Triton error."""


class InjectedFaultError(RuntimeError):
    """The ``[[fail:N]]`` hook: an engine failure, on demand."""


@dataclass(frozen=True)
class Sampling:
    """Everything that steers one generation, already in token ids."""

    max_tokens: int
    end_ids: frozenset[int]
    greedy: bool = True
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    min_tokens: int = 0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop_sequences: tuple[tuple[int, ...], ...] = ()
    bad_sequences: tuple[tuple[int, ...], ...] = ()
    forced: tuple[int, ...] = ()
    fail_after: int | None = None  # tokens generated before the [[fail:N]] hook raises
    guide: Guide | None = None


@dataclass(frozen=True)
class Step:
    """One generated token (``None`` when an end id closed the answer) and why it finished."""

    token: int | None
    finish: str | None = None


class TinyLlm:
    """A causal LM and its tokenizer, shared by every model; one forward pass at a time."""

    def __init__(self, model_dir: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        self.generation_eos_ids = frozenset(eos if isinstance(eos, list) else [eos])
        self.eos_id: int = self.tokenizer.eos_token_id
        self.end_of_turn_id = _end_of_turn_id(self.tokenizer)
        self.token_bytes = _token_bytes(self.tokenizer)
        self._lock = threading.Lock()
        self._reuse = BlockReuse()
        # One forward pass at a time on small matrices: a second thread only adds waiting,
        # many times over on a CI machine whose cores other processes share.
        torch.set_num_threads(1)

    def encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=special))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def forced_ids(self, prompt: str) -> tuple[int, ...]:
        """The token ids the ``[[force:...]]`` hook imposes, or none."""
        match = _FORCE.search(prompt)
        if match is None:
            return ()
        return (*self.encode(match[1], special=False), self.end_of_turn_id)

    def guide(self, kind: str, text: str) -> Guide:
        """A guide from TensorRT-LLM's ``guided_decoding_guide_type`` and ``..._guide``."""
        if kind == "regex":
            pattern = text
        elif kind == "json_schema":
            pattern = schema_regex(_json(text))
        elif kind == "json":
            pattern = _FLAT_OBJECT
        else:
            raise InvalidRequestError(f"this test engine cannot guide by '{kind}'")
        try:  # on UTF-8 bytes, so that a character split over two tokens is judged exactly
            return Guide(regex.compile(pattern.encode("utf-8")), self.token_bytes)
        except regex.error as exc:
            raise InvalidRequestError(f"invalid guide regex {pattern!r}: {exc}") from None

    @staticmethod
    def fail_after(prompt: str) -> int | None:
        """The token count after which the ``[[fail:N]]`` hook raises, or none."""
        match = _FAIL.search(prompt)
        return None if match is None else int(match[1])

    def steps(self, prompt_ids: Sequence[int], sampling: Sampling) -> Generator[Step, None, None]:
        """Generate token by token with a KV cache; the last step carries the finish reason."""
        rng = torch.Generator().manual_seed(sampling.seed)
        generated: list[int] = []
        cache: Any = None
        while True:
            if len(generated) == sampling.fail_after:
                raise InjectedFaultError(
                    f"injected fault after {len(generated)} tokens of {self.decode(prompt_ids)!r}"
                )
            if cache is None:
                logits, cache = self._prefill(prompt_ids)
            else:
                logits, cache = self._forward([generated[-1]], cache)
            token = choose(logits, sampling, [*prompt_ids, *generated], generated, rng)
            if token in sampling.end_ids:
                yield Step(None, "stop")
                return
            generated.append(token)
            if any(_ends_with(generated, stop) for stop in sampling.stop_sequences):
                yield Step(token, "stop")
                return
            if len(generated) >= sampling.max_tokens:
                yield Step(token, "length")
                return
            yield Step(token)

    def _prefill(self, prompt_ids: Sequence[int]) -> tuple[Any, Any]:
        """The prompt block by block, from the blocks a previous prompt shares (``kv_reuse``)."""
        with self._lock:
            start, cache = self._reuse.lookup(prompt_ids)
        logits, whole = None, reusable_length(prompt_ids)
        for begin in range(start, len(prompt_ids), BLOCK):
            logits, cache = self._forward(list(prompt_ids[begin : begin + BLOCK]), cache)
            if begin + BLOCK == whole:
                with self._lock:
                    self._reuse.keep(prompt_ids, cache)
        return logits, cache

    def _forward(self, ids: list[int], cache: Any) -> tuple[Any, Any]:
        with self._lock, torch.inference_mode():
            out = self.model(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True)
        return out.logits[0, -1].float(), out.past_key_values


def _end_of_turn_id(tokenizer: Any) -> int:
    """The special token the chat template closes a turn with: Phi-3's ``<|end|>``, Qwen3's
    ``<|im_end|>``. Read from a rendered turn, so that a model needs no entry in a list here."""
    marker = "[[turn]]"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
    after_content = tokenizer.encode(rendered.split(marker, 1)[1], add_special_tokens=False)
    if not after_content or after_content[0] not in tokenizer.all_special_ids:
        raise TypeError(f"the chat template closes no turn with a special token: {rendered!r}")
    return int(after_content[0])


def choose(
    logits: Any, sampling: Sampling, context: list[int], generated: list[int], rng: Any
) -> int:
    """Pick the next token: penalties, bans, the guide and the force mask, then argmax or a
    sample."""
    logits = _penalise(logits.clone(), sampling, context, generated)
    for banned in _banned(generated, sampling.bad_sequences):
        logits[banned] = -torch.inf
    if len(generated) < sampling.min_tokens:
        logits[list(sampling.end_ids)] = -torch.inf
    if sampling.guide is not None:
        allowed = sampling.guide.allowed(generated, sampling.end_ids)
        logits = logits + torch.full_like(logits, -torch.inf).index_fill(0, allowed, 0.0)
    if len(generated) < len(sampling.forced):
        keep = sampling.forced[len(generated)]
        logits = torch.full_like(logits, -torch.inf).index_fill(0, torch.tensor([keep]), 0.0)
    if sampling.greedy:
        return int(torch.argmax(logits))
    logits = _top_k_top_p(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=rng))


@dataclass(frozen=True, eq=False)
class Guide:
    """A compiled guide: which tokens may come next, judged on the answer's bytes."""

    pattern: Any  # a bytes regex.Pattern: its partial matches say what can still match
    token_bytes: Sequence[bytes | None]

    def allowed(self, generated: Sequence[int], end_ids: frozenset[int]) -> Any:
        """Ids of the tokens that keep a match possible; the end ids once the text matches.

        A dead end (no token fits) allows the end ids. A class of non-ASCII characters is
        matched byte by byte, so only roughly; literal choices and schemas, what the gateway
        sends, are exact.
        """
        prefix = b"".join(self.token_bytes[token] or b"" for token in generated)
        ids = [
            token
            for token, piece in enumerate(self.token_bytes)
            if piece and self._possible(prefix + piece)
        ]
        if not ids or self._possible(prefix, final=True):
            ids += sorted(end_ids)
        return torch.tensor(ids)

    def _possible(self, data: bytes, *, final: bool = False) -> bool:
        return self.pattern.fullmatch(data, partial=not final) is not None


_STRING = r'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])*"'
_INTEGER = r"-?(?:0|[1-9][0-9]*)"
_SCALARS = {
    "string": _STRING,
    "integer": _INTEGER,
    "number": _INTEGER + r"(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?",
    "boolean": "(?:true|false)",
    "null": "null",
}
_SCALAR = "(?:" + "|".join(_SCALARS.values()) + ")"
_FLAT_OBJECT = rf"\{{(?:{_STRING}:{_SCALAR}(?:,{_STRING}:{_SCALAR})*)?\}}"


def schema_regex(schema: Any) -> str:
    """A regex of compact JSON that the schema accepts, every property present: a part of
    what xgrammar allows, for the common subset of JSON Schema."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"not a JSON schema: {schema!r}")
    if "enum" in schema or "const" in schema:
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        return "(?:" + "|".join(regex.escape(_compact(value)) for value in values) + ")"
    kind = schema.get("type")
    if kind == "object":
        fields = (
            regex.escape(_compact(name)) + ":" + schema_regex(part)
            for name, part in schema.get("properties", {}).items()
        )
        return r"\{" + ",".join(fields) + r"\}"
    if kind == "array":
        item = schema_regex(schema.get("items", {"type": "string"}))
        return rf"\[(?:{item}(?:,{item})*)?\]"
    if kind in _SCALARS:
        return _SCALARS[kind]
    raise InvalidRequestError(f"this test engine cannot guide by the schema {schema!r}")


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"the guide is not JSON: {exc}") from None


def _token_bytes(tokenizer: Any) -> tuple[bytes | None, ...]:
    """Each token's bytes (byte-level BPE); ``None`` for special tokens, which no guide allows."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = (byte for byte in range(256) if byte not in printable)
    chars = {chr(byte): byte for byte in printable}
    chars |= {chr(0x100 + index): byte for index, byte in enumerate(shifted)}
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return tuple(
        None if token in special else bytes(chars[char] for char in piece)
        for token, piece in enumerate(pieces)
    )


def _penalise(logits: Any, sampling: Sampling, context: list[int], generated: list[int]) -> Any:
    # Repetition as in HF (whole sequence); presence and frequency as OpenAI (output only).
    if sampling.repetition_penalty != 1.0 and context:
        seen = torch.tensor(sorted(set(context)))
        values = logits[seen]
        penalty = sampling.repetition_penalty
        logits[seen] = torch.where(values > 0, values / penalty, values * penalty)
    for token, count in Counter(generated).items():
        logits[token] -= sampling.presence_penalty + sampling.frequency_penalty * count
    return logits


def _banned(generated: list[int], bad_sequences: Sequence[tuple[int, ...]]) -> list[int]:
    """Last tokens of bad words whose other tokens end the output so far."""
    return [bad[-1] for bad in bad_sequences if _ends_with(generated, bad[:-1])]


def _top_k_top_p(logits: Any, top_k: int, top_p: float) -> Any:
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, -torch.inf)
    if 0.0 < top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        cumulative = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1)
        drop = cumulative - torch.softmax(ordered, dim=-1) >= top_p  # keeps at least one
        logits = logits.index_fill(0, order[drop], -torch.inf)
    return logits


def _ends_with(ids: list[int], suffix: Sequence[int]) -> bool:
    return len(ids) >= len(suffix) and ids[len(ids) - len(suffix) :] == list(suffix)
