"""backends.token_ids: ids taken out of vLLM's answers, leaving what the client would have had.

The samples are real vLLM 0.32 answers to the same request with and without
`return_token_ids` (the tiny model; content and ids vary, the shape does not)."""

from __future__ import annotations

import orjson

from backends.base import TokenIds
from backends.token_ids import take_ids

WITH_IDS = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"tiny","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":" in b\\u00e1o"},"logprobs":null,'
    b'"finish_reason":"length","stop_reason":null,"token_ids":[343,992,587,520],'
    b'"routed_experts":null}],"usage":{"prompt_tokens":8,"total_tokens":12,'
    b'"completion_tokens":4},"prompt_logprobs":null,"prompt_token_ids":[7,206,424,835,6,206,4,206],'
    b'"prompt_text":null}'
)
WITHOUT_IDS = WITH_IDS.replace(b"[343,992,587,520]", b"null").replace(
    b"[7,206,424,835,6,206,4,206]", b"null"
)
FIRST_EVENT = (
    b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
    b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],'
    b'"prompt_token_ids":[7,206,424],"prompt_text":null}\n\n'
)
DELTAS = (
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" h"},"token_ids":[306]}]}\n\n'
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":" b"},"token_ids":[765]}]}\n\n'
)


def test_an_answer_loses_its_ids_and_reads_as_without_them() -> None:
    ids = TokenIds()
    assert take_ids(WITH_IDS, ids) == WITHOUT_IDS
    assert ids.prompt == (7, 206, 424, 835, 6, 206, 4, 206)
    assert ids.output == [343, 992, 587, 520]
    assert orjson.loads(WITHOUT_IDS)["prompt_token_ids"] is None


def test_a_stream_gathers_its_ids_event_by_event() -> None:
    ids = TokenIds()
    first = take_ids(FIRST_EVENT, ids)
    rest = take_ids(DELTAS, ids)
    assert b'"prompt_token_ids":null' in first
    assert rest.count(b'"token_ids":null') == 2
    assert ids.prompt == (7, 206, 424)
    assert ids.output == [306, 765]


def test_ids_the_gateway_sent_are_kept() -> None:
    ids = TokenIds(prompt=(1, 2))
    take_ids(WITH_IDS, ids)
    assert ids.prompt == (1, 2)


def test_only_the_first_choice_counts_and_bodies_without_ids_pass_untouched() -> None:
    two = (
        b'{"choices":[{"index":0,"token_ids":[1]},{"index":1,"token_ids":[2]}],'
        b'"prompt_token_ids":null}'
    )
    ids = TokenIds()
    assert take_ids(two, ids) == two.replace(b"[1]", b"null").replace(b"[2]", b"null")
    assert ids.output == [1]
    assert take_ids(WITHOUT_IDS, TokenIds()) is WITHOUT_IDS


def test_other_keys_ending_in_token_ids_are_left_alone() -> None:
    body = b'{"my_token_ids":[1,2],"choices":[{"index":0,"token_ids":[3]}],"x":"token_ids\\":[4]"}'
    ids = TokenIds()
    assert take_ids(body, ids) == body.replace(b'"token_ids":[3]', b'"token_ids":null')
    assert (ids.prompt, ids.output) == (None, [3])
