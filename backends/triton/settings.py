"""Settings of a `triton` backend: pydantic only, so a configuration validates without the
`triton` extra installed (the adapter, `backends.triton.adapter`, needs it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from backends.settings import BackendSettingsBase

# What a streamed `text_output` holds: new text, all text so far, or decided by the model.
StreamText = Literal["auto", "delta", "cumulative"]


class TritonSettings(BackendSettingsBase):
    """A TensorRT-LLM model served by Triton (`ensemble`, `tensorrt_llm_bls`, LLM-API model)."""

    kind: Literal["triton"] = "triton"
    url: str = Field(default="127.0.0.1:8001", description="Triton's gRPC address, host:port.")
    model: str = Field(default="ensemble", description="The Triton model name.")
    chat_template: Literal["phi3", "chatml"] | None = Field(
        default=None, description="A built-in template, when there is no model_dir."
    )
    default_max_tokens: int = Field(default=256, ge=1, description="When a request has none.")
    context_length: int = Field(default=4096, ge=16, description="Prompt plus answer, tokens.")
    stream_text: StreamText = Field(
        default="auto", description="Streamed text_output: new text, or all text so far."
    )
    add_special_tokens: bool = Field(
        default=True,
        description="What the model's tokenizer step does with text_input: TensorRT-LLM "
        "preprocessing's `add_special_tokens` parameter (default true).",
    )

    @model_validator(mode="before")
    @classmethod
    def _older_name(cls, data: Any) -> Any:
        """`tokenizer_dir`: this kind's name for `model_dir` before every kind had one."""
        if isinstance(data, dict) and "tokenizer_dir" in data:
            data = dict(data)
            older = data.pop("tokenizer_dir")
            if data.get("model_dir") is None:
                data["model_dir"] = older
        return data

    @model_validator(mode="after")
    def _template_source(self) -> TritonSettings:
        if (self.model_dir is None) == (self.chat_template is None):
            raise ValueError("set exactly one of model_dir and chat_template")
        if self.model_dir is not None and not (self.model_dir / "tokenizer.json").is_file():
            raise ValueError(f"{self.model_dir} has no tokenizer.json")
        if not self.add_special_tokens and self.model_dir is None:
            raise ValueError("add_special_tokens false needs model_dir (for the BOS it adds)")
        return self
