"""Chat prompts for engines that take raw text (Triton): rendered as vLLM renders them.

vLLM renders a chat with the model's Jinja template from `tokenizer_config.json` (or
`chat_template.jinja`) in a sandbox with `trim_blocks` and `lstrip_blocks`, and text parts of
a message joined by newlines. Doing the same here is what makes the two engines comparable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from backends.errors import InvalidRequest

PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class BuiltinTemplate:
    source: str
    end_token: str  # the token that ends an assistant turn
    eos_token: str


BUILTIN = {
    "phi3": BuiltinTemplate(PHI3, end_token="<|end|>", eos_token="<|endoftext|>"),
    "chatml": BuiltinTemplate(CHATML, end_token="<|im_end|>", eos_token="<|endoftext|>"),
}


class ChatTemplate:
    """A compiled chat template and the special tokens it is rendered with."""

    def __init__(self, source: str, special_tokens: Mapping[str, str], end_token: str) -> None:
        environment = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        environment.filters["tojson"] = _tojson
        environment.globals["raise_exception"] = _raise
        environment.globals["strftime_now"] = _strftime_now
        self._template = environment.from_string(source)
        self._special = dict(special_tokens)
        self.end_token = end_token
        self.bos_token = self._special.get("bos_token", "")

    @classmethod
    def builtin(cls, name: str) -> ChatTemplate:
        template = BUILTIN[name]
        return cls(template.source, {"eos_token": template.eos_token}, template.end_token)

    @classmethod
    def from_tokenizer_dir(cls, directory: Path) -> ChatTemplate:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        source = _template_source(directory, config)
        special = {
            key: _token_text(value)
            for key, value in config.items()
            if key.endswith("_token") and _token_text(value)
        }
        end_token = "<|end|>" if "<|end|>" in source else special.get("eos_token", "")
        if "<|im_end|>" in source:
            end_token = "<|im_end|>"
        return cls(source, special, end_token)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        strip_bos: bool = True,
        variables: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text for a chat, ending with the assistant's turn opened.

        `strip_bos`: drop a BOS the template writes, for an engine whose tokenizer adds one
        (TensorRT-LLM preprocessing with `add_special_tokens`), so that it is not doubled.
        `variables`: a request's `chat_template_kwargs` (Qwen3's `enable_thinking`), given to
        the template as vLLM gives them.
        """
        flat = [{**message, "content": _text_content(message)} for message in messages]
        context = {"add_generation_prompt": True, **self._special, **(variables or {})}
        try:
            prompt = self._template.render(messages=flat, **context)
        except jinja2.TemplateError as exc:
            raise InvalidRequest(f"the chat template rejected the messages: {exc}") from None
        if strip_bos and self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token) :]
        return prompt

    def writes_bos(self) -> bool:
        """Does a rendered chat start with the BOS token (as the original Phi-3 template's)?"""
        if not self.bos_token:
            return False
        try:
            prompt = self.render([{"role": "user", "content": "x"}], strip_bos=False)
        except InvalidRequest:
            return False
        return prompt.startswith(self.bos_token)


def template_variables(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a chat request gives its template, as vLLM gives them: its
    `chat_template_kwargs` (Qwen3's `enable_thinking`), and `add_generation_prompt` when the
    request turns it off. Every kind that renders for an engine uses this, so none drops them."""
    variables = payload.get("chat_template_kwargs") or {}
    if not isinstance(variables, Mapping):
        raise InvalidRequest("chat_template_kwargs must be an object", param="chat_template_kwargs")
    if payload.get("add_generation_prompt") is False:
        return {**variables, "add_generation_prompt": False}
    return dict(variables)


def _template_source(directory: Path, config: Mapping[str, Any]) -> str:
    jinja_file = directory / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates; "default" is the chat one
        by_name = {entry["name"]: entry["template"] for entry in template}
        template = by_name.get("default")
    if not isinstance(template, str):
        raise ValueError(f"{directory} has no chat template")
    return template


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return value if isinstance(value, str) else ""


def _text_content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise InvalidRequest(
                f"this backend takes text only, not '{part.get('type')}' parts", param="messages"
            )
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(format_: str) -> str:
    return datetime.now().strftime(format_)
