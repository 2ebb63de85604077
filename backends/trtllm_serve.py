"""TensorRT-LLM's own OpenAI server (`trtllm-serve`), which answers 400 to any field it lacks.

Its request models forbid unknown fields, so fields it does not know are kept out of its
requests: left out when they carry no value, refused with a clear 400 when they do, because
dropping a meaningful field would silently change the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from backends.errors import UnsupportedParameter
from backends.openai_http import OpenAIHTTPBackend
from backends.settings import HTTPBackendSettings

# Fields trtllm-serve's chat and completion request models accept (tensorrt_llm/serve/
# openai_protocol.py, 2025-2026): the OpenAI ones plus its sampling extensions.
_COMMON = frozenset(
    {
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "user",
        "response_format",
        "top_k",
        "min_p",
        "top_p_min",
        "repetition_penalty",
        "min_tokens",
        "stop_token_ids",
        "include_stop_str_in_output",
        "ignore_eos",
        "skip_special_tokens",
        "spaces_between_special_tokens",
        "truncate_prompt_tokens",
        "best_of",
        "use_beam_search",
        "length_penalty",
        "add_special_tokens",
        "cache_salt",
        "priority",
    }
)
CHAT_FIELDS = _COMMON | {
    "messages",
    "top_logprobs",
    "tools",
    "tool_choice",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "documents",
    "reasoning_effort",
}
COMPLETION_FIELDS = _COMMON | {"prompt", "echo", "suffix"}


class TrtllmServeSettings(HTTPBackendSettings):
    """`trtllm-serve MODEL --host 0.0.0.0 --port 8000`."""

    kind: Literal["trtllm-serve"] = "trtllm-serve"


def keep_known_fields(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The body trtllm-serve accepts, or None when the client's body already is one."""
    allowed = CHAT_FIELDS if "messages" in payload else COMPLETION_FIELDS
    unknown = [key for key in payload if key not in allowed]
    if not unknown:
        return None
    for key in unknown:
        if payload[key] not in (None, False, {}, []):
            raise UnsupportedParameter(
                f"this backend (trtllm-serve) cannot honour '{key}'", param=key
            )
    return {key: value for key, value in payload.items() if key in allowed}


def create(name: str, settings: TrtllmServeSettings) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(name, settings, body_filter=keep_known_fields)
