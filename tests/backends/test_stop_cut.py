"""backends.stop_cut: stop strings applied to answers relayed from an engine that matches them
on token ids only (trtllm-serve), whole and streamed."""

from __future__ import annotations

from typing import Any

import orjson

from backends.base import Route
from backends.stop_cut import DONE, StreamCut, cut_answer

ANSWER = "Một hai ba bốn"


def chat_answer(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"content": content}, "finish_reason": "length"}]}


def test_a_whole_answer_is_cut_at_its_first_stop() -> None:
    answer = chat_answer(ANSWER)
    assert cut_answer(answer, ("bốn", "ba"), Route.CHAT)
    assert answer["choices"][0] == {"index": 0, "message": {"content": "Một hai "},
                                    "finish_reason": "stop"}  # fmt: skip


def test_a_whole_answer_without_its_stop_is_left_as_it_is() -> None:
    answer = chat_answer(ANSWER)
    assert not cut_answer(answer, ("năm",), Route.CHAT)
    assert answer == chat_answer(ANSWER)


def test_a_completion_is_cut_in_its_text() -> None:
    answer = {"choices": [{"index": 0, "text": ANSWER, "finish_reason": "length"}]}
    assert cut_answer(answer, ("ba",), Route.COMPLETIONS)
    assert answer["choices"][0]["text"] == "Một hai "


def events(*chunks: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks)


def delta(content: str | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {} if content is None else {"content": content}}
    if finish is not None:
        choice |= {"finish_reason": finish, **extra}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def texts(data: bytes) -> list[tuple[str | None, str | None]]:
    found = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in orjson.loads(event[6:])["choices"]:
                found.append((choice["delta"].get("content"), choice.get("finish_reason")))
    return found


def test_a_stream_holds_back_what_may_begin_a_stop_and_ends_at_it() -> None:
    cut = StreamCut(("ba",), Route.CHAT)
    chunks = (delta(None), delta("Một "), delta("hai b"), delta("a bốn"), delta(" năm"))
    sent = [cut.events(events(chunk)) for chunk in chunks]
    assert [texts(data) for data in sent] == [
        [(None, None)],
        [("Một ", None)],
        [("hai ", None)],
        [("", "stop")],
        [],
    ]
    assert cut.done
    assert sent[-1] == b""  # the choice had ended: its later events are dropped


def test_held_text_the_engine_stopped_on_is_dropped() -> None:
    """The engine matched the stop on its tokens: it streamed "b" before the stop's last
    token, then ends with `stop_reason` naming the stop."""
    cut = StreamCut(("ba",), Route.CHAT)
    data = cut.events(events(delta("Một hai b"), delta("", "stop", stop_reason="ba")))
    assert texts(data) == [("Một hai ", None), ("", "stop")]


def test_held_text_is_given_when_the_engine_ends_otherwise() -> None:
    cut = StreamCut(("ba",), Route.CHAT)
    data = cut.events(events(delta("Một hai b"), delta(None, "length")))
    assert texts(data) == [("Một hai ", None), ("b", "length")]


def test_usage_and_done_pass_untouched() -> None:
    cut = StreamCut(("ba",), Route.CHAT)
    usage = events({"choices": [], "usage": {"prompt_tokens": 3}}) + DONE
    assert cut.events(usage) == usage
    assert not cut.done


def test_completion_chunks_are_cut_in_their_text() -> None:
    cut = StreamCut(("ba",), Route.COMPLETIONS)
    chunk = {"choices": [{"index": 0, "text": "hai ba", "finish_reason": None}]}
    (event,) = [e for e in cut.events(events(chunk)).split(b"\n\n") if e]
    assert orjson.loads(event[6:])["choices"][0] == {
        "index": 0, "text": "hai ", "finish_reason": "stop"
    }  # fmt: skip
