"""Tasks: model aliases whose prompt, decoding and output the gateway owns, read from TOML.

A task is a folder with a `task.toml` (see `prompts/tagger/`); a second task is a second
folder, not a module. The client sends only its exchange; `Task.build` turns it into the full
chat body, the same bytes for every backend, with everything shared first and the exchange
last so the engine's prefix cache serves the shared part. `Task.result` expands the model's
short code into the JSON the client receives.

Example::

    tasks = load_tasks(Path("prompts"))
    body = tasks["tagger"].build({"model": "tagger", "messages": exchange}, model="phi-3")
    tasks["tagger"].expand("M")  # {"mood": "happy", "celebrate": True}
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from backends.errors import BackendProtocolError, InvalidRequest
from gateway.tasks.block import BlockError, ContextBlock
from gateway.tasks.config import (
    Label,
    TaskConfig,
    TaskConfigError,
    fields_of,
    placeholders,
    read_config,
)

PROMPT_VERSION_HEADER = "x-gateway-prompt-version"
DEBUG_HEADER = "x-gateway-debug"  # value "raw": the engine's own completion comes back as `raw`

# Decoding fields the task sets itself; a client's value is ignored, so every client gets the
# labels of the same prompt version whatever its SDK defaults are.
OWNED = frozenset(
    {
        "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens",
        "seed", "stop", "frequency_penalty", "presence_penalty", "repetition_penalty",
        "stream_options",
    }
)  # fmt: skip
# Fields that cannot change the answer.
NEUTRAL = frozenset(
    {"model", "messages", "user", "metadata", "store", "service_tier", "request_id", "priority"}
)


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One answered task request: what the client gets, and what shadow records keep."""

    alias: str
    version: str
    answer: str  # the model's own text, a code
    labels: dict[str, Label]
    completion: dict[str, Any]  # the engine's chat.completion, parsed

    def body(self, include_raw: bool = False) -> bytes:
        """A `chat.completion` whose content is the labels as JSON (`raw`: the engine's)."""
        completion = self.completion
        body: dict[str, Any] = {
            "id": completion.get("id") or "chatcmpl-task",
            "object": "chat.completion",
            "created": completion.get("created") or int(time.time()),
            "model": self.alias,
            "system_fingerprint": self.version,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": orjson.dumps(self.labels).decode()},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": completion.get("usage"),
        }
        if include_raw:
            body["raw"] = completion
        return orjson.dumps(body)


