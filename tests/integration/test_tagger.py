"""The tagger alias through the gateway on real vLLM, Triton and the current TensorRT-LLM
kinds' stand-ins (trtllm-serve, trtllm-serve --grpc), and `gateway eval` end to end.

The tiny model is trained to answer the tagger (`tests/engines/tagger_model.py`), but these tests
rely only on the choice constraint making every answer one of the codes, on vLLM and on the
Triton BLS test model alike (its guided decoding is a logits mask); how often the engines agree
is `test_engine_agreement.py`'s, and how often the model is right the README's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from backends.registry import BackendSettings
from backends.triton.settings import TritonSettings
from backends.trtllm_grpc.settings import TrtllmGrpcSettings
from backends.trtllm_serve import TrtllmServeSettings
from backends.vllm import VllmSettings
from gateway import cli
from gateway.app import create_app
from gateway.eval import command as eval_command
from gateway.eval import render as report
from gateway.eval.predictions import INVALID
from gateway.eval.summary import EvalSummary, summarize
from gateway.records.store import open_store
from gateway.settings import Settings
from gateway.shadow.compare import compare
from gateway.shadow.pairs import PairRecord
from gateway.tasks.task import PROMPT_VERSION_HEADER, Task, load_tasks
from tests.conftest import TINY_MODEL
from tests.engines.triton_engine import ADD_SPECIAL_TOKENS, TritonEngine
from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine
from tests.engines.trtllm_serve_engine import TrtllmServeEngine
from tests.engines.vllm_engine import VllmEngine
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
# Exchanges of every shape: bare answer, feeling + answer, no diacritics, chat, a long reply.
SAME_PROMPT = ("t0001", "t0254", "t0262", "t0323", "t0431", "t0433")
TRITON_MODELS = ("tensorrt_llm_bls", "tensorrt_llm")
PUBLIC = "phi-3-mini"  # what the Triton gateways serve besides the alias


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


def alias_gateway(backend: BackendSettings) -> ThreadedServer:
    """A gateway with `backend` as its primary, serving the tagger alias as `PUBLIC`."""
    settings = Settings(
        backends={"trt": backend}, primary="trt", models=[PUBLIC], tasks_enabled=True,
        tasks_dir=PROMPTS,
    )  # fmt: skip
    return ThreadedServer(create_app(settings))


@pytest.fixture(scope="module")
def triton_gateways(
    triton_engine: TritonEngine, tiny_model_dir: Path
) -> Iterator[dict[str, ThreadedServer]]:
    """A gateway per Triton model (BLS, LLM API) as primary, serving the alias too."""
    with contextlib.ExitStack() as stack:
        servers = {}
        for model in TRITON_MODELS:
            backend = TritonSettings(
                url=triton_engine.grpc_url, model=model, model_dir=tiny_model_dir,
                context_length=2048, add_special_tokens=ADD_SPECIAL_TOKENS[model],
            )  # fmt: skip
            servers[model] = stack.enter_context(alias_gateway(backend))
        yield servers


@pytest.fixture(scope="module")
def trtllm_gateways(
    trtllm_serve_guided_engine: TrtllmServeEngine, tiny_model_dir: Path
) -> Iterator[dict[str, ThreadedServer]]:
    """A gateway per current TensorRT-LLM kind that can constrain its answer (trtllm-serve
    with a guided-decoding backend, trtllm-serve --grpc), as primary, serving the alias."""
    with contextlib.ExitStack() as stack:
        # The tagger's prompt is ~1,500 tokens, past the stand-in's default max_input_len
        # (1024), which refuses it (test_a_prompt_past_max_input_len_is_a_clear_400).
        grpc = stack.enter_context(TrtllmGrpcEngine(tiny_model_dir, max_input_len=2048))
        backends: dict[str, BackendSettings] = {
            "trtllm-serve": TrtllmServeSettings(
                url=trtllm_serve_guided_engine.url, model_dir=tiny_model_dir
            ),
            "trtllm-grpc": TrtllmGrpcSettings(url=grpc.address, model_dir=tiny_model_dir),
        }
        servers = {}
        for kind, backend in backends.items():
            servers[kind] = stack.enter_context(alias_gateway(backend))
        yield servers


@pytest.fixture(scope="module")
def client(gateway: ThreadedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


@pytest.fixture(scope="module")
def triton(triton_gateways: dict[str, ThreadedServer]) -> Iterator[openai.OpenAI]:
    """A client of the Triton-BLS-primary gateway."""
    url = triton_gateways["tensorrt_llm_bls"].url + "/v1"
    with openai.OpenAI(base_url=url, api_key="unused", max_retries=0) as client:
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


def test_the_apps_context_block_request_gets_the_two_message_labels(
    client: openai.OpenAI,
) -> None:
    """Seed 004's request with only `model` changed: its system prompt and a [CONTEXT] block."""
    rows = [json.loads(line) for line in DATASET.read_text("utf-8").splitlines()]
    for row in [row for row in rows if row["id"] in SAME_PROMPT]:
        pair = [{"role": "user", "content": row["child"]},
                {"role": "assistant", "content": row["pika"]}]  # fmt: skip
        block = f'[CONTEXT]\nuser_last_message: "{row["child"]}"\npika_response: "{row["pika"]}"'
        app = [{"role": "system", "content": "You are a high-speed, accurate Mood Tagger..."},
               {"role": "user", "content": block}]  # fmt: skip
        answers = [
            client.chat.completions.create(model="tagger", messages=messages, max_tokens=50)  # type: ignore[arg-type]
            for messages in (pair, app)
        ]
        assert answers[1].choices[0].message.content == answers[0].choices[0].message.content
    broken = [{"role": "system", "content": "x"},
              {"role": "user", "content": '[CONTEXT]\nuser_last_message: "12 ạ"'}]  # fmt: skip
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tagger", messages=broken)  # type: ignore[arg-type]
    assert error.value.status_code == 400
    assert "lacks the field pika_response" in error.value.message


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


