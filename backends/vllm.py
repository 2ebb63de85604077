"""vLLM's OpenAI-compatible server: every OpenAI field and vLLM extension goes through as sent.

vLLM applies the model's `generation_config.json` to sampling fields a request leaves out (its
default `--generation-config auto`), so the gateway changes nothing; it only reads the same
file (`model_dir`) to know what the engine runs with. A shadowed request also asks for the
token ids (`return_token_ids`), which the gateway takes out of the client's answer.
"""

from __future__ import annotations

from typing import Literal

from backends.base import UpstreamRequest
from backends.openai_http import OpenAIHTTPBackend, Outgoing
from backends.sampling import OPENAI_DEFAULTS, Sampling, model_defaults, resolve
from backends.settings import HTTPBackendSettings

AS_SENT = Outgoing(None)


class VllmSettings(HTTPBackendSettings):
    """`python -m vllm.entrypoints.openai.api_server ...`, by default on port 8000."""

    kind: Literal["vllm"] = "vllm"
    url: str = "http://127.0.0.1:8000"


class VllmDialect:
    def __init__(self, settings: VllmSettings) -> None:
        auto = settings.generation_config == "auto"
        self._defaults = model_defaults(settings.model_dir) if auto else {}

    def sampling(self, request: UpstreamRequest) -> Sampling:
        return resolve(request.payload, self._defaults, OPENAI_DEFAULTS)

    def stops(self, request: UpstreamRequest) -> tuple[str, ...]:
        return ()  # vLLM matches them on the text itself

    def payload(self, request: UpstreamRequest) -> Outgoing:
        if not request.token_ids:
            return AS_SENT
        return Outgoing({**request.payload, "return_token_ids": True})


def create(name: str, settings: VllmSettings) -> OpenAIHTTPBackend:
    return OpenAIHTTPBackend(name, settings, VllmDialect(settings))
