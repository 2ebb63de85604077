"""Routing: a model name selects its route in one dict lookup, a route picks its backend, and
a route whose name is learnt from its engine never waits on that engine per request.

The first tests build the router from real adapters and touch no network. The rest run the
gateway on port 0 with its primary mute (a server that accepts and never answers: no engine
does that on demand) or unreachable (a closed port) at start, with and without a fallback on
the real vLLM test engine (issue 21, point 7).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends import registry
from backends.base import Health
from backends.errors import BackendUnavailable, NotFound, Overloaded
from backends.registry import BackendSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.proxy.guard import Circuit, Guarded
from gateway.proxy.routing import ModelRoute, Router, canary_bucket
from gateway.routes import RouteSettings, RouteSpec
from gateway.settings import Settings
from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine, free_port
from tests.support.fake_upstream import MuteUpstream
from tests.support.servers import ThreadedServer

CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 3.0  # a health check waits 3 s for a mute engine
FAST = 1.0  # seconds: a fast 503 comes well within the engine's timeouts


def guarded(name: str, cooldown: float = 10.0) -> Guarded:
    backend = registry.create(name, VllmSettings(url="http://127.0.0.1:9"))  # never called
    return Guarded(backend, 4, 1.0, Circuit(1, cooldown), max_queue=4)


POOL = {name: guarded(name) for name in ("qwen3", "phi3", "phi3-spare")}


def router(*specs: RouteSpec) -> Router:
    routes = [ModelRoute(spec, POOL) for spec in specs]
    tasks = {task: route for route in routes for task in route.spec.settings.tasks}
    return Router(routes, tasks)


def test_a_name_or_alias_selects_its_route_and_an_unknown_name_is_404() -> None:
    chat = RouteSpec("qwen3-chat", RouteSettings(primary="qwen3", aliases=["chat"]))
    phi3 = RouteSpec("phi-3-mini", RouteSettings(primary="phi3", tasks=["tagger"]))
    routes = router(chat, phi3)
    assert routes.route_for("qwen3-chat").primary is POOL["qwen3"]
    assert routes.route_for("chat") is routes.route_for("qwen3-chat")
    assert routes.route_for("phi-3-mini").primary is POOL["phi3"]
    assert routes.tasks["tagger"] is routes.route_for("phi-3-mini")
    assert routes.public_models() == ["chat", "phi-3-mini", "qwen3-chat"]
    with pytest.raises(NotFound) as caught:
        routes.route_for("qwen3")  # a backend's name is not a model name
    assert (caught.value.status_code, caught.value.code) == (404, "model_not_found")


def test_a_route_at_its_cap_refuses_with_429_and_the_other_route_is_admitted() -> None:
    capped = RouteSpec("qwen3-chat", RouteSettings(primary="qwen3", max_concurrency=2))
    other = RouteSpec("phi-3-mini", RouteSettings(primary="phi3"))
    routes = router(capped, other)
    chat, phi3 = routes.route_for("qwen3-chat"), routes.route_for("phi-3-mini")
    chat.admit()
    chat.admit()
    with pytest.raises(Overloaded) as caught:
        chat.admit()
    assert caught.value.status_code == 429
    assert caught.value.headers == {"Retry-After": "1"}
    assert "'qwen3-chat' is at its limit of 2 requests in flight" in caught.value.message
    for _ in range(10):
        phi3.admit()  # no cap of its own: only its backends' limits apply
    chat.active -= 1  # a request finished (the handler's `finally`)
    chat.admit()
    assert chat.active == 2


def test_a_route_learning_its_name_never_picks_its_primary() -> None:
    learning = RouteSpec(None, RouteSettings(primary="qwen3"), shorthand=True)
    routes = router(learning)
    route = routes.route_for("anything")  # no name to refuse by yet
    with pytest.raises(BackendUnavailable) as caught:
        route.serving(None)
    assert caught.value.status_code == 503
    assert caught.value.headers == {"Retry-After": "1"}
    assert routes.public_models() == []
    # The readiness probe's answer names it; then it is a route like the others.
    routes.note_health("qwen3", Health(True, "ok", "qwen3-chat"))
    assert route.name == "qwen3-chat"
    assert routes.route_for("qwen3-chat").serving(None) is POOL["qwen3"]
    with pytest.raises(NotFound):
        routes.route_for("anything")


@pytest.mark.parametrize("circuit", ["closed", "open", "half_open"])
def test_while_learning_its_name_the_fallback_serves_whatever_the_circuit(circuit: str) -> None:
    pool = {"main": guarded("main", cooldown=0.0 if circuit == "half_open" else 60.0)}
    pool["spare"] = guarded("spare")
    if circuit != "closed":
        pool["main"].circuit.trip()
    assert pool["main"].circuit.state == circuit
    spec = RouteSpec(None, RouteSettings(primary="main", fallback="spare"), shorthand=True)
    route = Router([ModelRoute(spec, pool)], {}).route_for("anything")
    assert route.serving(None) is pool["spare"]


def test_a_user_stays_on_one_side_of_the_canary() -> None:
    spec = RouteSpec("phi-3-mini", RouteSettings(primary="phi3", canary="phi3-spare",
                                                 canary_percent=50))  # fmt: skip
    route = ModelRoute(spec, POOL, draw=lambda: 0.0)  # anonymous requests: always the canary
    sides = {user: route.serving(user) for user in (f"user-{n}" for n in range(200))}
    assert all(route.serving(user) is side for user, side in sides.items())
    canaried = sum(side is POOL["phi3-spare"] for side in sides.values())
    assert 70 < canaried < 130  # about half of the users
    assert route.serving(None) is POOL["phi3-spare"]
    assert canary_bucket("user-1") == canary_bucket("user-1")


# --- a real gateway whose primary is mute or unreachable at start (issue 21, point 7) ---


@contextlib.contextmanager
def primary(kind: str) -> Iterator[tuple[str, MuteUpstream | None]]:
    if kind == "mute":
        with MuteUpstream() as mute:
            yield mute.url, mute
    else:
        yield f"http://127.0.0.1:{free_port()}", None  # nothing listens there


def settings(tmp_path: Path, url: str, **fields: Any) -> Settings:
    backends: dict[str, BackendSettings] = {
        "main": VllmSettings(
            url=url, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            model=fields.pop("model", None), circuit_cooldown=fields.pop("cooldown", 10.0),
        ),
        **fields.pop("backends", {}),
    }  # fmt: skip
    return Settings(
        backends=backends, primary="main", records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
        probe_interval=fields.pop("probe_interval", 60.0), probe_conformance_interval=0,
        **fields,
    )  # fmt: skip


def timed_chat(url: str, model: str = TINY_MODEL) -> tuple[httpx.Response, float]:
    body = {"model": model, "messages": [{"role": "user", "content": "Pika ơi"}], "max_tokens": 1}
    started = time.perf_counter()
    answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=30)
    return answer, time.perf_counter() - started


@pytest.mark.parametrize("kind", ["mute", "unreachable"])
def test_without_a_fallback_each_request_gets_a_fast_503_with_retry_after(
    kind: str, tmp_path: Path
) -> None:
    with primary(kind) as (url, mute), ThreadedServer(create_app(settings(tmp_path, url))) as gw:
        heard = mute.requests if mute else 0
        if mute is not None:
            assert heard >= 1  # the health check at start reached it and got no answer
        for _ in range(5):
            answer, took = timed_chat(gw.url)
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "1"
            error = answer.json()["error"]
            assert error["message"] == "backend 'main' has not said which model it serves yet"
            assert took < FAST, f"{took:.2f} s: the request waited on the engine"
        if mute is not None:
            assert mute.requests == heard  # no health call, nor anything else, per request


@pytest.mark.parametrize("kind", ["mute", "unreachable"])
def test_with_a_fallback_the_fallback_serves_at_once(
    kind: str, vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    """The primary's circuit turns half-open after 1 s: the fallback still serves."""
    spare = {"spare": VllmSettings(url=vllm_engine.url, model=TINY_MODEL)}
    with primary(kind) as (url, mute):
        configured = settings(tmp_path, url, backends=spare, fallback="spare", cooldown=1.0)
        with ThreadedServer(create_app(configured)) as gw:
            heard = mute.requests if mute else 0
            for _ in range(5):
                answer, took = timed_chat(gw.url)
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-gateway-backend"] == "spare"
                assert answer.headers["x-gateway-fallback-for"] == "main"
                assert answer.json()["model"] == TINY_MODEL
                assert answer.json()["usage"]["completion_tokens"] == 1
                assert took < CONNECT_TIMEOUT, f"{took:.2f} s: the request waited on the engine"
                time.sleep(0.3)
            if mute is not None:
                assert mute.requests == heard
            metrics = httpx.get(gw.url + "/metrics").text
            assert 'gateway_fallback_total{backend="spare"} 5.0' in metrics