def test_the_alias_answers_one_code_on_vllm_and_triton_from_the_templates_prompt(
    client: openai.OpenAI, triton: openai.OpenAI, tagger: Task, tiny_model_dir: Path
) -> None:
    """vLLM's prompt is exactly the tokenizer's own chat template applied to `Task.build`'s
    messages (`test_tasks.py` checks the Triton adapter renders that very text)."""
    reference = AutoTokenizer.from_pretrained(tiny_model_dir)
    for exchange in same_prompt_exchanges():
        messages = tagger.build({"messages": exchange}, model=PUBLIC)["messages"]
        text = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        via_vllm, via_triton = ask_usage(client, exchange), ask_usage(triton, exchange)
        assert via_vllm.usage.prompt_tokens == len(reference.encode(text, add_special_tokens=False))
        assert via_vllm.usage.completion_tokens == via_triton.usage.completion_tokens == 1


def test_the_alias_reaches_vllm_and_triton_as_the_same_prompt(
    client: openai.OpenAI, triton: openai.OpenAI
) -> None:
    """The same exchanges through a vLLM-primary and a Triton-BLS-primary gateway: the same
    prompt tokens (the BLS tokenizes text_input with add_special_tokens false, as vLLM's chat)."""
    for exchange in same_prompt_exchanges():
        via_vllm, via_triton = ask_usage(client, exchange), ask_usage(triton, exchange)
        assert via_triton.usage.prompt_tokens == via_vllm.usage.prompt_tokens, exchange


@pytest.mark.parametrize("model", TRITON_MODELS)
def test_chats_and_completions_reach_triton_with_vllms_prompt_tokens(
    model: str, client: openai.OpenAI, triton_gateways: dict[str, ThreadedServer]
) -> None:
    """vLLM's chat adds no BOS and its completions do. The BLS (add_special_tokens false) reads
    both as vLLM does; the LLM-API model always adds BOS: a chat one token longer."""
    url = triton_gateways[model].url + "/v1"
    prompt, messages = "Pika ơi, 2 + 3 bằng mấy?", EXCHANGE[:1]
    with openai.OpenAI(base_url=url, api_key="x", max_retries=0) as triton:
        chats = [
            side.chat.completions.create(model=name, messages=messages, max_tokens=1)  # type: ignore[arg-type]
            for side, name in ((client, TINY_MODEL), (triton, PUBLIC))
        ]
        completions = [
            side.completions.create(model=name, prompt=prompt, max_tokens=1)
            for side, name in ((client, TINY_MODEL), (triton, PUBLIC))
        ]
    vllm_chat, triton_chat = (answer.usage.prompt_tokens for answer in chats if answer.usage)
    extra = 0 if not ADD_SPECIAL_TOKENS[model] else 1
    assert triton_chat == vllm_chat + extra
    vllm_text, triton_text = (answer.usage.prompt_tokens for answer in completions if answer.usage)
    assert triton_text == vllm_text


