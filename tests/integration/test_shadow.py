"""Shadow traffic on real engines: isolation from the candidate, pairs recorded, the report.

The primary is real vLLM. Candidates are the real Triton engine, or the fake upstream for what
no real engine does on demand (hang, garbage, a chosen error).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backends.registry import BackendSettings
from backends.triton.settings import TritonSettings
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.gate_rule import GateRule
from gateway.report.summary import summarize
from gateway.settings import Settings
from gateway.shadow.compare import compare
from tests.conftest import TINY_MODEL
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine
from tests.engines.vllm_engine import VllmEngine
from tests.support.fake_upstream import FakeUpstream
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

PUBLIC = "phi-3-mini"
Fake = tuple[FakeUpstream, ThreadedServer]


@contextmanager
def gateway(
    primary: BackendSettings, candidate: BackendSettings | None, store: Path, **extra: Any
) -> Iterator[openai.OpenAI]:
    backends = {"vllm": primary}
    if candidate is not None:
        backends["cand"] = candidate
    settings = Settings(
        backends=backends, primary="vllm", models=[PUBLIC], shadow="cand" if candidate else None,
        shadow_rate=1.0 if candidate else 0.0, records_url=f"sqlite:///{store}",
        records_text="full", **extra,
    )  # fmt: skip
    with ThreadedServer(create_app(settings)) as server:
        yield openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def ask(client: openai.OpenAI, content: str, **kwargs: Any) -> tuple[Any, float, dict[str, str]]:
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC, messages=[{"role": "user", "content": content}], temperature=0,
        max_tokens=8, **kwargs,
    )  # fmt: skip
    return raw.parse(), time.monotonic() - started, dict(raw.headers)


# Headers that differ between any two answers, shadowed or not.
PER_REQUEST_HEADERS = {"x-request-id", "x-gateway-overhead-ms", "date"}
RUNS = 5  # timed requests per gateway; medians compared
MARGIN = 0.05  # seconds the shadowed median may exceed the baseline's: scheduling noise


@dataclass(frozen=True)
class Streamed:
    """What a client saw of one streamed answer, and when."""

    text: str
    finish_reason: str | None
    usage: Any
    headers: dict[str, str]
    ttft: float
    seconds: float


def ask_streamed(client: openai.OpenAI, content: str) -> Streamed:
    started = time.monotonic()
    with client.chat.completions.with_streaming_response.create(
        model=PUBLIC, messages=[{"role": "user", "content": content}], temperature=0,
        max_tokens=8, stream=True, stream_options={"include_usage": True},
    ) as raw:  # fmt: skip
        chunks, arrivals = [], []
        for chunk in raw.parse():
            chunks.append(chunk)
            arrivals.append(time.monotonic() - started)
        headers = dict(raw.headers)
    texts = [(c.choices[0].delta.content or "") if c.choices else "" for c in chunks]
    first = next(index for index, text in enumerate(texts) if text)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    return Streamed("".join(texts), reasons[-1], chunks[-1].usage, headers, arrivals[first],
                    time.monotonic() - started)  # fmt: skip


def same_headers(headers: dict[str, str], expected: dict[str, str]) -> bool:
    def kept(values: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in values.items() if k not in PER_REQUEST_HEADERS}

    return kept(headers) == kept(expected)


def within_baseline(shadowed: list[float], baseline: list[float]) -> bool:
    return statistics.median(shadowed) <= statistics.median(baseline) + MARGIN


@pytest.mark.parametrize(
    ("cue", "candidate_status"),
    [("down", 503), ("slow:3", 504), ("hang", 504), ("status:500", 502), ("garbage", 502),
     ("status:400", 400)],
)  # fmt: skip
def test_the_client_never_depends_on_the_candidate(
    cue: str, candidate_status: int, vllm_engine: VllmEngine, fake_upstream: Fake, tmp_path: Path
) -> None:
    """Same answer, same headers, and no slower than without a shadow: both gateways run side
    by side and take turns, so the machine's load falls on both alike. No noise floor: its
    second call loads the primary, which is not the candidate's doing."""
    primary = VllmSettings(url=vllm_engine.url, model=TINY_MODEL)
    url = "http://127.0.0.1:9" if cue == "down" else fake_upstream[1].url
    candidate = VllmSettings(url=url, model="fake-model")
    store = tmp_path / "pairs.db"
    with (
        gateway(primary, None, tmp_path / "none.db") as plain,
        gateway(primary, candidate, store, shadow_timeout=1.0, noise_rate=0.0) as shadowed,
    ):
        expected, _, expected_headers = ask(plain, cue)  # also warms both up
        ask(shadowed, cue)
        baseline, mirrored = [], []
        for _ in range(RUNS):
            baseline.append(ask(plain, cue))
            mirrored.append(ask(shadowed, cue))
    for answer, _, headers in mirrored:
        assert answer.choices[0].message.content == expected.choices[0].message.content
        assert answer.choices[0].finish_reason == expected.choices[0].finish_reason
        assert answer.usage == expected.usage
        assert same_headers(headers, expected_headers), (headers, expected_headers)
        assert headers["x-gateway-backend"] == "vllm"
    seconds = [run[1] for run in mirrored]
    assert within_baseline(seconds, [run[1] for run in baseline]), (seconds, baseline)
    recorded = [pair for pair in stored_pairs(store) if pair.kind == "shadow"]
    assert len(recorded) == RUNS + 1
    statuses = [pair.candidate.status for pair in recorded]
    assert statuses[0] == candidate_status
    # An engine that keeps failing opens the candidate's circuit: refused at once, 503.
    assert set(statuses) <= {candidate_status, 503}
    assert {pair.primary.text for pair in recorded} == {expected.choices[0].message.content}


