"""Request checks trtllm-serve runs before it generates, for the stand-in's ``StandIn``.

Each follows an upstream function, per section A of ``backends/TENSORRT_LLM.md``: chat message
content (``serve/chat_utils.py``), the chat_template_kwargs guard
(``inputs/chat_template_guard.py@12ef0787``), ``response_format`` to a guide
(``_response_format_to_guided_decoding_params`` in ``openai_protocol.py@0076e939``), and the
checks of ``SamplingParams._validate``. ``StandInLimitError`` is where the tiny engine cannot do
what the real one does: a 400 that names the stand-in rather than a different answer.

Example::

    check_template_kwargs(tokenizer.chat_template, {"enable_thinking": False})  # ValueError
    kind, text = guide_source(ResponseFormat(type="regex", regex="(vui|buồn)"))
"""

from __future__ import annotations

import json
import os
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser

from tests.engines import trtllm_serve_protocol as api

ALLOW_UNUSED_KWARGS_ENV = "TRTLLM_ALLOW_UNUSED_CHAT_TEMPLATE_KWARGS"
# facts A.1: renderer parameters the chat_template_kwargs guard always accepts
ALWAYS_ALLOWED_KWARGS = frozenset(
    {
        *("messages", "tools", "documents", "add_generation_prompt", "chat_template"),
        *("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token"),
        *("mask_token", "additional_special_tokens", "continue_final_message", "tokenize"),
        *("padding", "truncation", "max_length", "return_tensors", "return_dict"),
        *("return_assistant_tokens_mask", "tokenizer_kwargs"),
    }
)


class StandInLimitError(ValueError):
    """What the real engine does but the tiny one cannot; a 400 that names the stand-in."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the trtllm-serve stand-in (a tiny CPU test engine) cannot {what}")


def conversation_message(message: api.ChatCompletionMessageParam) -> dict[str, Any]:
    """chat_utils: text parts joined by newlines; the stand-in has no media."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return {"role": message["role"], "content": content or ""}
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise StandInLimitError(f"take {part.get('type')!r} content (no multimodal model)")
        texts.append(str(part.get("text", "")))
    return {"role": message["role"], "content": "\n".join(texts)}


class _GenerationTag(jinja2.ext.Extension):
    """Transformers' ``{% generation %}`` tag, kept as a scope so the guard sees its body."""

    tags = {"generation"}  # noqa: RUF012  # jinja2's own class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


def check_template_kwargs(template: Any, kwargs: dict[str, Any]) -> None:
    """facts A.1: chat_template_kwargs keys an analysable template never reads are refused."""
    if not kwargs or not isinstance(template, str):
        return
    env = jinja2.Environment(autoescape=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    try:
        tree = env.parse(template)
    except jinja2.TemplateSyntaxError:
        return  # not analysable: the renderer decides
    imports = (jinja2.nodes.Include, jinja2.nodes.Import, jinja2.nodes.FromImport)
    if any(tree.find_all((*imports, jinja2.nodes.Extends))):
        return
    read = {node.name for node in tree.find_all(jinja2.nodes.Name) if node.ctx == "load"}
    unknown = sorted(set(kwargs) - read - ALWAYS_ALLOWED_KWARGS)
    if unknown and os.environ.get(ALLOW_UNUSED_KWARGS_ENV, "0") != "1":
        raise ValueError(
            f"chat_template_kwargs {unknown} are not referenced by the active chat template. "
            f"Remove them, or set {ALLOW_UNUSED_KWARGS_ENV}=1 to allow them with a warning."
        )


def guide_source(response_format: api.ResponseFormat) -> tuple[str, str]:
    """facts A.3: (guide kind, guide text); a missing required part is a ValueError."""
    kind = response_format.type
    if kind == "json_object":
        return "json_object", ""
    if kind == "structural_tag":
        return kind, response_format.model_dump_json(by_alias=True, exclude_none=True)
    name = {"json": "schema", "json_schema": "json_schema"}.get(kind, kind)
    value = response_format.schema_ if kind == "json" else getattr(response_format, name)
    if value is None:
        raise ValueError(
            f"response_format.{name} is required for response_format.type == {kind!r}, "
            "but got None."
        )
    if kind == "json_schema" and "schema" in value:
        value = value["schema"]  # facts A.3: the OpenAI wrapper {"name", "schema"} unwrapped
    return ("json", json.dumps(value)) if kind.startswith("json") else (kind, str(value))


def validate_ranges(temperature: float, top_p: float, top_k: int) -> None:
    # SamplingParams._validate (1.2+) checks these ranges; the wording here is the stand-in's.
    if temperature < 0.0:
        raise ValueError(f"temperature must be non-negative, got {temperature}")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be non-negative, got {top_k}")


def check_choices(n: int, best_of: int | None, *, greedy: bool) -> None:
    best = best_of or n
    if best < n:  # SamplingParams._validate
        raise ValueError(f"best_of ({best}) cannot be less than n ({n})")
    if best > 1 and greedy and not os.environ.get("TLLM_ALLOW_N_GREEDY_DECODING"):
        raise ValueError(  # facts A.2: greedy with n > 1
            "Greedy decoding in the LLM API does not allow multiple returns. Please set to "
            f"best_of=1, got best_of={best}. Please set to best_of=1 or set an environment "
            "variable TLLM_ALLOW_N_GREEDY_DECODING=1 to allow best_of > 1 under the greedy "
            "decoding."
        )
    if best > 1:
        raise StandInLimitError("return more than one sequence per request (n, best_of)")


def refuse_what_the_stand_in_cannot(
    request: api.ChatCompletionRequest | api.CompletionRequest,
) -> None:
    refused = {
        "use_beam_search": request.use_beam_search,
        "logprobs": request.logprobs,
        "logit_bias": request.logit_bias,
        "top_p_min": request.top_p_min > 0.0,
        "lora_request": request.lora_request is not None,
        "disaggregated_params": request.disaggregated_params is not None,
        "return_context_logits": getattr(request, "return_context_logits", False),
        # a named or required tool call needs a tool parser and forced-call prompting
        "tool_choice": getattr(request, "tool_choice", "none") not in ("none", "auto"),
    }
    for name, used in refused.items():
        if used:
            raise StandInLimitError(f"honour {name}")
