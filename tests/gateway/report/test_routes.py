"""Reports per route: `gateway report` (a subprocess on a real SQLite store) and
`GET /admin/report` judge each route's pairs by the route's own gate, and fail if any fails.

The pairs are written here, and every count the tests expect is counted here from them:

    qwen3-chat   the chat model: free text, 12 shadow pairs (one answer differs), 2 stored
                 before routes existed (no route: they go under their model name), 5 noise pairs
    phi-3-mini   the tagger's route, taken through the alias `tagger`: 8 shadow pairs whose JSON
                 differs only in spacing (exact agreement 0, structured all), 4 noise pairs
    gemma-old    a route no longer configured, two days older: 3 shadow pairs, 2 noise pairs
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import SecretStr

from backends.registry import BackendSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.gate_rule import GateRule
from gateway.probes import ProbeResult
from gateway.records.sqlite import SqliteStore
from gateway.report.routes import render_routes, summarize_routes
from gateway.settings import Settings
from gateway.shadow.legs import parse_json
from gateway.shadow.pairs import Leg, PairKind, PairRecord, Params
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[3] / "prompts"
T0 = 1_700_000_000.0
SINCE = datetime.fromtimestamp(T0 - 60, UTC).isoformat()  # leaves out gemma-old
TOKEN = "admin-token-0123456789abcdef"
CHAT, TAGGER, OLD = "qwen3-chat", "phi-3-mini", "gemma-old"
SCHEMA = {
    "type": "object",
    "properties": {"mood": {"enum": ["happy", "calm"]}, "celebrate": {"type": "boolean"}},
    "required": ["mood", "celebrate"],
}
TAGGED = Params(max_tokens=1, temperature=0.0, schema=SCHEMA, response_format="json_schema")
FREE = Params(max_tokens=64)
COMPACT, SPACED = '{"mood":"happy","celebrate":true}', '{"mood": "happy", "celebrate": true}'


def leg(backend: str, text: str, e2e: float, tokens: int = 8) -> Leg:
    return Leg(
        backend, 200, text, finish_reason="stop", prompt_tokens=30, completion_tokens=tokens,
        e2e_ms=e2e, parsed=parse_json(text),
    )  # fmt: skip


def record(
    n: int, kind: PairKind, model: str, route: str | None, legs: tuple[Leg, Leg], at: float = T0
) -> PairRecord:
    params = TAGGED if model == "tagger" else FREE
    return PairRecord(
        pair_id=f"{route or model}-{kind}-{n}", created_at=at + n, kind=kind, public_model=model,
        path="/v1/chat/completions", request_hash=f"hash-{route}-{kind}-{n}", request=None,
        params=params, primary=legs[0], candidate=legs[1], route=route,
    )  # fmt: skip


def chat_pairs() -> list[PairRecord]:
    answers = ["5 + 7 = 12, giỏi quá!"] * 11 + ["5 + 7 = 12."]
    pairs = [
        record(i, "shadow", CHAT, CHAT, (leg("vllm-qwen3", answers[0], 100.0 + i),
                                         leg("trt-qwen3", text, 104.0 + i)))
        for i, text in enumerate(answers)
    ]  # fmt: skip
    same = (leg("vllm-qwen3", answers[0], 100.0), leg("trt-qwen3", answers[0], 104.0))
    pairs += [record(20 + i, "shadow", CHAT, None, same) for i in range(2)]  # before routes
    noise = (leg("vllm-qwen3", answers[0], 100.0), leg("vllm-qwen3", answers[0], 101.0))
    return pairs + [record(40 + i, "noise", CHAT, CHAT, noise) for i in range(5)]


def tagger_pairs() -> list[PairRecord]:
    # The task's one-token code, expanded to JSON by the gateway.
    spaced = (leg("vllm-phi3", COMPACT, 25.0, 1), leg("trt-phi3", SPACED, 20.0, 1))
    same = (leg("vllm-phi3", COMPACT, 25.0, 1), leg("vllm-phi3", COMPACT, 24.0, 1))
    shadow = [record(i, "shadow", "tagger", TAGGER, spaced) for i in range(8)]
    return shadow + [record(20 + i, "noise", "tagger", TAGGER, same) for i in range(4)]


def old_pairs() -> list[PairRecord]:
    same = (leg("vllm-gemma", "xin chào", 50.0), leg("trt-gemma", "xin chào", 50.0))
    at = T0 - 2 * 86400
    shadow = [record(i, "shadow", OLD, OLD, same, at) for i in range(3)]
    return shadow + [record(10 + i, "noise", OLD, OLD, same, at) for i in range(2)]


def shadow_of(pairs: list[PairRecord]) -> list[PairRecord]:
    return [pair for pair in pairs if pair.kind == "shadow"]


POOL = {name: {"kind": "vllm", "url": f"http://10.0.0.{i}:8000"}
        for i, name in enumerate(["vllm-qwen3", "trt-qwen3", "vllm-phi3", "trt-phi3"])}  # fmt: skip
CHAT_GATE = {"min_pairs": 12, "min_noise_pairs": 5, "max_agreement_drop": 0.1}
TAGGER_GATE = {"agreement": "structured", "min_pairs": 8, "min_noise_pairs": 4}


def routes(chat_gate: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        CHAT: {"primary": "vllm-qwen3", "shadow": "trt-qwen3", "gate": chat_gate or CHAT_GATE},
        TAGGER: {"primary": "vllm-phi3", "shadow": "trt-phi3", "tasks": ["tagger"],
                 "gate": TAGGER_GATE},
        **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("records") / "pairs.db"

    async def fill() -> None:
        store = SqliteStore(path)
        await store.write_batch(chat_pairs() + tagger_pairs() + old_pairs())
        await store.close()

    asyncio.run(fill())
    return f"sqlite:///{path}"


def report(
    store_url: str, cwd: Path, configured: dict[str, Any], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    clean |= {"GATEWAY_RECORDS_URL": store_url, "GATEWAY_BACKENDS": json.dumps(POOL)}
    clean |= {"GATEWAY_ROUTES": json.dumps(configured), "GATEWAY_TASKS_ENABLED": "true"}
    clean |= {"GATEWAY_TASKS_DIR": str(PROMPTS), **env}
    command = [sys.executable, "-m", "gateway", "report", *args]
    return subprocess.run(command, cwd=cwd, env=clean, capture_output=True, text=True, timeout=60)


def test_each_route_is_judged_by_its_own_gate(store_url: str, tmp_path: Path) -> None:
    done = report(store_url, tmp_path, routes(), f"--since={SINCE}", "--format=json")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = orjson.loads(done.stdout)
    assert summary["passed"] is True
    assert sorted(summary["routes"]) == [TAGGER, CHAT]
    chat, tagger = summary["routes"][CHAT], summary["routes"][TAGGER]
    assert chat["pairs"]["records"] == len(chat_pairs())  # those without a route too
    assert tagger["pairs"]["records"] == len(tagger_pairs())
    compared = shadow_of(chat_pairs())
    agreeing = sum(pair.primary.text == pair.candidate.text for pair in compared)
    assert (agreeing, len(compared)) == (13, 14)
    assert chat["agreement"]["exact"]["successes"] == agreeing
    assert chat["agreement"]["exact"]["n"] == len(compared)
    tagged = shadow_of(tagger_pairs())
    assert tagger["agreement"]["exact"]["successes"] == 0
    same_fields = sum(pair.primary.parsed == pair.candidate.parsed for pair in tagged)
    assert tagger["agreement"]["structured"]["successes"] == same_fields == len(tagged)
    assert (chat["gate"]["agreement"], chat["gate"]["min_pairs"]) == ("exact", 12)
    assert (tagger["gate"]["agreement"], tagger["gate"]["min_pairs"]) == ("structured", 8)
    assert chat["gate"]["max_p95_ratio"] == tagger["gate"]["max_p95_ratio"] == 1.1  # default
    assert chat["verdict"]["passed"]
    assert tagger["verdict"]["passed"]


def test_judged_by_the_global_gate_the_tagger_would_fail(store_url: str, tmp_path: Path) -> None:
    """The control for the test above: its exact agreement is 0 of 8."""
    done = report(
        store_url, tmp_path, routes(), f"--since={SINCE}", f"--route={TAGGER}", "--agreement=exact"
    )
    assert done.returncode == 1
    assert "FAIL agreement (exact): candidate 0.0%" in done.stdout


def test_any_failing_route_fails_the_command(store_url: str, tmp_path: Path) -> None:
    strict = routes({**CHAT_GATE, "max_p95_ratio": 1.0})  # the chat candidate is 4 ms slower
    done = report(store_url, tmp_path, strict, f"--since={SINCE}")
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("2 routes: FAIL")
    sections = {
        section.split()[0]: section for section in done.stdout.split("=" * 24 + " route ")[1:]
    }
    assert sorted(sections) == [TAGGER, CHAT]
    assert "VERDICT: FAIL" in sections[CHAT]
    assert "FAIL p95 e2e: candidate" in sections[CHAT]
    assert "VERDICT: PASS" in sections[TAGGER]
    one = report(store_url, tmp_path, strict, f"--since={SINCE}", f"--route={TAGGER}")
    assert one.returncode == 0
    assert "VERDICT: PASS" in one.stdout
    assert "routes:" not in one.stdout  # one route: the single report's shape
    assert (
        report(store_url, tmp_path, strict, f"--since={SINCE}", f"--route={CHAT}").returncode == 1
    )
    page = tmp_path / "report.html"
    html = report(store_url, tmp_path, strict, f"--since={SINCE}", "--format=html",
                  f"--output={page}")  # fmt: skip
    assert html.returncode == 1
    text = page.read_text(encoding="utf-8")
    assert f"Route {CHAT}: FAIL" in text
    assert f"Route {TAGGER}: PASS" in text


def test_a_route_no_longer_configured_is_judged_by_the_global_gate(
    store_url: str, tmp_path: Path
) -> None:
    done = report(store_url, tmp_path, routes(), "--format=json")
    assert done.returncode == 1
    old = orjson.loads(done.stdout)["routes"][OLD]
    assert old["pairs"]["records"] == len(old_pairs())
    assert old["gate"]["min_pairs"] == 200  # GATEWAY_GATE_MIN_PAIRS's default
    assert old["verdict"]["passed"] is False
    loose = {"GATEWAY_GATE_MIN_PAIRS": "3", "GATEWAY_GATE_MIN_NOISE_PAIRS": "2"}
    passing = report(store_url, tmp_path, routes(), "--format=json", **loose)
    assert passing.returncode == 0, passing.stdout
    judged = orjson.loads(passing.stdout)["routes"]
    assert sorted(judged) == [OLD, TAGGER, CHAT]
    assert judged[CHAT]["gate"]["min_pairs"] == 12  # its own, over the global one


def test_a_shadowing_route_without_pairs_is_reported_and_fails(
    store_url: str, tmp_path: Path
) -> None:
    """A route that shadows and has no evidence yet fails; one that does not shadow and has no
    pairs is not reported."""
    pool_routes = routes(
        **{"qwen3-small": {"primary": "vllm-qwen3", "shadow": "trt-phi3"},
           "phi-spare": {"primary": "trt-phi3"}}
    )  # fmt: skip
    done = report(store_url, tmp_path, pool_routes, f"--since={SINCE}", "--format=json")
    assert done.returncode == 1
    summary = orjson.loads(done.stdout)
    assert sorted(summary["routes"]) == [TAGGER, CHAT, "qwen3-small"]
    assert summary["routes"]["qwen3-small"]["pairs"]["records"] == 0
    assert summary["routes"]["qwen3-small"]["verdict"]["passed"] is False


def test_a_route_in_canary_keeps_its_own_gate_for_its_pairs(store_url: str, tmp_path: Path) -> None:
    """The tagger's route moved from shadow to canary: its pairs are judged by its gate still."""
    canary = routes()
    canary[TAGGER] = {"primary": "vllm-phi3", "canary": "trt-phi3", "canary_percent": 50,
                      "gate": TAGGER_GATE}  # fmt: skip
    done = report(store_url, tmp_path, canary, f"--since={SINCE}", f"--route={TAGGER}")
    assert done.returncode == 0, done.stdout
    assert "PASS agreement (structured)" in done.stdout


