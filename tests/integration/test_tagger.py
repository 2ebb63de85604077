"""The tagger alias through the gateway on real vLLM, and `gateway eval` end to end.

The tiny model's weights are random, so its labels are random too; the choice constraint still
makes every answer one of the codes, which is what these tests rely on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from backends.vllm import VllmSettings
from gateway import cli, report
from gateway.app import create_app
from gateway.compare import compare
from gateway.devstack.vllm_engine import VllmEngine
from gateway.pairs import PairRecord
from gateway.records import open_store
from gateway.settings import Settings
from gateway.tasks import PROMPT_VERSION_HEADER, Task, load_tasks
from tests.conftest import TINY_MODEL
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
DATASET = PROMPTS / "tagger" / "dataset.jsonl"
EXCHANGE = [
    {"role": "user", "content": "con sợ sai lắm... 9 ạ?"},
    {"role": "assistant", "content": "Đúng rồi, 9! Con thấy chưa, con làm được mà."},
]
MOODS = {"happy", "encouraging", "comforting", "thinking", "playful", "neutral"}
# A fixed fixture for the eval: every mood, both celebrate values, both splits.
FIXTURE = ("t0001", "t0002", "t0005", "t0031", "t0049", "t0050",
           "t0055", "t0058", "t0203", "t0254", "t0261", "t0323")  # fmt: skip


@pytest.fixture(scope="module")
def tagger() -> Task:
    return load_tasks(PROMPTS)["tagger"]


@pytest.fixture(scope="module")
def gateway(vllm_engine: VllmEngine) -> Iterator[ThreadedServer]:
    settings = Settings(
        backends={"vllm": VllmSettings(url=vllm_engine.url)}, tasks_enabled=True, tasks_dir=PROMPTS
    )
    with ThreadedServer(create_app(settings)) as server:
        yield server


@pytest.fixture(scope="module")
def client(gateway: ThreadedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_alias_answers_the_labels_as_json_with_the_prompt_version(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="tagger",
        messages=EXCHANGE,  # type: ignore[arg-type]
        max_tokens=50,  # what the app sends today: the task's own decoding wins
    )
    response = raw.parse()
    labels = json.loads(response.choices[0].message.content or "")
    assert set(labels) == {"mood", "celebrate"}
    assert labels["mood"] in MOODS
    assert isinstance(labels["celebrate"], bool)
    assert raw.headers[PROMPT_VERSION_HEADER] == "tagger-v1"
    assert raw.headers["x-gateway-backend"] == "vllm"
    assert response.model == "tagger"
    assert response.system_fingerprint == "tagger-v1"
    assert response.usage is not None
    assert response.usage.completion_tokens == 1  # one code, and no end-of-turn token


def test_debug_raw_returns_the_engines_own_completion(
    gateway: ThreadedServer, tagger: Task
) -> None:
    url = gateway.url + "/v1/chat/completions"
    body = {"model": "tagger", "messages": EXCHANGE}
    debug = httpx.post(url, json=body, headers={"x-gateway-debug": "raw"}).json()
    code = debug["raw"]["choices"][0]["message"]["content"]
    assert code in tagger.codes
    assert json.loads(debug["choices"][0]["message"]["content"]) == tagger.expand(code)
    assert "raw" not in httpx.post(url, json=body).json()


def test_the_gateway_sends_exactly_the_prompt_build_makes(
    vllm_engine: VllmEngine, client: openai.OpenAI, tagger: Task
) -> None:
    via = client.chat.completions.create(model="tagger", messages=EXCHANGE)  # type: ignore[arg-type]
    body = tagger.build({"messages": EXCHANGE}, model=TINY_MODEL)
    direct = httpx.post(vllm_engine.url + "/v1/chat/completions", json=body).json()
    assert via.usage is not None
    assert via.usage.prompt_tokens == direct["usage"]["prompt_tokens"]
    code = direct["choices"][0]["message"]["content"]
    assert json.loads(via.choices[0].message.content or "") == tagger.expand(code)


def test_streaming_to_a_task_is_refused_with_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tagger", messages=EXCHANGE, stream=True)  # type: ignore[arg-type]
    assert "answers in one piece" in error.value.message


def test_models_lists_the_alias_next_to_the_served_name(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [TINY_MODEL, "tagger"]


def test_eval_end_to_end_matches_a_hand_computation(
    tmp_path: Path, gateway: ThreadedServer, vllm_engine: VllmEngine, tagger: Task
) -> None:
    rows = {json.loads(line)["id"]: line for line in DATASET.read_text("utf-8").splitlines()}
    dataset = tmp_path / "fixture.jsonl"
    dataset.write_text("\n".join(rows[key] for key in FIXTURE) + "\n", encoding="utf-8")
    output = tmp_path / "report.json"
    status = cli.main(
        ["eval", "--dataset", str(dataset), "--split", "all", "--tasks-dir", str(PROMPTS),
         "--target", f"gw={gateway.url}/v1", "--target", f"vllm={vllm_engine.url}",
         "--concurrency", "4", "--format", "json", "--output", str(output)]
    )  # fmt: skip
    assert status == 0
    summary = json.loads(output.read_text("utf-8"))
    assert [(t["name"], t["mode"], t["model"]) for t in summary["targets"]] == [
        ("gw", "gateway", "tagger"),
        ("vllm", "direct", TINY_MODEL),
    ]
    assert [row["id"] for row in summary["rows"]] == list(FIXTURE)
    for target in summary["targets"]:
        check_target(summary, target, tagger)
    check_agreement(summary)
    for fmt in ("text", "html"):
        assert summary["version"] in report.render(summary, fmt)
    html = report.render(summary, "html")
    assert "<svg" in html
    assert "<script" not in html
    assert "src=" not in html
    assert "href=" not in html


def check_target(summary: dict[str, Any], target: dict[str, Any], tagger: Task) -> None:
    """Recomputes a target's numbers from the per-example rows, by hand."""
    name, n = target["name"], len(FIXTURE)
    predictions = [row["predictions"][name] for row in summary["rows"]]
    golds = [row["gold"] for row in summary["rows"]]
    assert all(p["labels"] is not None and p["answer"] in tagger.codes for p in predictions)
    assert target["schema_valid"]["successes"] == n
    assert target["errors"] == 0
    assert target["output_tokens"]["histogram"] == {"1": n}
    exact = sum(1 for p, g in zip(predictions, golds, strict=True) if p["labels"] == g)
    assert target["exact"]["successes"] == exact
    for field, labels in summary["fields"].items():
        pairs = [(g[field], p["labels"][field]) for g, p in zip(golds, predictions, strict=True)]
        stats = target["fields"][field]
        assert stats["accuracy"]["successes"] == sum(1 for g, p in pairs if g == p)
        matrix = stats["confusion"]["matrix"]
        for i, gold in enumerate(stats["confusion"]["labels"]):
            for j, guess in enumerate(stats["confusion"]["predicted"]):
                assert matrix[i][j] == pairs.count((gold, guess))
        f1s = []
        for label in labels:
            tp = pairs.count((label, label))
            fp = sum(1 for g, p in pairs if p == label != g)
            fn = sum(1 for g, p in pairs if g == label != p)
            if tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
        assert stats["macro_f1"] == pytest.approx(sum(f1s) / len(f1s))
    latencies = sorted(p["latency_ms"] for p in predictions)
    assert latencies[0] <= target["latency_ms"]["p50"] <= target["latency_ms"]["p99"]
    assert target["latency_ms"]["p99"] <= latencies[-1] + 0.001


