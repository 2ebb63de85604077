"""TensorRT-LLM's own OpenAI server (`trtllm-serve`, PyTorch backend), which answers 400 to any
field it lacks (backends/TENSORRT_LLM.md, A).

The gateway makes it run what vLLM would run:
- fields it does not know are left out when they carry no value, refused with 400 when they do
  (dropping a meaningful field would silently change the answer);
- vLLM's `structured_outputs` become its `response_format` (a choice becomes a regex), and an
  OpenAI `json_schema` its own `json` type, which every build enforces (facts A.3);
- stop strings are also applied by the gateway (`backends.stop_cut`): trtllm-serve matches them
  on token ids only, so it misses one spelled with other tokens, and streams a stop's first
  tokens before the last one matches;
- sampling fields a request leaves out get the model's generation_config.json defaults, sent
  explicitly: trtllm-serve's own defaults (temperature 1.0, top_p 1.0, top_k 0) otherwise apply;
- with `model_dir`, the gateway renders and tokenises the prompt as vLLM does and sends the ids
  (`prompt_token_ids`, or a completion's `prompt` as ids), so both engines read the same ids
  and the gateway knows which; this needs `pip install 'pika-gateway[trtllm-serve]'`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from backends.base import Route, UpstreamRequest
from backends.constraints import Constraint, constraint_of
from backends.errors import UnsupportedParameter
from backends.openai_http import OpenAIHTTPBackend, Outgoing
from backends.sampling import DEFAULTED, OPENAI_DEFAULTS, Sampling, model_defaults, resolve
from backends.settings import HTTPBackendSettings

if TYPE_CHECKING:
    from backends.prompting import Prompter

# Fields trtllm-serve's request models accept (facts A.1, openai_protocol.py@0076e939).
_COMMON = frozenset(
    {
        "model", "stream", "stream_options", "max_tokens", "n", "temperature", "top_p", "seed",
        "stop", "frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "user",
        "response_format", "top_k", "min_p", "top_p_min", "repetition_penalty", "min_tokens",
        "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "skip_special_tokens",
        "spaces_between_special_tokens", "truncate_prompt_tokens", "best_of", "use_beam_search",
        "length_penalty", "early_stopping", "add_special_tokens", "priority", "lora_request",
        "prompt_ignore_length", "thinking_token_budget", "echo",
    }
)  # fmt: skip
CHAT_FIELDS = _COMMON | {
    "messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice",
    "parallel_tool_calls", "chat_template", "chat_template_kwargs", "add_generation_prompt",
    "documents", "reasoning_effort", "cache_salt", "prompt_token_ids",
}  # fmt: skip
COMPLETION_FIELDS = _COMMON | {"prompt", "suffix", "detokenize", "return_context_logits"}
# vLLM's `structured_outputs` kinds as trtllm-serve's `response_format` types (facts A.3).
_FORMATS = {"regex": "regex", "grammar": "ebnf"}


class TrtllmServeSettings(HTTPBackendSettings):
    """`trtllm-serve MODEL --host 0.0.0.0 --port 8000`."""

    kind: Literal["trtllm-serve"] = "trtllm-serve"


class TrtllmServeDialect:
    def __init__(self, settings: TrtllmServeSettings) -> None:
        auto = settings.generation_config == "auto"
        self._defaults = model_defaults(settings.model_dir) if auto else {}
        self._prompter: Prompter | None = None
        if settings.model_dir is not None:
            from backends.prompting import Prompter  # the `trtllm-serve` extra's imports

            self._prompter = Prompter.from_dir(settings.model_dir)

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return resolve(request.payload, self._defaults, OPENAI_DEFAULTS)

    def stops(self, request: UpstreamRequest) -> tuple[str, ...]:
        """Its executor matches stops on token ids only (facts C, `result.py`): the gateway
        cuts the text as vLLM does."""
        stop = request.payload.get("stop") or ()
        return (stop,) if isinstance(stop, str) else tuple(str(s) for s in stop if s)

    def payload(self, request: UpstreamRequest) -> Outgoing:
        body = keep_known_fields(request.route, request.payload)
        constraint = constraint_of(request.payload)
        # An OpenAI json_schema goes as trtllm-serve's own `json` type: builds before the
        # wrapper fix (1.2.1) took `{"name", "schema"}` for the schema and enforced nothing.
        if constraint is not None and (
            constraint.field == "structured_outputs" or constraint.kind == "json_schema"
        ):
            body = body if body is not None else dict(request.payload)
            body.pop("structured_outputs", None)
            body["response_format"] = response_format(constraint)
        omitted = {
            name: self._defaults[name]
            for name in DEFAULTED
            if name in self._defaults and request.payload.get(name) is None
        }
        if omitted:
            body = {**(body if body is not None else request.payload), **omitted}
        if self._prompter is None:
            return Outgoing(body)
        ids = self._prompter.prompt_ids(request.route, request.payload)
        body = dict(body if body is not None else request.payload)
        body["prompt_token_ids" if request.route is Route.CHAT else "prompt"] = ids
        return Outgoing(body, tuple(ids))


def keep_known_fields(route: Route, payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The body trtllm-serve accepts, or None when the client's body already is one. vLLM's
    `structured_outputs` is kept for `payload` to translate."""
    allowed = CHAT_FIELDS if route is Route.CHAT else COMPLETION_FIELDS
    unknown = [key for key in payload if key not in allowed and key != "structured_outputs"]
    if not unknown:
        return None
    for key in unknown:
        if payload[key] not in (None, False, {}, []):
            raise UnsupportedParameter(
                f"this backend (trtllm-serve) cannot honour '{key}'", param=key
            )
    return {key: value for key, value in payload.items() if key not in unknown}


def response_format(constraint: Constraint) -> dict[str, Any]:
    if constraint.kind == "json_schema":
        return {"type": "json", "schema": json.loads(constraint.text)}
    if constraint.kind == "json_object":
        return {"type": "json_object"}
    kind = _FORMATS[constraint.kind]
    return {"type": kind, kind: constraint.text}


def create(name: str, settings: TrtllmServeSettings) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(name, settings, TrtllmServeDialect(settings))
