"""trtllm-serve's OpenAI request and response models, for the stand-in in ``trtllm_serve_engine``.

They follow ``tensorrt_llm/serve/openai_protocol.py`` as ``backends/TENSORRT_LLM.md`` section A
records it (commit 0076e939): the same field names, types and defaults, ``extra="forbid"``, the
same model validators. Types the stand-in never reads (LoRA, disaggregated, multimodal and
routing parameters) are kept loose (a dict or ``Any``) but accepted under the same names, so a
request upstream accepts is accepted here. Response models list every field upstream dumps, in
upstream's order, because non-streamed answers keep every null.

Example::

    request = ChatCompletionRequest.model_validate({"model": "m", "messages": [...]})
    answer = ChatCompletionResponse(model=request.model, choices=[...], usage=UsageInfo())
    body = answer.model_dump()
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Required

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator, with_config
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

ReasoningEffort = Literal["low", "medium", "high", "max", "none"]
EarlyStopping = bool | Literal["never"]


class OpenAIBaseModel(BaseModel):
    # facts A.1: unknown top-level fields are refused (extra_forbidden), alias or name accepted
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class StreamOptions(OpenAIBaseModel):
    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class PromptTokensDetails(OpenAIBaseModel):
    cached_tokens: int = 0


class UsageInfo(OpenAIBaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class ModelCard(OpenAIBaseModel):
    id: str
    object: str = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "tensorrt_llm"


class ModelList(OpenAIBaseModel):
    object: str = "list"
    data: list[ModelCard] = Field(default_factory=list)


class TokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str


class TokenizeResponse(OpenAIBaseModel):
    count: int
    tokens: list[int] | None = None


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json", "json_schema", "json_object", "regex", "ebnf", "structural_tag"]
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    ebnf: str | None = None
    format: Any = None  # upstream: xgrammar.structural_tag.Format


class ErrorResponse(OpenAIBaseModel):
    object: str = "error"
    message: str
    type: str
    param: str | None = None
    code: int


class ConversationParams(OpenAIBaseModel):
    conversation_id: str

    @field_validator("conversation_id", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> str:
        if value is None or not str(value).strip():
            raise ValueError("conversation_id must be non-empty")
        return str(value).strip()


@with_config(ConfigDict(extra="allow"))
class ChatCompletionMessageParam(TypedDict, total=False):
    """One message; unknown keys are kept, as upstream's message TypedDicts allow them."""

    role: Required[str]
    content: str | list[dict[str, Any]] | None
    name: str


