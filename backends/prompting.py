"""Prompts rendered and tokenised as vLLM does, for engines the gateway hands token ids (the
gRPC kind, and trtllm-serve given `model_dir`), so both legs read the same ids by construction.

vLLM renders a chat with the model's template and tokenises it without special tokens (the
template decides about BOS); a completion prompt is tokenised with them. Needs the model's
tokenizer files (`tokenizer.json`, `tokenizer_config.json`) in `model_dir`.

Example::

    prompter = Prompter.from_dir(Path("/models/qwen3"))
    ids = prompter.prompt_ids(Route.CHAT, {"messages": [...], "chat_template_kwargs": {...}})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from backends.base import Route
from backends.chat_template import ChatTemplate, template_variables
from backends.errors import UnsupportedParameter


class Prompter:
    """A model's chat template and tokenizer."""

    def __init__(self, template: ChatTemplate, tokenizer: Tokenizer) -> None:
        self.template = template
        self.tokenizer = tokenizer
        end = tokenizer.token_to_id(template.end_token) if template.end_token else None
        self.end_of_turn_id: int | None = end

    @classmethod
    def from_dir(cls, model_dir: Path) -> Prompter:
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        return cls(ChatTemplate.from_tokenizer_dir(model_dir), tokenizer)

    def prompt_ids(self, route: Route, payload: Mapping[str, Any]) -> list[int]:
        """The token ids vLLM reads for this request."""
        if route is Route.CHAT:
            variables = template_variables(payload)
            text = self.template.render(payload["messages"], strip_bos=False, variables=variables)
            return self.encode(text, special=False)
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, list) and all(isinstance(i, int) for i in prompt):
            return list(prompt)  # token ids, read as they are
        if not isinstance(prompt, str):
            raise UnsupportedParameter("this backend takes one prompt, not a batch", param="prompt")
        return self.encode(prompt, special=True)

    def encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))