@pytest.mark.parametrize("named_by", ["GATEWAY_MODELS", "the backend's model"])
def test_a_configured_name_is_the_route_s_name_from_the_start(
    named_by: str, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # down at start
    if named_by == "GATEWAY_MODELS":
        configured = settings(tmp_path, url, models=["phi-3-mini"])
    else:
        configured = settings(tmp_path, url, model="phi-3-mini")
    with ThreadedServer(create_app(configured)) as gw:
        models = httpx.get(gw.url + "/v1/models").json()["data"]
        assert [model["id"] for model in models] == ["phi-3-mini"]
        answer, took = timed_chat(gw.url, "phi-3-mini")
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "circuit_open"  # its failed check at start
        assert int(answer.headers["retry-after"]) >= 1
        assert took < FAST
        unknown, _ = timed_chat(gw.url, "qwen3-chat")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"


def test_the_readiness_probe_learns_the_name_once_the_engine_is_up(
    vllm_engine: VllmEngine, tmp_path: Path
) -> None:
    """Down at start; then a real OpenAI server appears on its port (a gateway in front of
    the vLLM test engine): the background probe learns the name and the primary serves it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    configured = settings(tmp_path, url, probe_interval=0.2, cooldown=0.5)
    with ThreadedServer(create_app(configured)) as gw:
        assert timed_chat(gw.url)[0].status_code == 503
        engine = Settings(
            backends={"vllm": VllmSettings(url=vllm_engine.url, model=TINY_MODEL)},
            records_url=f"sqlite:///{tmp_path / 'engine.db'}", probe_interval=0,
        )  # fmt: skip
        with ThreadedServer(create_app(engine), port=port):
            deadline = time.monotonic() + 15
            answer, _ = timed_chat(gw.url)
            while answer.status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                answer, _ = timed_chat(gw.url)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-gateway-backend"] == "main"
            models = httpx.get(gw.url + "/v1/models").json()["data"]
            assert [model["id"] for model in models] == [TINY_MODEL]
            assert timed_chat(gw.url, "qwen3-chat")[0].status_code == 404