@pytest.mark.parametrize(("cue", "candidate_status"), [("hang", 504), ("slow:2", 200)])
def test_a_streamed_answer_never_waits_for_the_candidate(
    cue: str, candidate_status: int, vllm_engine: VllmEngine, fake_upstream: Fake, tmp_path: Path
) -> None:
    """The candidate is streamed to as well; a hanging or slow one changes neither the
    client's stream nor its time to first token or to the end."""
    primary = VllmSettings(url=vllm_engine.url, model=TINY_MODEL)
    candidate = VllmSettings(url=fake_upstream[1].url, model="fake-model")
    store = tmp_path / "pairs.db"
    with (
        gateway(primary, None, tmp_path / "none.db") as plain,
        gateway(primary, candidate, store, shadow_timeout=3.0, noise_rate=0.0) as shadowed,
    ):
        expected = ask_streamed(plain, cue)
        ask_streamed(shadowed, cue)
        baseline, mirrored = [], []
        for _ in range(RUNS):
            baseline.append(ask_streamed(plain, cue))
            mirrored.append(ask_streamed(shadowed, cue))
    for answer in mirrored:
        assert (answer.text, answer.finish_reason) == (expected.text, expected.finish_reason)
        assert answer.usage == expected.usage
        assert same_headers(answer.headers, expected.headers)
    assert within_baseline([a.ttft for a in mirrored], [b.ttft for b in baseline])
    assert within_baseline([a.seconds for a in mirrored], [b.seconds for b in baseline])
    recorded = [pair for pair in stored_pairs(store) if pair.kind == "shadow"]
    assert len(recorded) == RUNS + 1
    assert all(pair.params.stream for pair in recorded)
    statuses = [pair.candidate.status for pair in recorded]
    assert statuses[0] == candidate_status
    assert set(statuses) <= {candidate_status, 503}  # an open circuit, as above
    assert {pair.primary.text for pair in recorded} == {expected.text}


