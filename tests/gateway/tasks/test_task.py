"""Tasks: loading and validating task.toml, building identical prefix-first prompts, expanding
codes; and the hot-path hook against a fake upstream whose answer is not a code."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from transformers import AutoTokenizer

from backends.chat_template import ChatTemplate
from backends.errors import BackendProtocolError, InvalidRequest
from backends.sampling import OPENAI_DEFAULTS, resolve
from backends.triton.interface import ModelInterface
from backends.triton.request import generation
from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from gateway.tasks.config import TaskConfigError
from gateway.tasks.task import PROMPT_VERSION_HEADER, Task, load_task, load_tasks
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import ThreadedServer

PROMPTS = Path(__file__).resolve().parents[3] / "prompts"
DATASET = PROMPTS / "tagger" / "dataset.jsonl"
EXCHANGE = [
    {"role": "user", "content": "con làm xong rồi nè"},
    {"role": "assistant", "content": "Con bấm nút 'Nộp bài' để Pika chấm nhé."},
]


@pytest.fixture(scope="module")
def tagger() -> Task:
    return load_tasks(PROMPTS)["tagger"]


def rows() -> dict[str, dict[str, Any]]:
    lines = DATASET.read_text(encoding="utf-8").splitlines()
    return {row["id"]: row for row in map(json.loads, lines)}


def payload(child: str, pika: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": child}, {"role": "assistant", "content": pika}]
    return {"model": "tagger", "messages": messages, **extra}


def test_the_tagger_loads_with_its_version_and_codes(tagger: Task) -> None:
    assert tagger.alias == "tagger"
    assert tagger.version == "tagger-v1"
    assert tagger.codes == ("M", "H", "A", "C", "E", "T", "P", "N")
    assert tagger.fields["celebrate"] == (False, True)
    assert tagger.config.decoding.temperature == 0.0
    assert tagger.config.decoding.max_tokens == 1


def test_codes_are_exactly_the_label_combinations_of_the_dataset(tagger: Task) -> None:
    in_dataset = {(row["mood"], row["celebrate"]) for row in rows().values()}
    expanded = [tagger.expand(code) for code in tagger.codes]
    assert sorted((e["mood"], e["celebrate"]) for e in expanded if e) == sorted(in_dataset)


def test_examples_are_dev_pairs_quoted_verbatim_with_their_gold_labels(tagger: Task) -> None:
    dataset = rows()
    sources = [example.source for example in tagger.config.examples]
    assert len(sources) >= 8
    for example in tagger.config.examples:
        row = dataset[str(example.source)]
        assert row["split"] == "dev"  # never test: final numbers come from the held-back split
        assert example.exchange == {"user": row["child"], "assistant": row["pika"]}
        assert tagger.expand(example.answer) == {"mood": row["mood"], "celebrate": row["celebrate"]}
        assert row["pair"] in sources  # contrastive: its near-miss twin is in the prompt too
    assert {example.answer for example in tagger.config.examples} == set(tagger.codes)


def test_build_is_byte_identical_whatever_the_client_adds(tagger: Task) -> None:
    child, pika = EXCHANGE[0]["content"], EXCHANGE[1]["content"]
    plain = orjson.dumps(tagger.build(payload(child, pika), "m"))
    again = orjson.dumps(tagger.build(payload(child, pika), "m"))
    app_defaults = payload(child, pika, max_tokens=50, temperature=0.7, user="u1")
    reordered = {"messages": list(EXCHANGE), "model": "tagger", "stream": False}
    assert plain == again
    assert orjson.dumps(tagger.build(app_defaults, "m")) == plain
    assert orjson.dumps(tagger.build(reordered, "m")) == plain


def test_build_puts_every_shared_token_first_and_the_exchange_last(tagger: Task) -> None:
    template = ChatTemplate.builtin("phi3")
    first = tagger.build(payload("CHILD-ONE", "PIKA-ONE"), "m")
    second = tagger.build(payload("CHILD-TWO {user} {0}", "PIKA-TWO"), "m")
    assert first["messages"][:-1] == second["messages"][:-1]
    assert first["messages"][-1] == {"role": "user", "content": "Trẻ: CHILD-ONE\nPika: PIKA-ONE"}
    assert second["messages"][-1]["content"] == "Trẻ: CHILD-TWO {user} {0}\nPika: PIKA-TWO"
    one, two = template.render(first["messages"]), template.render(second["messages"])
    start = one.index("CHILD-ONE")
    # Everything before the first per-request character is shared, token for token...
    assert one[:start] == two[:start]
    # ...and only the exchange and the template's closing markers follow it.
    assert one[start:] == "CHILD-ONE\nPika: PIKA-ONE<|end|>\n<|assistant|>\n"
    assert one.count("PIKA-ONE") == 1


def test_the_triton_adapter_renders_every_prompt_as_transformers_does(
    tagger: Task, tiny_model_dir: Path
) -> None:
    """vLLM renders a chat with the model's template through transformers; the Triton adapter
    renders its own copy: for every exchange of the dataset, the two texts are the same."""
    reference = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = ChatTemplate.from_tokenizer_dir(tiny_model_dir)
    for row in rows().values():
        messages = tagger.build(payload(row["child"], row["pika"]), "m")["messages"]
        expected = reference.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert template.render(messages) == expected, row["id"]


def test_build_carries_decoding_and_the_choice_every_backend_honours(tagger: Task) -> None:
    body = tagger.build(payload("a", "b"), "phi-3")
    assert body["model"] == "phi-3"
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 1
    assert body["structured_outputs"] == {"choice": list(tagger.codes)}
    triton = ModelInterface.from_config(
        {
            "name": "m",
            "max_batch_size": 8,
            "input": [
                {"name": name, "data_type": kind, "optional": True}
                for name, kind in [
                    ("text_input", "TYPE_STRING"),
                    ("max_tokens", "TYPE_INT32"),
                    ("top_k", "TYPE_INT32"),
                    ("temperature", "TYPE_FP32"),
                    ("guided_decoding_guide_type", "TYPE_STRING"),
                    ("guided_decoding_guide", "TYPE_STRING"),
                ]
            ],
            "output": [{"name": "text_output"}],
        },
        "auto",
    )
    plan = generation(body, "prompt", 1000, 64, triton, resolve(body, {}, OPENAI_DEFAULTS))
    assert (plan.guide_type, plan.guide) == ("regex", "(M|H|A|C|E|T|P|N)")
    assert plan.max_tokens == 1
    assert plan.greedy


@pytest.mark.parametrize(
    ("change", "param", "fragment"),
    [
        ({"stream": True}, "stream", "stream=false"),
        ({"tools": [{"type": "function"}]}, "tools", "cannot honour 'tools'"),
        ({"n": 2}, "n", "cannot honour 'n'"),
        ({"messages": [{"role": "system", "content": "x"}, *EXCHANGE]}, "messages", "'system'"),
        ({"messages": EXCHANGE[:1]}, "messages", "one 'assistant' message"),
        ({"messages": [*EXCHANGE, EXCHANGE[0]]}, "messages", "a second"),
        ({"messages": [EXCHANGE[0], {"role": "assistant", "content": None}]}, "messages", "text"),
    ],
)
def test_build_refuses_what_the_task_cannot_take(
    tagger: Task, change: dict[str, Any], param: str, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as error:
        tagger.build({**payload("a", "b"), **change}, "m")
    assert error.value.param == param
    assert fragment in error.value.message


SEED_SYSTEM = "You are a high-speed, accurate Mood & Celebrate Tagger..."


def block(child: str, pika: str) -> str:
    """The user message of the app's request before the alias (seed 004's curl)."""
    return f'[CONTEXT]\nuser_last_message: "{child}"\npika_response: "{pika}"'


def seed_payload(content: object, system: bool = True) -> dict[str, Any]:
    messages = [{"role": "system", "content": SEED_SYSTEM}] if system else []
    return {"model": "tagger", "messages": [*messages, {"role": "user", "content": content}],
            "temperature": 0, "max_tokens": 50}  # fmt: skip


def test_the_apps_block_request_builds_the_two_message_prompt(tagger: Task) -> None:
    """The app's own system prompt is replaced by the pack's; the fields are the exchange."""
    for row in list(rows().values())[:40]:
        expected = tagger.build(payload(row["child"], row["pika"]), "m")
        assert tagger.build(seed_payload(block(row["child"], row["pika"])), "m") == expected
        alone = seed_payload(block(row["child"], row["pika"]), system=False)
        assert tagger.build(alone, "m") == expected
    built = tagger.build(seed_payload(block("Dạ, con voi ăn cỏ ạ.", "Đúng rồi!")), "m")
    assert SEED_SYSTEM not in json.dumps(built, ensure_ascii=False)
    assert built["messages"][0] == {"role": "system", "content": tagger.config.prompt.system}
    assert built["messages"][-1]["content"] == "Trẻ: Dạ, con voi ăn cỏ ạ.\nPika: Đúng rồi!"
    lines = ["[CONTEXT]", 'user_last_message: "a"', 'pika_response: "b"']
    parts = [{"type": "text", "text": line} for line in lines]
    assert tagger.build(seed_payload(parts), "m") == tagger.build(payload("a", "b"), "m")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('[CONTEXT]\nuser_last_message: "12 ạ"', "lacks the field pika_response"),
        ('[CONTEXT]\npika_response: "Đúng!"', "lacks the field user_last_message"),
        ('user_last_message: "12"\npika_response: "Đúng!"', "does not start with the header"),
        ("Trẻ: 12\nPika: Đúng!", "does not start with the header [CONTEXT]"),
        ('[CONTEXT]\nuser_last_message: "12\npika_response: "Đúng!"', "no closing quote"),
    ],
)
def test_a_malformed_block_is_a_400_naming_what_is_missing(
    tagger: Task, content: str, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as error:
        tagger.build(seed_payload(content), "m")
    assert error.value.status_code == 400
    assert error.value.param == "messages"
    assert fragment in error.value.message
    assert 'user_last_message: "..." and pika_response: "..."' in error.value.message


def test_a_lone_user_message_without_the_header_is_no_block(tagger: Task) -> None:
    with pytest.raises(InvalidRequest) as error:
        tagger.build(seed_payload("con làm xong rồi", system=False), "m")
    assert "one 'assistant' message" in error.value.message
    assert "[CONTEXT] block" in error.value.message


def test_text_parts_are_joined_like_vllm_joins_them(tagger: Task) -> None:
    parts = [{"type": "text", "text": "12"}, {"type": "text", "text": "ạ"}]
    body = tagger.build({"messages": [{"role": "user", "content": parts}, EXCHANGE[1]]}, "m")
    assert body["messages"][-1]["content"].startswith("Trẻ: 12\nạ\nPika: ")


def test_expand_maps_codes_and_rejects_anything_else(tagger: Task) -> None:
    assert tagger.expand("M") == {"mood": "happy", "celebrate": True}
    assert tagger.expand("A") == {"mood": "comforting", "celebrate": True}
    assert tagger.expand("N\n") == {"mood": "neutral", "celebrate": False}
    for text in ("", "X", "MH", "m", "happy", '{"mood": "happy"}'):
        assert tagger.expand(text) is None


def completion(content: object) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    usage = {"prompt_tokens": 900, "completion_tokens": 1, "total_tokens": 901}
    return orjson.dumps({"id": "c1", "created": 5, "choices": [choice], "usage": usage})


def test_result_answers_json_and_keeps_the_version(tagger: Task) -> None:
    result = tagger.result(completion("E"))
    assert (result.version, result.answer) == ("tagger-v1", "E")
    body = orjson.loads(result.body())
    assert body["model"] == "tagger"
    assert body["system_fingerprint"] == "tagger-v1"
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "mood": "encouraging",
        "celebrate": False,
    }
    assert body["usage"]["completion_tokens"] == 1
    assert "raw" not in body
    assert orjson.loads(result.body(include_raw=True))["raw"] == orjson.loads(completion("E"))


@pytest.mark.parametrize("body", [completion("maybe"), completion(None), b"<html>", b"{}"])
def test_an_answer_that_is_no_code_is_a_502_naming_the_codes(tagger: Task, body: bytes) -> None:
    with pytest.raises(BackendProtocolError) as error:
        tagger.result(body)
    assert error.value.status_code == 502
    assert error.value.headers == {PROMPT_VERSION_HEADER: "tagger-v1"}
    assert "task 'tagger'" in error.value.message


def write_task(folder: Path, edit: Callable[[str], str] = lambda text: text) -> Path:
    source = (PROMPTS / "tagger" / "task.toml").read_text(encoding="utf-8")
    path = folder / "task.toml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(edit(source), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('version = "tagger-v1"\n', "", "version: Field required"),
        ("Trẻ: {user}", "Trẻ: {child}", "{child} is not one of"),
        ('answer = "A"', 'answer = "Z"', "examples[0].answer: 'Z' is not a code"),
        (
            "N = { mood",
            'NN = { mood = "neutral", celebrate = false }\nN = { mood',
            "'N' is a prefix",
        ),
        ('T = { mood = "thinking"', 'T = { mood = "pensive"', "output.codes.T.mood: 'pensive'"),
        ("celebrate = false }\nE", 'celebrate = "no" }\nE', "output.codes.C.celebrate"),
        ("max_tokens = 1", "max_tokens = 0", "decoding.max_tokens"),
        ('type = "boolean"', 'type = "number"', "a string enum or a boolean"),
        ("additionalProperties = false", "", "additionalProperties: must be false"),
        ('alias = "tagger"', 'alias = "Tagger!"', "alias: String should match"),
        (
            '[dataset]\nexchange = { user = "child", ',
            "[dataset]\nexchange = { ",
            "dataset.exchange",
        ),
        ('fields = { user = "user_last_message", ', "fields = { ", "block.fields: needs"),
        ('user = "user_last_message"', 'user = "pika_response"', "a field name of its own"),
        ('header = "[CONTEXT]"', 'header = ""', "block.header"),
        ('user = "user_last_message"', 'user = "user last"', "block.fields.user"),
        ("[decoding]", "[decoding", "Expected ']'"),
    ],
)
def test_invalid_task_files_are_refused_naming_file_and_key(
    tmp_path: Path, old: str, new: str, fragment: str
) -> None:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    path = write_task(tmp_path / "tagger", edit)
    with pytest.raises(TaskConfigError) as error:
        load_task(path)
    assert str(error.value).startswith(str(path))
    assert fragment in str(error.value)


def test_a_second_task_is_a_folder_not_a_module(tmp_path: Path) -> None:
    write_task(tmp_path / "tagger")
    (tmp_path / "sentiment").mkdir()
    (tmp_path / "sentiment" / "task.toml").write_text(
        'alias = "sentiment"\nversion = "s1"\n'
        '[prompt]\nsystem = "Answer + or -."\nexchange = "{user}"\n'
        "[decoding]\ntemperature = 0.0\nmax_tokens = 1\n"
        '[output.codes]\n"+" = { positive = true }\n"-" = { positive = false }\n'
        '[output.schema]\ntype = "object"\nrequired = ["positive"]\n'
        'additionalProperties = false\nproperties = { positive = { type = "boolean" } }\n',
        encoding="utf-8",
    )
    tasks = load_tasks(tmp_path)
    assert sorted(tasks) == ["sentiment", "tagger"]
    body = tasks["sentiment"].build({"messages": [{"role": "user", "content": "yay"}]}, "m")
    assert body["messages"] == [
        {"role": "system", "content": "Answer + or -."},
        {"role": "user", "content": "yay"},
    ]
    assert tasks["sentiment"].expand("-") == {"positive": False}


def test_duplicate_aliases_are_refused(tmp_path: Path) -> None:
    write_task(tmp_path / "a")
    write_task(tmp_path / "b")
    with pytest.raises(TaskConfigError, match="alias 'tagger' is already used"):
        load_tasks(tmp_path)


def test_settings_name_a_missing_tasks_dir_and_an_alias_clash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"GATEWAY_TASKS_DIR=.*is not a directory"):
        Settings(tasks_enabled=True, tasks_dir=tmp_path / "nowhere")
    settings = Settings(tasks_enabled=True, tasks_dir=PROMPTS, models=["tagger"])
    with pytest.raises(TaskConfigError, match="also model names: tagger"):
        create_app(settings)


def test_a_model_answer_that_is_no_code_is_a_clear_502_through_the_gateway(
    fake_upstream: tuple[FakeUpstream, ThreadedServer],
) -> None:
    backend = VllmSettings(url=fake_upstream[1].url, read_timeout=2.0)
    settings = Settings(backends={"vllm": backend}, tasks_enabled=True, tasks_dir=PROMPTS)
    with ThreadedServer(create_app(settings)) as gateway:
        response = httpx.post(gateway.url + "/v1/chat/completions", json=payload("a", "b"))
        assert response.status_code == 502
        assert response.headers[PROMPT_VERSION_HEADER] == "tagger-v1"
        error = response.json()["error"]
        assert error["code"] == "invalid_task_output"
        assert "'hello from fake'" in error["message"]
        assert "(M, H, A, C, E, T, P, N)" in error["message"]
        completions = httpx.post(
            gateway.url + "/v1/completions", json={"model": "tagger", "prompt": "x"}
        )
        assert completions.status_code == 400
        assert "served on /v1/chat/completions" in completions.json()["error"]["message"]