class FunctionDefinition(OpenAIBaseModel):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionToolsParam(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class ChatCompletionNamedFunction(OpenAIBaseModel):
    name: str


class ChatCompletionNamedToolChoiceParam(OpenAIBaseModel):
    function: ChatCompletionNamedFunction
    type: Literal["function"] = "function"


class ChatCompletionThinkingParam(OpenAIBaseModel):
    type: Literal["enabled", "disabled"] = "enabled"
    keep: Literal["all"] | None = None
    effort: Literal["low", "high", "max"] | None = None


def _check_stream_options(data: Any, message: str, *, truthy: bool) -> None:
    options = data.get("stream_options")
    if (options if truthy else options is not None) and not data.get("stream"):
        raise ValueError(message)


def _check_suffix(data: Any) -> None:
    if data.get("suffix"):
        raise ValueError("suffix is not supported")


class _SamplingFields(OpenAIBaseModel):
    """The fields and defaults chat and completion requests share (facts A.1)."""

    model: str
    best_of: int | None = None
    frequency_penalty: float | None = 0.0
    logit_bias: dict[str, float] | None = None
    n: int = 1
    presence_penalty: float | None = 0.0
    seed: int | None = None
    stop: str | list[str] | None = Field(default_factory=list)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    lora_request: dict[str, Any] | None = None  # upstream: LoRARequest
    prompt_ignore_length: int | None = 0
    use_beam_search: bool = False
    top_k: int = 0
    top_p_min: float = 0.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    length_penalty: float | None = None
    early_stopping: EarlyStopping | None = None
    stop_token_ids: list[int] | None = Field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: int | None = Field(default=None, ge=1)
    thinking_token_budget: int | None = None
    response_format: ResponseFormat | None = None
    disaggregated_params: dict[str, Any] | None = None  # upstream: DisaggregatedParams
    priority: float | None = Field(default=None, ge=0.0, le=1.0)
    conversation_params: ConversationParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_suffix(cls, data: Any) -> Any:
        if isinstance(data, dict):
            _check_suffix(data)
        return data


class CompletionRequest(_SamplingFields):
    prompt: list[int] | list[list[int]] | str | list[str]
    echo: bool | None = False
    logprobs: int | None = None
    max_tokens: int | None = None
    suffix: str | None = None
    return_context_logits: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True  # facts A.4: True for completions

    @model_validator(mode="before")
    @classmethod
    def _check_stream_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            message = "Stream options can only be defined when stream is true."
            _check_stream_options(data, message, truthy=True)
        return data


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatCompletionMessageParam]
    prompt_token_ids: list[int] | None = None
    prompt_token_ids_b64: str | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_completion_tokens: int | None = Field(default=None, validation_alias="max_tokens")
    tools: list[ChatCompletionToolsParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | ChatCompletionNamedToolChoiceParam | None = (
        "none"
    )
    parallel_tool_calls: bool | None = None
    reasoning_effort: ReasoningEffort | None = "low"
    thinking: ChatCompletionThinkingParam | None = None
    echo: bool = False
    add_generation_prompt: bool = True
    add_special_tokens: bool = False  # facts A.4: False for chat
    documents: list[dict[str, str]] | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    injected_chat_template_kwargs: dict[str, Any] | None = None
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    cache_salt: str | None = None
    agent_hierarchy: Any = None
    mm_processor_kwargs: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _check_request(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        message = "stream_options can only be set if stream is true"
        _check_stream_options(data, message, truthy=False)
        messages = data.get("messages") or []
        dynamic_tools = any(
            isinstance(item, dict) and item.get("role") == "system" and item.get("tools")
            for item in messages
        )
        if "tool_choice" not in data and (data.get("tools") or dynamic_tools):
            data["tool_choice"] = "auto"  # facts A.1: tools given, tool_choice omitted
        choice = data.get("tool_choice", "none")
        if choice not in ("none", "auto") and not (
            data.get("tools") or (choice == "required" and dynamic_tools)
        ):
            raise ValueError("When using `tool_choice`, `tools` must be set.")
        if any(
            isinstance(item, dict)
            and item.get("tools") is not None
            and item.get("role") != "system"
            for item in messages
        ):
            raise ValueError("Message-level `tools` are only allowed on system messages.")
        if data.get("top_logprobs") is not None and not data.get("logprobs"):
            raise ValueError("logprobs must be true when using top_logprobs")
        return data

    @field_validator("cache_salt")
    @classmethod
    def _check_cache_salt(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("Parameter 'cache_salt' must be a non-empty string if provided.")
        return value


class CompletionResponseChoice(OpenAIBaseModel):
    index: int
    text: str
    token_ids: list[int] | None = None
    logprobs: dict[str, Any] | None = None
    context_logits: list[float] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    disaggregated_params: dict[str, Any] | None = None
    avg_decoded_tokens_per_iter: float | None = None


class CompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: str = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionResponseChoice]
    usage: UsageInfo
    prompt_token_ids: list[list[int]] | list[int] | None = None


class CompletionResponseStreamChoice(OpenAIBaseModel):
    index: int
    text: str
    token_ids: list[int] | None = None
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    avg_decoded_tokens_per_iter: float | None = None


class CompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: str = "text_completion"
    created: int
    model: str
    choices: list[CompletionResponseStreamChoice]
    usage: UsageInfo | None = None


class ChatMessage(OpenAIBaseModel):
    role: str
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)


class ChatCompletionResponseChoice(OpenAIBaseModel):
    index: int
    message: ChatMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    mm_embedding_handle: dict[str, Any] | None = None
    disaggregated_params: dict[str, Any] | None = None
    avg_decoded_tokens_per_iter: float | None = None


class ChatCompletionResponse(OpenAIBaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatCompletionResponseChoice]
    usage: UsageInfo
    prompt_token_ids: list[int] | None = None
    prompt_token_ids_b64: str | None = None


class DeltaMessage(OpenAIBaseModel):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionResponseStreamChoice(OpenAIBaseModel):
    index: int
    delta: DeltaMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    avg_decoded_tokens_per_iter: float | None = None


class ChatCompletionStreamResponse(OpenAIBaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionResponseStreamChoice]
    usage: UsageInfo | None = None
