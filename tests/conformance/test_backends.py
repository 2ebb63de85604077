"""One conformance suite, every backend kind: the same OpenAI requests through the gateway with
the `openai` SDK, the same assertions, on real vLLM, the trtllm-serve and `trtllm-serve --grpc`
stand-ins, and each TensorRT-LLM model on a real Triton server (the LLM-API model and the legacy
ensemble and BLS), all serving the tiny Qwen3. A kind contributes only its factory and its
measured differences (`tests/conformance/kinds.py`), never test code of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from tokenizers import Tokenizer

from backends import registry
from backends.registry import BackendSettings
from gateway.app import create_app
from gateway.probes import ProbeResult, run_probes
from gateway.settings import Settings
from gateway.shadow.pairs import PairRecord
from tests.conformance.kinds import CONTEXT, KINDS, Kind, vllm
from tests.conftest import CACHE, QWEN3_MODEL
from tests.engines.vllm_engine import VllmEngine
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer

PUBLIC = QWEN3_MODEL
CHAT: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Bạn là Pika, gia sư của các bạn nhỏ."},
    {"role": "user", "content": "Pika ơi, 5 + 7 bằng mấy?"},
]
SCHEMA = {
    "type": "object",
    "properties": {"mood": {"enum": ["happy", "sad"]}},
    "required": ["mood"],
    "additionalProperties": False,
}
SCHEMA_ANSWERS = ('{"mood":"happy"}', '{"mood":"sad"}')
CHOICES = ["vui", "buồn", "tự hào"]
FORCED = "Chúc mừng con! Đúng rồi, 5 + 7 = 12."
LONG_FORCED = "Một hai ba bốn năm sáu bảy tám chín mười, mười một, mười hai."
SHORT_FORCED = "Xin chào"
NO_CONSTRAINT = "cannot honour a structured output"


@dataclass
class Target:
    kind: Kind
    backend: BackendSettings
    server: ThreadedServer
    client: openai.OpenAI


@pytest.fixture(scope="module", params=KINDS, ids=[kind.name for kind in KINDS])
def target(request: pytest.FixtureRequest, tiny_qwen3_dir: Path) -> Iterator[Target]:
    """A gateway in front of one kind; only that kind's engine is started."""
    kind: Kind = request.param
    backend = kind.settings(request.getfixturevalue(kind.engine), tiny_qwen3_dir)
    settings = Settings(backends={kind.name: backend}, primary=kind.name, models=[PUBLIC])
    with ThreadedServer(create_app(settings)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        yield Target(kind, backend, server, client)
        client.close()


def chat(target: Target, **kwargs: Any) -> Any:
    return target.client.chat.completions.create(
        model=PUBLIC, messages=kwargs.pop("messages", CHAT), **kwargs
    )


def force(target: Target, text: str) -> dict[str, Any]:
    """The request fields that make the engine answer exactly `text`."""
    if target.kind.forced_by_hook:
        return {"messages": [{"role": "user", "content": f"[[force:{text}]]"}]}
    return {"extra_body": {"structured_outputs": {"choice": [text]}}}


def streamed_text(chunks: Any) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_chat_answers_with_usage(target: Target) -> None:
    answer = chat(target, temperature=0, max_tokens=12)
    assert answer.object == "chat.completion"
    assert answer.model == PUBLIC
    assert answer.choices[0].message.role == "assistant"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.prompt_tokens > 10
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert "<|" not in answer.choices[0].message.content  # special tokens stripped


def test_completion(target: Target) -> None:
    answer = target.client.completions.create(
        model=PUBLIC, prompt="Một, hai, ba", temperature=0, max_tokens=8
    )
    assert answer.object == "text_completion"
    assert not answer.choices[0].text.startswith("Một, hai, ba")  # the prompt is not echoed
    assert answer.usage is not None
    assert 0 < answer.usage.completion_tokens <= 8


def test_vietnamese_streams_intact(target: Target) -> None:
    """A forced Vietnamese answer, whole and streamed; the byte-level tokenizer splits its
    characters over tokens, so a stream that decodes token by token shows U+FFFD."""
    whole = chat(target, **force(target, FORCED), temperature=0, max_tokens=60)
    assert whole.choices[0].message.content == FORCED
    assert whole.choices[0].finish_reason == "stop"
    chunks = chat(target, **force(target, FORCED), temperature=0, max_tokens=60, stream=True)
    streamed = streamed_text(chunks)
    if target.kind.streams_split_characters:
        assert streamed == FORCED
    else:  # the ensemble detokenises each token alone: measured, and why it is legacy
        assert streamed != FORCED
        assert "\ufffd" in streamed


def test_greedy_is_deterministic_and_stream_equals_non_stream(target: Target) -> None:
    first = chat(target, temperature=0, max_tokens=16)
    second = chat(target, temperature=0, max_tokens=16)
    assert first.choices[0].message.content == second.choices[0].message.content
    chunks = list(chat(target, temperature=0, max_tokens=16, stream=True,
                       stream_options={"include_usage": True}))  # fmt: skip
    if target.kind.streams_split_characters:
        assert streamed_text(chunks) == first.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == first.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == first.usage.prompt_tokens


def test_stream_ends_with_done(target: Target) -> None:
    body = {"model": PUBLIC, "messages": CHAT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", target.server.url + "/v1/chat/completions", json=body) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert all("error" not in json.loads(event[6:]) for event in events[:-1])


@pytest.mark.parametrize("spelled", ["as-its-tokens", "across-tokens"])
def test_stop_cuts_the_answer_before_the_stop_string(
    target: Target, spelled: str, tiny_qwen3_dir: Path
) -> None:
    """A forced Vietnamese answer, cut before the stop, streamed or not. The stop is spelled
    as the answer's own tokens, or starts inside a character's tokens and spans a word
    boundary: TensorRT-LLM matches stops on token ids only and misses the second, and streams
    the first's leading tokens before it matches; the gateway cuts the text itself."""
    stop = token_aligned_stop(tiny_qwen3_dir) if spelled == "as-its-tokens" else "ời, m"
    expected = LONG_FORCED[: LONG_FORCED.index(stop)]
    request = {**force(target, LONG_FORCED), "temperature": 0, "max_tokens": 60, "stop": [stop]}
    answer = chat(target, **request)
    assert answer.choices[0].message.content == expected
    assert answer.choices[0].finish_reason == "stop"
    chunks = list(chat(target, **request, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    if target.kind.streams_split_characters:
        assert streamed_text(chunks) == expected


def token_aligned_stop(model_dir: Path) -> str:
    """Three of the forced answer's tokens, from its middle, whose text encodes back to them."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = tokenizer.encode(LONG_FORCED, add_special_tokens=False).ids
    for start in range(3, len(ids) - 3):
        text = tokenizer.decode(ids[start : start + 3])
        again = tokenizer.encode(text, add_special_tokens=False).ids
        if again == ids[start : start + 3] and text in LONG_FORCED and text.strip() == text:
            return str(text)
    raise AssertionError("no token-aligned stop in the forced answer")


def test_max_tokens_ends_with_length(target: Target) -> None:
    answer = chat(target, **force(target, LONG_FORCED), temperature=0, max_tokens=3)
    assert LONG_FORCED.startswith(answer.choices[0].message.content)
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage.completion_tokens == 3


def test_over_long_max_tokens(target: Target) -> None:
    """Past the context: vLLM's 400, or clamped to what the prompt leaves (the engine would
    refuse the unclamped value: the test engines check prompt plus max_tokens)."""
    request = {**force(target, SHORT_FORCED), "temperature": 0, "max_tokens": 100_000}
    if target.kind.refuses_long_max_tokens:
        with pytest.raises(openai.BadRequestError):
            chat(target, **request)
        return
    answer = chat(target, **request)
    assert answer.choices[0].message.content == SHORT_FORCED
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens + answer.usage.completion_tokens < CONTEXT


def test_temperature_alone_really_samples(target: Target) -> None:
    """temperature > 0 with no top_p, top_k or seed: TensorRT-LLM would decode greedily with a
    fixed seed unless the gateway asks it to sample, with a fresh seed each time."""
    sampled: set[str] = set()
    for _ in range(8):
        sampled.add(chat(target, temperature=1.0, max_tokens=16).choices[0].message.content)
        if len(sampled) > 1:
            break
    assert len(sampled) > 1, f"8 answers sampled at temperature 1 were all {sampled}"
    greedy = {chat(target, temperature=0, max_tokens=16).choices[0].message.content for _ in "ab"}
    assert len(greedy) == 1


def test_a_seed_repeats_a_sample(target: Target) -> None:
    def sample(seed: int, **kwargs: Any) -> str:
        answer = chat(target, temperature=1.0, seed=seed, max_tokens=12, **kwargs)
        return str(answer.choices[0].message.content)

    assert sample(7) == sample(7)
    assert sample(7) == streamed_text(chat(target, temperature=1.0, seed=7, max_tokens=12,
                                           stream=True))  # fmt: skip
    assert len({sample(seed) for seed in range(4)}) > 1  # and the seed is not just ignored


def test_response_format_json_schema(target: Target) -> None:
    """Honoured (an answer within the schema), or a 400 naming the field: never dropped."""
    response_format = {"type": "json_schema", "json_schema": {"name": "m", "schema": SCHEMA}}
    if not target.kind.constrains:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(target, temperature=0, max_tokens=30, response_format=response_format)
        assert NO_CONSTRAINT in caught.value.message
        assert caught.value.param == "response_format"
        return
    for seed in (1, 2):
        answer = chat(target, temperature=1.0, seed=seed, max_tokens=30,
                      response_format=response_format)  # fmt: skip
        content = answer.choices[0].message.content
        if answer.choices[0].finish_reason == "stop":
            assert json.loads(content)["mood"] in ("happy", "sad")
        else:  # vLLM's xgrammar lets JSON whitespace run on: what came is still the schema's
            compact = "".join(content.split())
            assert any(option.startswith(compact) for option in SCHEMA_ANSWERS), content


def test_structured_outputs_choice(target: Target) -> None:
    """What the tagger sends; Vietnamese choices split characters over tokens."""
    extra_body = {"structured_outputs": {"choice": CHOICES}}
    if not target.kind.constrains:
        with pytest.raises(openai.BadRequestError) as caught:
            chat(target, max_tokens=16, extra_body=extra_body)
        assert NO_CONSTRAINT in caught.value.message
        assert caught.value.param == "structured_outputs"
        return
    answers = [chat(target, temperature=1.0, seed=seed, max_tokens=16, extra_body=extra_body)
               for seed in range(4)]  # fmt: skip
    assert {answer.choices[0].message.content for answer in answers} <= set(CHOICES)
    assert {answer.choices[0].finish_reason for answer in answers} == {"stop"}
    chunks = chat(target, temperature=0, max_tokens=16, extra_body=extra_body, stream=True)
    streamed = streamed_text(chunks)
    if target.kind.streams_split_characters:
        assert streamed in CHOICES


def test_errors_are_typed(target: Target) -> None:
    with pytest.raises(openai.NotFoundError):
        target.client.chat.completions.create(model="nope", messages=CHAT)
    with pytest.raises(openai.BadRequestError):
        chat(target, temperature=-1)
    with pytest.raises(openai.BadRequestError) as caught:
        chat(target, max_tokens=4, extra_body={"chat_template_kwargs": ["enable_thinking"]})
    assert caught.value.param == "chat_template_kwargs"


def test_cut_stream_leaves_the_gateway_clean(target: Target) -> None:
    stream = chat(target, max_tokens=400, temperature=0, stream=True)
    for index, _ in enumerate(stream):
        if index == 2:
            break
    stream.close()
    assert chat(target, temperature=0, max_tokens=2).choices[0].finish_reason in ("stop", "length")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        metrics = httpx.get(target.server.url + "/metrics").text
        if in_flight(metrics) == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"the cut stream is still in flight: {in_flight(metrics)}")


def in_flight(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("gateway_in_flight_requests{")
    )


def test_conformance_probes_through_the_adapter(target: Target, run_summary: list[str]) -> None:
    """The gateway's own probes of each kind: what they find on the stand-ins is what the
    README's Stage 2 tables state."""

    async def run() -> list[ProbeResult]:
        backend = registry.create(target.kind.name, target.backend)
        try:
            return await run_probes(backend)
        finally:
            await backend.close()

    found = {result.check: result for result in asyncio.run(run())}
    outcomes = {check: result.outcome for check, result in found.items()}
    run_summary.append(f"conformance probes, tiny Qwen3, {target.kind.name}: {outcomes}")
    assert outcomes["constraint"] == ("pass" if target.kind.constrains else "refused")
    for check in ("stop", "max_tokens", "seed"):
        assert outcomes[check] == "pass", found[check].detail
    # It streams the model's own greedy answer: the tiny Qwen3's is newlines, with no split
    # character for the ensemble to garble (test_vietnamese_streams_intact forces one).
    if target.kind.streams_split_characters:
        assert outcomes["vietnamese_stream"] == "pass", found["vietnamese_stream"].detail


THINKING: list[bool | None] = [None, True, False]


def test_chat_template_kwargs_render_as_on_vllm(
    target: Target, vllm_qwen3_engine: VllmEngine, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    """Qwen3's `enable_thinking` gives the engine exactly the prompt ids vLLM reads, proved by
    the evidence the gateway records: each request shadowed from vLLM (which reports the ids
    it read) to the kind, every leg's prompt digest and token count compared."""
    store = tmp_path / "pairs.db"
    settings = Settings(
        backends={"reference": vllm(vllm_qwen3_engine, tiny_qwen3_dir),
                  target.kind.name: target.backend},
        primary="reference", models=[PUBLIC], shadow=target.kind.name, shadow_rate=1.0,
        noise_rate=0.0, records_url=f"sqlite:///{store}", records_text="full",
    )  # fmt: skip
    with (
        ThreadedServer(create_app(settings)) as server,
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0) as client,
    ):
        for thinking in THINKING:
            kwargs = {} if thinking is None else {"enable_thinking": thinking}
            extra_body = {"chat_template_kwargs": kwargs}
            client.chat.completions.create(
                model=PUBLIC, messages=CHAT, temperature=0, max_tokens=4, extra_body=extra_body
            )
    pairs = {thinking_of(pair): pair for pair in stored_pairs(store)}
    assert set(pairs) == set(THINKING)
    for pair in pairs.values():
        assert pair.candidate.status == 200, pair.candidate.error
        assert pair.primary.prompt_digest is not None  # vLLM's own report of what it read
        assert pair.candidate.prompt_digest == pair.primary.prompt_digest
        assert pair.prompt_diff is None
        assert pair.candidate.prompt_tokens == pair.primary.prompt_tokens
    # The variable reached the template: false closes an empty think block, true is the default.
    assert pairs[False].primary.prompt_digest != pairs[True].primary.prompt_digest
    assert pairs[True].primary.prompt_digest == pairs[None].primary.prompt_digest
    assert (pairs[False].primary.prompt_tokens or 0) > (pairs[True].primary.prompt_tokens or 0)


def thinking_of(pair: PairRecord) -> bool | None:
    kwargs = json.loads(pair.request or "{}").get("chat_template_kwargs") or {}
    value: bool | None = kwargs.get("enable_thinking")
    return value


@pytest.fixture(scope="module")
def vllm_greedy(vllm_qwen3_engine: VllmEngine) -> list[str]:
    """vLLM's greedy answers to `AGREEMENT_PROMPTS`, asked once."""
    with openai.OpenAI(base_url=vllm_qwen3_engine.url + "/v1", api_key="x") as client:
        return [greedy_answer(client, QWEN3_MODEL, prompt) for prompt in AGREEMENT_PROMPTS]


AGREEMENT_PROMPTS = [f"Câu {i}: Pika ơi, {i} + {i + 1} bằng mấy?" for i in range(10)]


def greedy_answer(client: openai.OpenAI, model: str, prompt: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=12
    )
    return answer.choices[0].message.content or ""


def test_greedy_agreement_with_vllm_is_reported(
    target: Target, vllm_greedy: list[str], run_summary: list[str]
) -> None:
    """How often the kind agrees with vLLM at temperature 0 on the same weights and prompt ids.

    Reported in the run's summary. Engines differ numerically, which is what shadow traffic
    measures, so a flip or two may be fair; a kind that reads another prompt or other sampling
    parameters agrees on next to none (every kind gave 10/10 here).
    """
    answers = [greedy_answer(target.client, PUBLIC, prompt) for prompt in AGREEMENT_PROMPTS]
    same = sum(a == b for a, b in zip(answers, vllm_greedy, strict=True))
    run_summary.append(
        f"greedy agreement with vLLM, tiny Qwen3, {target.kind.name}: "
        f"{same}/{len(AGREEMENT_PROMPTS)} identical answers"
    )
    assert same >= len(AGREEMENT_PROMPTS) - 2, list(zip(answers, vllm_greedy, strict=True))


def test_reported_lines_reach_the_run_output(tmp_path: Path) -> None:
    """What a test adds to `run_summary` is in pytest's output, where CI shows it."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_terminal_summary, run_summary  # noqa: F401\n"
    )
    (tmp_path / "test_report.py").write_text(
        "def test_report(run_summary):\n    run_summary.append('agreement: 7/10')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(CACHE.parent)},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reported by tests" in result.stdout
    assert "agreement: 7/10" in result.stdout
