"""vLLM's OpenAI-compatible server: every OpenAI field and vLLM extension goes through as sent."""

from __future__ import annotations

from typing import Literal

from backends.openai_http import OpenAIHTTPBackend
from backends.settings import HTTPBackendSettings


class VllmSettings(HTTPBackendSettings):
    """`python -m vllm.entrypoints.openai.api_server ...`, by default on port 8000."""

    kind: Literal["vllm"] = "vllm"
    url: str = "http://127.0.0.1:8000"


def create(name: str, settings: VllmSettings) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(name, settings)