def same_prompt_exchanges() -> list[list[dict[str, str]]]:
    rows = dataset_rows()
    return [
        [
            {"role": "user", "content": rows[key]["child"]},
            {"role": "assistant", "content": rows[key]["pika"]},
        ]
        for key in SAME_PROMPT
    ]


def ask_usage(client: openai.OpenAI, exchange: list[dict[str, str]]) -> Any:
    """The alias's whole answer, checked to be labels of the schema."""
    answer = client.chat.completions.create(model="tagger", messages=exchange)  # type: ignore[arg-type]
    labels = json.loads(answer.choices[0].message.content or "")
    assert labels["mood"] in MOODS
    assert isinstance(labels["celebrate"], bool)
    assert answer.model == "tagger"
    assert answer.usage is not None
    return answer


@pytest.mark.parametrize("kind", ["trtllm-serve", "trtllm-grpc"])
def test_the_alias_answers_one_code_on_the_current_tensorrt_llm_kinds(
    kind: str,
    client: openai.OpenAI,
    trtllm_gateways: dict[str, ThreadedServer],
    tagger: Task,
) -> None:
    """The one-token code, constrained by the engine's guided decoding, from vLLM's prompt:
    each exchange reaches the engine as the same prompt tokens, and the answer is one code."""
    url = trtllm_gateways[kind].url + "/v1/chat/completions"
    with openai.OpenAI(base_url=trtllm_gateways[kind].url + "/v1", api_key="x") as trt:
        for exchange in same_prompt_exchanges():
            via_vllm, via_trt = ask_usage(client, exchange), ask_usage(trt, exchange)
            assert via_trt.usage.prompt_tokens == via_vllm.usage.prompt_tokens, exchange
            assert via_trt.usage.completion_tokens == 1
            body = {"model": "tagger", "messages": exchange}
            raw = httpx.post(url, json=body, headers={"x-gateway-debug": "raw"}, timeout=60)
            assert raw.json()["raw"]["choices"][0]["message"]["content"] in tagger.codes


def test_a_prompt_past_max_input_len_is_a_clear_400(
    trtllm_grpc_engine: TrtllmGrpcEngine, tiny_model_dir: Path
) -> None:
    """A trtllm-serve --grpc whose max_input_len (the stand-in's default, 1024) is below the
    tagger's prompt refuses it: the engine's INVALID_ARGUMENT reaches the client as a 400
    that says why, never a truncated prompt."""
    backend = TrtllmGrpcSettings(url=trtllm_grpc_engine.address, model_dir=tiny_model_dir)
    with (
        alias_gateway(backend) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as error,
    ):
        client.chat.completions.create(model="tagger", messages=EXCHANGE)  # type: ignore[arg-type]
    assert "exceeds max_input_len 1024" in error.value.message