def check_agreement(summary: dict[str, Any]) -> None:
    (pair,) = summary["agreement"]
    first = [row["predictions"]["gw"]["labels"] for row in summary["rows"]]
    second = [row["predictions"]["vllm"]["labels"] for row in summary["rows"]]
    same = sum(1 for a, b in zip(first, second, strict=True) if a == b)
    assert (pair["first"], pair["second"]) == ("gw", "vllm")
    assert pair["exact"]["successes"] == same
    assert pair["exact"]["n"] == len(FIXTURE)
    assert pair["exact"]["low"] <= same / len(FIXTURE) <= pair["exact"]["high"]
    for field in summary["fields"]:
        agree = sum(1 for a, b in zip(first, second, strict=True) if a[field] == b[field])
        assert pair["fields"][field]["successes"] == agree


def test_shadow_pairs_of_the_alias_carry_its_prompt_version_and_labels(
    vllm_engine: VllmEngine, tagger: Task, tmp_path: Path
) -> None:
    """In the default `hashes` text mode: the labels are the schema's enums, so they stay."""
    engine = VllmSettings(url=vllm_engine.url)
    store = tmp_path / "pairs.db"
    settings = Settings(
        backends={"vllm": engine, "cand": engine}, shadow="cand", shadow_rate=1.0,
        tasks_enabled=True, tasks_dir=PROMPTS, records_url=f"sqlite:///{store}",
    )  # fmt: skip
    with (
        ThreadedServer(create_app(settings)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        answers = [ask(client) for _ in range(3)]
    records = asyncio.run(read_pairs(f"sqlite:///{store}"))  # the gateway drained its queue
    shadow = [pair for pair in records if pair.kind == "shadow"]
    assert len(shadow) == 3
    for pair in shadow:
        assert (pair.public_model, pair.prompt_version) == ("tagger", tagger.version)
        assert pair.request is None
        assert pair.params.schema == tagger.schema
        for leg in (pair.primary, pair.candidate):
            assert leg.status == 200
            assert (leg.text or "").startswith("sha256:")
            assert set(leg.parsed or {}) == {"mood", "celebrate"}
            assert leg.parsed is not None
            assert leg.parsed["mood"] in MOODS
            assert isinstance(leg.parsed["celebrate"], bool)
        assert pair.extra == {"primary_schema_valid": True, "candidate_schema_valid": True}
        assert set(compare(pair).fields) == {"mood", "celebrate"}
    stored = sorted(json.dumps(pair.primary.parsed, sort_keys=True) for pair in shadow)
    assert stored == sorted(json.dumps(answer, sort_keys=True) for answer in answers)


def ask(client: openai.OpenAI) -> dict[str, Any]:
    """The labels the client got for `EXCHANGE`."""
    response = client.chat.completions.create(model="tagger", messages=EXCHANGE)  # type: ignore[arg-type]
    labels: dict[str, Any] = json.loads(response.choices[0].message.content or "")
    return labels


async def read_pairs(url: str) -> list[PairRecord]:
    store = open_store(url)
    try:
        return await store.read()
    finally:
        await store.close()