def test_a_route_that_is_nowhere_is_a_usage_error(store_url: str, tmp_path: Path) -> None:
    done = report(store_url, tmp_path, routes(), "--route=phi-4")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "gateway report: no route 'phi-4'; routes configured or in the records: "
        f"{OLD}, {TAGGER}, {CHAT}\n"
    )


def test_no_pairs_and_no_shadowing_route_fails(tmp_path: Path) -> None:
    """No evidence never passes the gate."""
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    asyncio.run(SqliteStore(tmp_path / "empty.db").close())
    done = report(empty, tmp_path, {CHAT: {"primary": "vllm-qwen3"}}, "--format=json")
    assert done.returncode == 1
    summary = orjson.loads(done.stdout)
    assert summary["pairs"]["records"] == 0
    assert summary["verdict"]["passed"] is False


@pytest.fixture(scope="module")
def admin(store_url: str, fake_upstream: tuple[FakeUpstream, ThreadedServer]) -> Iterator[str]:
    pool: dict[str, BackendSettings] = {n: VllmSettings(url=fake_upstream[1].url) for n in POOL}
    settings = Settings(
        backends=pool, routes=routes(), records_url=store_url, tasks_enabled=True,
        tasks_dir=PROMPTS, admin_token=SecretStr(TOKEN), probe_interval=0,
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        yield server.url


def admin_report(url: str, **query: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {TOKEN}"}
    return httpx.get(url + "/admin/report", params=query, headers=headers, timeout=30)


def test_admin_report_per_route(admin: str) -> None:
    every = admin_report(admin, since=SINCE)
    assert every.status_code == 200
    assert every.json()["passed"] is True
    assert {name: r["pairs"]["records"] for name, r in every.json()["routes"].items()} == {
        CHAT: len(chat_pairs()),
        TAGGER: len(tagger_pairs()),
    }
    one = admin_report(admin, since=SINCE, route=TAGGER)
    assert one.status_code == 200
    assert one.json()["gate"]["agreement"] == "structured"
    assert one.json()["pairs"]["records"] == len(tagger_pairs())
    assert one.json()["verdict"]["passed"] is True
    text = admin_report(admin, route=OLD, format="text")
    assert "VERDICT: FAIL" in text.text
    assert "(need 200)" in text.text  # the global gate judges a route no longer configured
    missing = admin_report(admin, route="phi-4")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "route_not_found"
    assert missing.json()["error"]["param"] == "route"


def test_the_probes_head_the_report_before_any_pair_is_stored() -> None:
    probe = ProbeResult("trt", "constraint", "fail", "accepted a choice and answered 'x'", 1.0)
    reports = summarize_routes([], {}, GateRule(), probes=[probe])
    assert len(reports) == 1
    text = render_routes(reports, "text")
    assert "FAIL    trt constraint: accepted a choice and answered 'x'" in text
    assert "routes:" not in text