def test_the_alias_is_refused_by_a_triton_model_that_cannot_constrain_its_answer(
    triton_gateways: dict[str, ThreadedServer],
) -> None:
    """Unconstrained, a model may answer anything but a code: a clear 400, never a guess (the
    LLM-API test model has no guided-decoding inputs)."""
    url = triton_gateways["tensorrt_llm"].url + "/v1"
    with (
        openai.OpenAI(base_url=url, api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as error,
    ):
        client.chat.completions.create(model="tagger", messages=EXCHANGE)  # type: ignore[arg-type]
    assert "no guided-decoding inputs" in error.value.message


def test_streaming_to_a_task_is_refused_with_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tagger", messages=EXCHANGE, stream=True)  # type: ignore[arg-type]
    assert "answers in one piece" in error.value.message


def test_models_lists_the_alias_next_to_the_served_name(client: openai.OpenAI) -> None:
    assert [model.id for model in client.models.list()] == [TINY_MODEL, "tagger"]


def test_eval_end_to_end_matches_a_hand_computation(
    tmp_path: Path,
    gateway: ThreadedServer,
    vllm_engine: VllmEngine,
    triton_gateways: dict[str, ThreadedServer],
    tagger: Task,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A vLLM-primary gateway, vLLM directly, and a Triton-BLS-primary gateway."""
    made: list[EvalSummary] = []  # the typed summary the command rendered, for the other formats

    def keep(*args: Any, **kwargs: Any) -> EvalSummary:
        made.append(summarize(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(eval_command, "summarize", keep)
    rows = {json.loads(line)["id"]: line for line in DATASET.read_text("utf-8").splitlines()}
    dataset = tmp_path / "fixture.jsonl"
    dataset.write_text("\n".join(rows[key] for key in FIXTURE) + "\n", encoding="utf-8")
    output = tmp_path / "report.json"
    trt = triton_gateways["tensorrt_llm_bls"].url
    status = cli.main(
        ["eval", "--dataset", str(dataset), "--split", "all", "--tasks-dir", str(PROMPTS),
         "--target", f"gw={gateway.url}/v1", "--target", f"vllm={vllm_engine.url}",
         "--target", f"trt={trt}/v1",
         "--concurrency", "4", "--format", "json", "--output", str(output)]
    )  # fmt: skip
    assert status == 0
    summary = json.loads(output.read_text("utf-8"))
    assert [(t["name"], t["mode"], t["model"]) for t in summary["targets"]] == [
        ("gw", "gateway", "tagger"),
        ("vllm", "direct", TINY_MODEL),
        ("trt", "gateway", "tagger"),
    ]
    assert [row["id"] for row in summary["rows"]] == list(FIXTURE)
    for target in summary["targets"]:
        check_target(summary, target)
    for target in summary["targets"]:
        assert target["schema_valid"]["rate"] == 1.0
        assert target["output_tokens"]["histogram"] == {"1": len(FIXTURE)}
    for row in summary["rows"]:
        assert all(p["answer"] in tagger.codes for p in row["predictions"].values())
    pairs = [(pair["first"], pair["second"]) for pair in summary["agreement"]]
    assert pairs == [("gw", "vllm"), ("gw", "trt"), ("vllm", "trt")]
    for pair in summary["agreement"]:
        check_agreement(summary, pair)
    (typed,) = made
    assert report.render(typed, "json") == output.read_text("utf-8")
    for fmt in ("text", "html"):
        assert summary["version"] in report.render(typed, fmt)
    html = report.render(typed, "html")
    assert "<svg" in html
    assert "<script" not in html
    assert "src=" not in html
    assert "href=" not in html


def check_target(summary: dict[str, Any], target: dict[str, Any]) -> None:
    """Recomputes a target's numbers from the per-example rows, by hand."""
    name, n = target["name"], len(FIXTURE)
    predictions = [row["predictions"][name] for row in summary["rows"]]
    golds = [row["gold"] for row in summary["rows"]]
    guesses = [labels_or_invalid(summary, p) for p in predictions]
    valid = sum(1 for p in predictions if p["labels"] is not None)
    assert target["count"] == n
    assert target["schema_valid"]["successes"] == valid
    assert target["errors"] == sum(1 for p in predictions if p["error"] is not None)
    tokens = [str(p["output_tokens"]) for p in predictions if p["output_tokens"] is not None]
    histogram = {count: tokens.count(count) for count in sorted(set(tokens))}
    assert (target["output_tokens"] or {}).get("histogram", {}) == histogram
    exact = sum(1 for p, g in zip(predictions, golds, strict=True) if p["labels"] == g)
    assert target["exact"]["successes"] == exact
    for field, labels in summary["fields"].items():
        pairs = [(g[field], p[field]) for g, p in zip(golds, guesses, strict=True)]
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


def labels_or_invalid(summary: dict[str, Any], prediction: dict[str, Any]) -> dict[str, str]:
    """A prediction's labels; an invalid answer is the label INVALID in every field."""
    labels: dict[str, str] | None = prediction["labels"]
    return labels if labels is not None else dict.fromkeys(summary["fields"], INVALID)


def check_agreement(summary: dict[str, Any], pair: dict[str, Any]) -> None:
    first = [
        labels_or_invalid(summary, row["predictions"][pair["first"]]) for row in summary["rows"]
    ]
    second = [
        labels_or_invalid(summary, row["predictions"][pair["second"]]) for row in summary["rows"]
    ]
    same = sum(1 for a, b in zip(first, second, strict=True) if a == b)
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


def dataset_rows() -> dict[str, dict[str, Any]]:
    lines = DATASET.read_text(encoding="utf-8").splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


async def read_pairs(url: str) -> list[PairRecord]:
    store = open_store(url)
    try:
        return await store.read()
    finally:
        await store.close()