def test_streamed_requests_are_streamed_to_the_candidate_too(
    vllm_engine: VllmEngine, triton_engine: TritonEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    primary = VllmSettings(url=vllm_engine.url, model=TINY_MODEL)
    candidate = TritonSettings(
        url=triton_engine.grpc_url, model="tensorrt_llm_bls", model_dir=tiny_model_dir,
        context_length=2048, stream_text="cumulative",
        add_special_tokens=ADD_SPECIAL_TOKENS["tensorrt_llm_bls"],
    )  # fmt: skip
    store = tmp_path / "pairs.db"
    with gateway(primary, candidate, store) as client:
        chunks = list(client.chat.completions.create(
            model=PUBLIC, messages=[{"role": "user", "content": "Xin chào"}], temperature=0,
            max_tokens=8, stream=True, stream_options={"include_usage": True},
        ))  # fmt: skip
        metrics_url = str(client.base_url).removesuffix("/").removesuffix("/v1") + "/metrics"
        deadline = time.monotonic() + 10
        completed = f'gateway_shadow_completed_total{{route="{PUBLIC}"}} 1.0'
        while completed not in (text := httpx.get(metrics_url).text):
            assert time.monotonic() < deadline, "the shadow pair never completed"
            time.sleep(0.1)
        assert f'gateway_shadow_sampled_total{{route="{PUBLIC}"}} 1.0' in text
        assert "gateway_shadow_agreement_total{result=" in text
        assert 'gateway_shadow_records_total{result="written"}' in text
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (pair,) = [pair for pair in stored_pairs(store) if pair.kind == "shadow"]
    assert pair.params.stream
    assert pair.primary.text == streamed
    assert pair.primary.ttft_ms is not None
    assert pair.candidate.ttft_ms is not None
    assert pair.candidate.status == 200
    assert pair.candidate.backend == "cand"


def test_shadow_end_to_end_report_matches_the_pairs(
    vllm_engine: VllmEngine, triton_engine: TritonEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """A few hundred requests through the gateway in shadow mode, then the report."""
    primary = VllmSettings(url=vllm_engine.url, model=TINY_MODEL)
    candidate = TritonSettings(
        url=triton_engine.grpc_url, model="tensorrt_llm_bls", model_dir=tiny_model_dir,
        context_length=2048, stream_text="cumulative",
        add_special_tokens=ADD_SPECIAL_TOKENS["tensorrt_llm_bls"],
    )  # fmt: skip
    store = tmp_path / "pairs.db"
    prompts = [f"Pika ơi, {i} + {i % 7} bằng mấy?" for i in range(200)]
    # Room for every shadow: this test is about the report, not about shedding a backlog (the
    # candidate on CPU is slower than the primary, so a backlog builds up).
    room = {"shadow_max_in_flight": 8, "shadow_queue": len(prompts)}
    with gateway(primary, candidate, store, noise_rate=0.2, **room) as client:

        def one(prompt: str) -> str:
            return ask(client, prompt)[0].choices[0].message.content or ""

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(one, prompts))
        metrics = httpx.get(str(client.base_url).removesuffix("/v1/") + "/metrics").text
    recorded = stored_pairs(store)  # the gateway has shut down: its queue was drained
    shadow = [pair for pair in recorded if pair.kind == "shadow"]
    noise = [pair for pair in recorded if pair.kind == "noise"]
    dropped = [line for line in metrics.splitlines() if line.startswith("gateway_shadow_dropped")]
    queue_full = f'gateway_shadow_dropped_total{{reason="queue_full",route="{PUBLIC}"}} 0.0'
    assert dropped == [queue_full], metrics
    assert len(shadow) == len(prompts)
    assert 15 <= len(noise) <= 70  # 20% of 200, loosely
    assert sorted(pair.primary.text or "" for pair in shadow) == sorted(answers)
    assert all(pair.candidate.status == 200 for pair in shadow)
    # Configured for parity, both engines read the same prompt tokens: no pair is flagged so.
    assert all(pair.primary.prompt_tokens == pair.candidate.prompt_tokens for pair in shadow)

    summary = summarize(recorded, GateRule(min_pairs=100))
    # The report's numbers, recomputed by hand from the pairs.
    compared = [pair for pair in shadow if compare(pair).status == "compared"]
    same = sum(pair.primary.text == pair.candidate.text for pair in compared)
    assert summary.pairs.shadow == len(shadow)
    assert summary.agreement.exact.n == len(compared)
    assert summary.agreement.exact.successes == same
    noise_compared = [pair for pair in noise if compare(pair).status == "compared"]
    noise_same = sum(pair.primary.text == pair.candidate.text for pair in noise_compared)
    assert summary.noise_floor.agreement.exact.successes == noise_same
    primary_e2e = sorted(pair.primary.e2e_ms or 0.0 for pair in shadow)
    assert summary.backends is not None
    assert summary.backends.primary.e2e_ms is not None
    assert summary.backends.primary.e2e_ms.n == len(primary_e2e)
    print(f"\nshadow e2e: {same}/{len(compared)} identical answers, noise floor "
          f"{noise_same}/{len(noise_compared)}; verdict "
          f"{'PASS' if summary.verdict.passed else 'FAIL'}")  # fmt: skip


def test_canary_serves_its_share_sticky_per_user(
    vllm_engine: VllmEngine, triton_engine: TritonEngine, tiny_model_dir: Path, tmp_path: Path
) -> None:
    backends: dict[str, BackendSettings] = {
        "vllm": VllmSettings(url=vllm_engine.url, model=TINY_MODEL),
        "cand": TritonSettings(
            url=triton_engine.grpc_url, model="tensorrt_llm", model_dir=tiny_model_dir,
            context_length=2048,
        ),
    }  # fmt: skip
    settings = Settings(
        backends=backends, primary="vllm", models=[PUBLIC], canary="cand", canary_percent=50,
        records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
    )  # fmt: skip
    served: dict[str, set[str]] = {}
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for round_ in range(2):
            for index in range(16):
                user = f"child-{index}"
                raw = client.chat.completions.with_raw_response.create(
                    model=PUBLIC, messages=[{"role": "user", "content": f"{round_}"}],
                    max_tokens=2, temperature=0, user=user,
                )  # fmt: skip
                served.setdefault(user, set()).add(raw.headers["x-gateway-backend"])
    assert all(len(sides) == 1 for sides in served.values())  # sticky
    counts = {side: sum(side in sides for sides in served.values()) for side in ("vllm", "cand")}
    assert counts["vllm"] > 0
    assert counts["cand"] > 0


def test_reload_switches_primary_without_dropping_a_stream_in_flight(
    vllm_engine: VllmEngine,
    triton_engine: TritonEngine,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cutover by configuration: the admin reload (as SIGHUP) re-reads the environment."""
    backends = {
        "vllm": {"kind": "vllm", "url": vllm_engine.url, "model": TINY_MODEL},
        "trt": {"kind": "triton", "url": triton_engine.grpc_url, "model": "tensorrt_llm",
                "tokenizer_dir": str(tiny_model_dir), "context_length": 2048},
    }  # fmt: skip
    monkeypatch.setenv("GATEWAY_BACKENDS", json.dumps(backends))
    monkeypatch.setenv("GATEWAY_PRIMARY", "vllm")
    monkeypatch.setenv("GATEWAY_MODELS", json.dumps([PUBLIC]))
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "admin-token-for-tests-only")
    monkeypatch.setenv("GATEWAY_RECORDS_URL", f"sqlite:///{tmp_path / 'pairs.db'}")
    admin = {"authorization": "Bearer admin-token-for-tests-only"}
    with ThreadedServer(create_app(Settings())) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        long = client.chat.completions.create(
            model=PUBLIC, messages=[{"role": "user", "content": "kể chuyện"}], max_tokens=1500,
            temperature=0, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        first = next(iter(long))
        monkeypatch.setenv("GATEWAY_PRIMARY", "trt")
        assert httpx.post(server.url + "/admin/reload").status_code == 401
        reloaded = httpx.post(server.url + "/admin/reload", headers=admin)
        assert reloaded.json() == {"status": "reloaded", "routes": {PUBLIC: "trt"}}
        after = client.chat.completions.with_raw_response.create(
            model=PUBLIC, messages=[{"role": "user", "content": "xin chào"}], max_tokens=4
        )
        assert after.headers["x-gateway-backend"] == "trt"
        rest = list(long)
        assert first.choices[0].delta.role == "assistant"
        assert rest[-1].usage is not None
        assert rest[-1].usage.completion_tokens == 1500
        monkeypatch.setenv("GATEWAY_PRIMARY", "nope")  # invalid: refused, the running one kept
        assert httpx.post(server.url + "/admin/reload", headers=admin).status_code == 400
        again = client.chat.completions.with_raw_response.create(
            model=PUBLIC, messages=[{"role": "user", "content": "xin chào"}], max_tokens=4
        )
        assert again.headers["x-gateway-backend"] == "trt"


def test_canary_is_sticky_per_user_header(fake_upstream: Fake, tmp_path: Path) -> None:
    """An app that sends no `user` field names the child in `x-gateway-user` instead."""
    upstream = VllmSettings(url=fake_upstream[1].url, model="fake-model")
    settings = Settings(
        backends={"vllm": upstream, "cand": upstream}, primary="vllm", models=[PUBLIC],
        canary="cand", canary_percent=50, records_url=f"sqlite:///{tmp_path / 'pairs.db'}",
    )  # fmt: skip
    served: dict[str, set[str]] = {}
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for round_ in range(3):
            for index in range(16):
                user = f"child-{index}"
                raw = client.chat.completions.with_raw_response.create(
                    model=PUBLIC, messages=[{"role": "user", "content": f"{round_}"}],
                    max_tokens=2, extra_headers={"x-gateway-user": user},
                )  # fmt: skip
                served.setdefault(user, set()).add(raw.headers["x-gateway-backend"])
    assert all(len(sides) == 1 for sides in served.values())  # sticky: 48 random draws are not
    counts = {side: sum(side in sides for sides in served.values()) for side in ("vllm", "cand")}
    assert counts["vllm"] > 0
    assert counts["cand"] > 0


def test_a_reload_that_cannot_be_served_keeps_the_running_configuration(
    fake_upstream: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of a refused reload is swapped in, not even its API keys; the admin call says
    why in OpenAI's error format, and a good reload afterwards still works."""
    upstream = {"kind": "vllm", "url": fake_upstream[1].url, "model": "fake-model"}
    bad_tasks = tmp_path / "prompts"
    (bad_tasks / "broken").mkdir(parents=True)
    (bad_tasks / "broken" / "task.toml").write_text('alias = "broken"\nversion = 3\n')
    no_template = tmp_path / "tokenizer"  # a tokenizer.json but no tokenizer_config.json
    no_template.mkdir()
    (no_template / "tokenizer.json").write_text("{}")
    bad_keys = tmp_path / "keys.txt"
    bad_keys.write_text("sha256:not-hex\n")
    triton = {"kind": "triton", "url": "127.0.0.1:9", "tokenizer_dir": str(no_template)}
    env = {
        "GATEWAY_BACKENDS": json.dumps({"main": upstream}), "GATEWAY_PRIMARY": "main",
        "GATEWAY_MODELS": json.dumps([PUBLIC]), "GATEWAY_ADMIN_TOKEN": "admin-token-for-tests-only",
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'pairs.db'}",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    admin = {"authorization": "Bearer admin-token-for-tests-only"}
    refusals = [
        ({"GATEWAY_TASKS_ENABLED": "true", "GATEWAY_TASKS_DIR": str(bad_tasks)}, 400, "task.toml"),
        ({"GATEWAY_BACKENDS": json.dumps({"main": upstream, "trt": triton}),
          "GATEWAY_PRIMARY": "trt"}, 500, "backend 'trt' cannot be built (FileNotFoundError)"),
        ({"GATEWAY_BACKENDS": "{not json"}, 400, 'error parsing value for field "backends"'),
        ({"GATEWAY_PRIMARY": "nope"}, 400, "GATEWAY_PRIMARY"),
        ({"GATEWAY_API_KEYS_FILE": str(bad_keys)}, 400, "API keys cannot be read (ValueError)"),
    ]  # fmt: skip
    with ThreadedServer(create_app(Settings())) as server:
        chat = server.url + "/v1/chat/completions"
        body = {"model": PUBLIC, "messages": [{"role": "user", "content": "xin chào"}]}
        for change, status, reason in refusals:
            with monkeypatch.context() as env_of_this_try:
                env_of_this_try.setenv("GATEWAY_API_KEYS", json.dumps(["sk-new-key"]))
                for name, value in change.items():
                    env_of_this_try.setenv(name, value)
                refused = httpx.post(server.url + "/admin/reload", headers=admin)
            assert refused.status_code == status, refused.text
            error = refused.json()["error"]
            assert reason in error["message"]
            assert "running configuration is kept" in error["message"]
            assert error["code"] == "reload_refused"
            served = httpx.post(chat, json=body)  # no key: the old configuration had none
            assert served.status_code == 200, served.text
            assert served.headers["x-gateway-backend"] == "main"
        monkeypatch.setenv("GATEWAY_API_KEYS", json.dumps(["sk-new-key"]))
        reloaded = httpx.post(server.url + "/admin/reload", headers=admin)
        assert reloaded.json() == {"status": "reloaded", "routes": {PUBLIC: "main"}}
        assert httpx.post(chat, json=body).status_code == 401
        keyed = httpx.post(chat, json=body, headers={"authorization": "Bearer sk-new-key"})
        assert keyed.status_code == 200
