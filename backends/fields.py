"""Request fields an engine the gateway translates for can honour; the rest are refused with
400 naming the field, never dropped: a dropped field would silently change the answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backends.errors import UnsupportedParameter

# The prompt, sampling, limits, stops, streaming and constraints, as the OpenAI and vLLM
# request bodies name them; an adapter honours these, less what its engine lacks.
SAMPLING_FIELDS = frozenset(
    {
        "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature",
        "top_p", "top_k", "min_p", "seed", "stop", "repetition_penalty", "presence_penalty",
        "frequency_penalty", "stream", "stream_options", "response_format",
        "structured_outputs",
    }
)  # fmt: skip
# Fields that cannot change the generated text, accepted with any value.
NEUTRAL = frozenset(
    {"user", "metadata", "store", "service_tier", "request_id", "priority", "cache_salt"}
)
# Fields accepted when they ask for what the engine does anyway.
AS_DONE: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False, 0),
    "echo": (False,),
    "best_of": (1,),
    "use_beam_search": (False,),
    "skip_special_tokens": (True,),
    "include_stop_str_in_output": (False,),
    "add_generation_prompt": (True,),
    "parallel_tool_calls": (True, False),
    "tool_choice": ("none",),
}


def refuse_unhonoured(payload: Mapping[str, Any], honoured: frozenset[str], engine: str) -> None:
    """400 for the first field that would change the answer and that `engine` cannot honour."""
    for key, value in payload.items():
        if key in honoured or key in NEUTRAL or value is None:
            continue
        if key in AS_DONE and value in AS_DONE[key]:
            continue
        raise UnsupportedParameter(f"this backend ({engine}) cannot honour '{key}'", param=key)