class Task:
    """A validated task: pure functions from a client's exchange to an engine request and back."""

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.alias = config.alias
        self.version = config.version
        self.codes = tuple(config.output.codes)
        self.fields = fields_of(config.output.json_schema)
        self.schema = config.output.json_schema
        self._labels = config.output.codes
        self._roles = placeholders(config.prompt.exchange)
        block = config.block
        self._block = ContextBlock(block.header, block.fields) if block is not None else None
        shared: list[dict[str, str]] = [{"role": "system", "content": config.prompt.system}]
        for example in config.examples:
            shared.append({"role": "user", "content": self.render(example.exchange)})
            shared.append({"role": "assistant", "content": example.answer})
        self._shared = tuple(shared)
        # Everything that decides what a client gets: a prompt edit without a version bump
        # still shows as a new fingerprint in eval reports.
        canonical = {
            "shared": shared,
            "exchange": config.prompt.exchange,
            "decoding": config.decoding.model_dump(),
            "codes": config.output.codes,
        }
        digest = hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))
        self.fingerprint = digest.hexdigest()[:12]

    def build(self, payload: Mapping[str, Any], model: str) -> dict[str, Any]:
        """The full chat body for a client's body that holds only the exchange.

        Depends on nothing but the payload's messages and `model`: every backend gets the same
        prompt. Raises `InvalidRequest` for fields the task cannot honour.
        """
        self._check_fields(payload)
        exchange = self.exchange_of(payload.get("messages"))
        messages = [dict(message) for message in self._shared]
        messages.append({"role": "user", "content": self.render(exchange)})
        return {
            "model": model,
            "messages": messages,
            "temperature": self.config.decoding.temperature,
            "max_tokens": self.config.decoding.max_tokens,
            # vLLM reads it as is; the Triton adapter turns a choice into its guided regex.
            "structured_outputs": {"choice": list(self.codes)},
        }

    def render(self, exchange: Mapping[str, str]) -> str:
        """The exchange as the final user message; values are inserted, never interpreted."""
        values = {role: exchange[role] for role in self._roles}
        return self.config.prompt.exchange.format_map(values)

    def exchange_of(self, messages: Any) -> dict[str, str]:
        """The client's messages by role: exactly one per placeholder of the template, or
        (with a `[block]`) a system message and one user message holding the block."""
        listed: list[Any] = messages if isinstance(messages, list) else []
        if self._block is not None:
            text = self._block_text(self._block, listed)
            if text is not None:
                return self._read_block(self._block, text)
        wanted = " and ".join(f"one '{role}' message" for role in self._roles)
        if self._block is not None:
            wanted += (
                f" (or a system message and one user message holding a {self._block.header} block)"
            )
        exchange: dict[str, str] = {}
        for message in listed:
            role = message.get("role") if isinstance(message, dict) else None
            if role not in self._roles or role in exchange:
                raise InvalidRequest(
                    f"the task '{self.alias}' builds its own prompt: send only the exchange, "
                    f"{wanted} (got a second or a '{role}' message)",
                    param="messages",
                )
            exchange[role] = _text(message.get("content"), self.alias)
        if len(exchange) != len(self._roles):
            raise InvalidRequest(f"the task '{self.alias}' needs {wanted}", param="messages")
        return exchange

    def _block_text(self, block: ContextBlock, messages: list[Any]) -> str | None:
        """The user message's text when the messages take the block's shape: a system
        message (replaced by the task's own) then one user message, or that user message
        alone when it starts with the block's header."""
        if not all(isinstance(message, dict) for message in messages):
            return None
        roles = [message.get("role") for message in messages]
        if roles == ["system", "user"]:
            return _text(messages[1].get("content"), self.alias)
        if roles == ["user"]:
            text = _text(messages[0].get("content"), self.alias)
            return text if block.holds(text) else None
        return None

    def _read_block(self, block: ContextBlock, text: str) -> dict[str, str]:
        try:
            return block.read(text)
        except BlockError as exc:
            lines = " and ".join(f'{name}: "..."' for name in block.fields.values())
            raise InvalidRequest(
                f"the task '{self.alias}' reads a system message and one user message as a "
                f"{block.header} block with the lines {lines}: {exc}",
                param="messages",
            ) from None

    def expand(self, text: str) -> dict[str, Label] | None:
        """The labels of a code, or None when the text is not one of the codes."""
        labels = self._labels.get(text.strip())
        return dict(labels) if labels is not None else None

    def result(self, body: bytes) -> TaskResult:
        """Reads an engine's chat.completion; `BackendProtocolError` (502) if unusable."""
        headers = {PROMPT_VERSION_HEADER: self.version}
        try:
            completion = orjson.loads(body)
            text = completion["choices"][0]["message"]["content"]
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise BackendProtocolError(
                f"the backend's answer to task '{self.alias}' is not a chat completion",
                headers=headers,
            ) from None
        labels = self.expand(text) if isinstance(text, str) else None
        if labels is None:
            shown = text[:20] if isinstance(text, str) else text
            raise BackendProtocolError(
                f"the model answered {shown!r}, which is not one of the codes of task "
                f"'{self.alias}' ({', '.join(self.codes)})",
                code="invalid_task_output",
                headers=headers,
            )
        return TaskResult(self.alias, self.version, text, labels, completion)

    def _check_fields(self, payload: Mapping[str, Any]) -> None:
        if payload.get("stream"):
            raise InvalidRequest(
                f"the task '{self.alias}' answers in one piece: send stream=false",
                param="stream",
                code="stream_not_supported",
            )
        for key, value in payload.items():
            if key in OWNED or key in NEUTRAL or key == "stream" or value is None:
                continue
            if key == "n" and value == 1:
                continue
            raise InvalidRequest(
                f"the task '{self.alias}' sets its prompt, decoding and output itself, "
                f"so it cannot honour '{key}'",
                param=key,
                code="unsupported_parameter",
            )


def _text(content: Any, alias: str) -> str:
    """A message's text: a string, or text parts joined by newlines as vLLM joins them."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        return "\n".join(part["text"] for part in content)
    raise InvalidRequest(f"the task '{alias}' takes text messages only", param="messages")


def load_task(path: Path) -> Task:
    """One task from its `task.toml`."""
    return Task(read_config(path))


def load_tasks(folder: Path) -> dict[str, Task]:
    """Every `<folder>/*/task.toml`, by alias; a duplicate alias is a `TaskConfigError`."""
    tasks: dict[str, Task] = {}
    for path in sorted(folder.glob("*/task.toml")):
        task = load_task(path)
        if task.alias in tasks:
            raise TaskConfigError(f"{path}: the alias '{task.alias}' is already used")
        tasks[task.alias] = task
    return tasks
