"""The Triton adapter's own rules, where no engine is needed: a server that never answers."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from backends.base import Completion, Health, Route, UpstreamRequest
from backends.errors import BackendUnavailable, GatewayError
from backends.triton.adapter import TritonBackend
from backends.triton.settings import TritonSettings

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A port that accepts TCP connections and never says a word (a hung or wrong server)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


Outcome = Health | Completion | GatewayError


def timed(call: str, url: str) -> tuple[float, Outcome]:
    """Runs `health` or `complete` on a fresh backend with a 0.3 s connect timeout."""
    settings = TritonSettings(url=url, chat_template="phi3", connect_timeout=0.3)

    async def scenario() -> Outcome:
        backend = TritonBackend("trt", settings)
        try:
            if call == "health":
                return await backend.health()
            request = UpstreamRequest(Route.CHAT, b"", CHAT, "m", "rid", False)
            try:
                return await backend.complete(request)
            except GatewayError as exc:
                return exc
        finally:
            await backend.close()

    started = time.monotonic()
    outcome = asyncio.run(scenario())
    return time.monotonic() - started, outcome


def test_health_gives_up_on_a_silent_server_within_connect_timeout(silent_url: str) -> None:
    elapsed, health = timed("health", silent_url)
    assert isinstance(health, Health)
    assert not health.ready
    assert "unreachable" in health.detail
    assert elapsed < 2.0  # gRPC's own connect timeout is 20 s


def test_a_request_to_a_silent_server_is_503_within_connect_timeout(silent_url: str) -> None:
    elapsed, error = timed("complete", silent_url)
    assert isinstance(error, BackendUnavailable)
    assert error.status_code == 503
    assert elapsed < 2.0


def test_a_chat_one_bos_longer_than_vllms_is_warned_about_at_start(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tiny model's template writes no BOS; its tokenizer adds one with special tokens."""

    async def start(special: bool) -> None:
        settings = TritonSettings(model_dir=tiny_model_dir, add_special_tokens=special)
        await TritonBackend("trt", settings).close()

    asyncio.run(start(True))
    asyncio.run(start(False))
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "backends.triton.adapter"
    assert "backend 'trt'" in warning.getMessage()
    assert "set add_special_tokens false" in warning.getMessage()


def test_add_special_tokens_false_needs_the_tokenizer() -> None:
    with pytest.raises(ValidationError, match="needs model_dir"):
        TritonSettings(chat_template="phi3", add_special_tokens=False)
