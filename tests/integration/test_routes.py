"""Two models, one gateway: the team's Qwen3 chat model and the Phi-3 tagger, each on its own
real vLLM engine and each with its own migration, through the `openai` SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.conftest import QWEN3_MODEL, TINY_MODEL
from tests.engines.trtllm_serve_engine import TrtllmServeEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PHI3 = "phi-3-mini"
CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Pika ơi, 5 + 7?"}]
EXCHANGE: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "con làm xong rồi nè"},
    {"role": "assistant", "content": "Giỏi quá! Đúng rồi."},
]


@pytest.fixture(scope="module")
def trt_qwen3(tiny_qwen3_dir: Path) -> Iterator[TrtllmServeEngine]:
    with TrtllmServeEngine(tiny_qwen3_dir, served_name=QWEN3_MODEL) as engine:
        yield engine


@pytest.fixture(scope="module")
def trt_phi3(tiny_model_dir: Path) -> Iterator[TrtllmServeEngine]:
    with TrtllmServeEngine(tiny_model_dir, guided_decoding=True) as engine:
        yield engine


def backends(
    vllm_engine: VllmEngine, vllm_qwen3_engine: VllmEngine, trt_qwen3: TrtllmServeEngine,
    trt_phi3: TrtllmServeEngine, tiny_qwen3_dir: Path, tiny_model_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    return {
        "vllm-qwen3": VllmSettings(url=vllm_qwen3_engine.url, model=QWEN3_MODEL),
        "trt-qwen3": TrtllmServeSettings(url=trt_qwen3.url, model_dir=tiny_qwen3_dir),
        "vllm-phi3": VllmSettings(url=vllm_engine.url, model=TINY_MODEL),
        "trt-phi3": TrtllmServeSettings(url=trt_phi3.url, model_dir=tiny_model_dir),
    }


def routes(phi3: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        QWEN3_MODEL: {"primary": "vllm-qwen3", "shadow": "trt-qwen3", "shadow_rate": 1.0,
                      "noise_rate": 0.0},
        PHI3: phi3 or {"primary": "vllm-phi3", "canary": "trt-phi3", "canary_percent": 50,
                       "tasks": ["tagger"], "gate": {"agreement": "structured"}},
    }  # fmt: skip


@pytest.fixture(scope="module")
def pool(
    vllm_engine: VllmEngine, vllm_qwen3_engine: VllmEngine, trt_qwen3: TrtllmServeEngine,
    trt_phi3: TrtllmServeEngine, tiny_qwen3_dir: Path, tiny_model_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    return backends(
        vllm_engine, vllm_qwen3_engine, trt_qwen3, trt_phi3, tiny_qwen3_dir, tiny_model_dir
    )


def settings_for(pool: dict[str, Any], store: Path, **more: Any) -> Settings:
    return Settings(
        backends=pool, routes=routes(), tasks_enabled=True, tasks_dir=PROMPTS,
        records_url=f"sqlite:///{store}", **more,
    )  # fmt: skip


def served_by(client: openai.OpenAI, model: str, user: str, **kwargs: Any) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=CHAT, max_tokens=4, temperature=0, user=user, **kwargs
    )
    return raw.headers["x-gateway-backend"]


def test_one_gateway_serves_both_models_and_the_tagger(
    pool: dict[str, Any], tmp_path: Path
) -> None:
    with ThreadedServer(create_app(settings_for(pool, tmp_path / "r.db"))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        assert sorted(model.id for model in client.models.list()) == sorted(
            [QWEN3_MODEL, PHI3, "tagger"]
        )
        assert served_by(client, QWEN3_MODEL, "u1") == "vllm-qwen3"
        assert {served_by(client, PHI3, f"user-{n}") for n in range(12)} == {
            "vllm-phi3", "trt-phi3"
        }  # fmt: skip
        tagged = client.chat.completions.with_raw_response.create(model="tagger", messages=EXCHANGE)
        assert tagged.headers["x-gateway-backend"] in ("vllm-phi3", "trt-phi3")
        assert '"mood"' in (tagged.parse().choices[0].message.content or "")
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=CHAT)


def test_the_canary_share_holds_at_several_percentages(
    pool: dict[str, Any], tmp_path: Path
) -> None:
    users = [f"child-{n}" for n in range(60)]
    for percent in (0, 25, 100):
        phi3 = {"primary": "vllm-phi3", "canary": "trt-phi3", "canary_percent": percent}
        store = f"sqlite:///{tmp_path / 'r.db'}"
        settings = Settings(backends=pool, routes=routes(phi3), records_url=store)
        with ThreadedServer(create_app(settings)) as server:
            client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
            sides = [served_by(client, PHI3, user) for user in users]
            again = [served_by(client, PHI3, user) for user in users[:10]]
        share = sides.count("trt-phi3") / len(users)
        assert abs(share - percent / 100) <= 0.2, (percent, share)
        assert again == sides[:10]  # sticky per user


def toml(routes_: dict[str, Any]) -> str:
    """A routes file holding `routes_`."""
    lines = []
    for name, route in routes_.items():
        lines.append(f'[routes."{name}"]')
        for key, value in route.items():
            if isinstance(value, dict):
                inner = ", ".join(f'{k} = "{v}"' for k, v in value.items())
                lines.append(f"{key} = {{ {inner} }}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, list):
                lines.append(f"{key} = {json.dumps(value)}")
            else:
                lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


def long_stream(client: openai.OpenAI, model: str, user: str, done: dict[str, Any]) -> None:
    """A stream that runs for seconds; `done[model]` gets its finish reason and token count."""
    chunks = client.chat.completions.create(
        model=model, messages=CHAT, max_tokens=1200, temperature=0, user=user, stream=True,
        extra_body={"ignore_eos": True}, stream_options={"include_usage": True},
    )  # fmt: skip
    tokens, reason = 0, None
    for chunk in chunks:
        if chunk.choices:
            reason = chunk.choices[0].finish_reason or reason
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    done[model] = (reason, tokens)


def test_moving_one_route_leaves_the_other_alone(
    pool: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Phi-3 route is cut over by reload while a stream runs on each route; both streams
    finish on the configuration they started with, and the Qwen3 route keeps shadowing."""
    routes_file = tmp_path / "routes.toml"
    phi3_canary = {"primary": "vllm-phi3", "canary": "trt-phi3", "canary_percent": 50}
    routes_file.write_text(toml(routes(phi3_canary)), encoding="utf-8")
    backends_json = json.dumps(
        {name: json.loads(value.model_dump_json()) for name, value in pool.items()}
    )
    for key, value in {
        "GATEWAY_BACKENDS": backends_json,
        "GATEWAY_ROUTES_FILE": str(routes_file),
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "GATEWAY_RECORDS_TEXT": "full",
        "GATEWAY_ADMIN_TOKEN": "a-token-of-sixteen-chars",
    }.items():
        monkeypatch.setenv(key, value)
    with ThreadedServer(create_app()) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        pinned = next(
            f"u{n}" for n in range(100) if served_by(client, PHI3, f"u{n}") == "vllm-phi3"
        )
        done: dict[str, Any] = {}
        streams = [
            threading.Thread(target=long_stream, args=(client, model, pinned, done))
            for model in (QWEN3_MODEL, PHI3)
        ]
        for stream in streams:
            stream.start()
        time.sleep(0.5)  # both streams are under way
        cutover = {"primary": "trt-phi3", "shadow": "vllm-phi3", "shadow_rate": 1.0}
        routes_file.write_text(toml(routes(cutover)), encoding="utf-8")
        headers = {"authorization": "Bearer a-token-of-sixteen-chars"}
        reloaded = httpx.post(server.url + "/admin/reload", headers=headers, timeout=30)
        assert reloaded.json()["routes"] == {QWEN3_MODEL: "vllm-qwen3", PHI3: "trt-phi3"}
        assert {served_by(client, PHI3, f"user-{n}") for n in range(6)} == {"trt-phi3"}
        assert served_by(client, QWEN3_MODEL, pinned) == "vllm-qwen3"
        for stream in streams:
            stream.join(timeout=120)
    assert done == {QWEN3_MODEL: ("length", 1200), PHI3: ("length", 1200)}
    pairs = stored_pairs(tmp_path / "r.db")
    by_route = {pair.route for pair in pairs}
    assert QWEN3_MODEL in by_route  # the Qwen3 route shadowed before and after the reload
    assert {p.candidate.backend for p in pairs if p.route == QWEN3_MODEL} == {"trt-qwen3"}
    cut = [p for p in pairs if p.route == PHI3 and p.kind == "shadow"]
    assert {(p.primary.backend, p.candidate.backend) for p in cut} == {("trt-phi3", "vllm-phi3")}
