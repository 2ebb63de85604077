"""Tests for the `trtllm-serve --grpc` stand-in: the real subprocess, driven through
smg-grpc-proto's generated client stub, as a gateway adapter would drive it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from smg_grpc_proto.generated import (  # ships no py.typed
    common_pb2,
    trtllm_service_pb2,
    trtllm_service_pb2_grpc,
)

from tests.engines.procfs import TICKS_PER_SECOND, cpu_ticks
from tests.engines.tiny_llm import TinyLlm
from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine

pb2: Any = trtllm_service_pb2
VIETNAMESE = "Chúc mừng con!"
REGEX = "[0-9]{3}-ok"


@pytest.fixture(scope="module")
def engine(trtllm_grpc_engine: TrtllmGrpcEngine) -> TrtllmGrpcEngine:
    return trtllm_grpc_engine


@pytest.fixture(scope="module")
def unguided(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A second server without a guided decoding backend."""
    log = tmp_path_factory.mktemp("unguided") / "trtllm-grpc.log"
    with TrtllmGrpcEngine(tiny_model_dir, guided_decoding=False, log_path=log) as server:
        yield server


@pytest.fixture(scope="module")
def llm(tiny_model_dir: Path) -> TinyLlm:
    """The tiny model's tokenizer and special ids, whichever model it is."""
    return TinyLlm(tiny_model_dir)


def _chat(llm: TinyLlm, content: str) -> list[int]:
    """The rendered chat as a router tokenises it: the template adds the special tokens."""
    messages = [{"role": "user", "content": content}]
    text = llm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(llm.tokenizer.encode(text, add_special_tokens=False))


def _ids(llm: TinyLlm, text: str) -> list[int]:
    return list(llm.tokenizer.encode(text, add_special_tokens=False))


def _request(prompt_ids: list[int] | None, **fields: Any) -> Any:
    if prompt_ids is not None:
        fields["tokenized"] = pb2.TokenizedInput(input_token_ids=prompt_ids)
    return pb2.GenerateRequest(**{"request_id": "test", "max_tokens": 40, **fields})


async def _collect(address: str, request: Any) -> tuple[list[Any], grpc.aio.AioRpcError | None]:
    """Every message of one Generate call, and the error status it ended with, if any."""
    messages: list[Any] = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
        try:
            async for message in stub.Generate(request):
                messages.append(message)
        except grpc.aio.AioRpcError as error:
            return messages, error
    return messages, None


def _generate(engine: TrtllmGrpcEngine, request: Any) -> list[Any]:
    messages, error = asyncio.run(_collect(engine.address, request))
    assert error is None, error
    return messages


def _refused(engine: TrtllmGrpcEngine, request: Any) -> grpc.aio.AioRpcError:
    """The error status of a call that must fail before sending anything."""
    messages, error = asyncio.run(_collect(engine.address, request))
    assert messages == []
    assert error is not None
    return error


def _complete(messages: list[Any]) -> Any:
    """The one `complete`, which must come last."""
    kinds = [message.WhichOneof("response") for message in messages]
    assert kinds.count("complete") == 1, kinds
    assert kinds[-1] == "complete", kinds
    return messages[-1].complete


@pytest.mark.parametrize("streaming", [True, False])
def test_generate_returns_the_forced_ids_until_the_stop_token(
    engine: TrtllmGrpcEngine, llm: TinyLlm, streaming: bool
) -> None:
    prompt = _chat(llm, f"Say [[force:{VIETNAMESE}]]")
    request = _request(
        prompt, request_id="forced", streaming=streaming, stop_token_ids=[llm.end_of_turn_id]
    )
    messages = _generate(engine, request)
    assert {message.request_id for message in messages} == {"forced"}
    forced = _ids(llm, VIETNAMESE)
    complete = _complete(messages)
    assert list(complete.output_token_ids) == forced
    assert complete.finish_reason == "stop"
    assert complete.WhichOneof("matched_stop") == "matched_token_id"
    assert complete.matched_token_id == llm.end_of_turn_id
    assert (complete.prompt_tokens, complete.completion_tokens) == (len(prompt), len(forced))
    chunks = [message.chunk for message in messages[:-1]]
    if not streaming:
        assert chunks == []
        return
    assert [token for chunk in chunks for token in chunk.token_ids] == forced
    assert [chunk.completion_tokens for chunk in chunks] == list(range(1, len(forced) + 1))
    assert {chunk.prompt_tokens for chunk in chunks} == {len(prompt)}


def test_stops_are_cut_unless_kept_and_strings_are_reported(
    engine: TrtllmGrpcEngine, llm: TinyLlm
) -> None:
    prompt = _chat(llm, f"Say [[force:{VIETNAMESE}]]")
    forced = _ids(llm, VIETNAMESE)
    kept = _request(prompt, stop_token_ids=[llm.end_of_turn_id], include_stop_token_in_output=True)
    assert list(_complete(_generate(engine, kept)).output_token_ids) == [
        *forced,
        llm.end_of_turn_id,
    ]
    # Two answer tokens whose text the server tokenises back to them (stops match on ids).
    at = next(
        i
        for i in range(1, len(forced) - 1)
        if _ids(llm, llm.decode(forced[i : i + 2])) == forced[i : i + 2]
    )
    stop = llm.decode(forced[at : at + 2])
    complete = _complete(_generate(engine, _request(prompt, stop=[stop], streaming=True)))
    assert list(complete.output_token_ids) == forced[:at]
    assert complete.finish_reason == "stop"
    assert complete.matched_stop_str == stop


def test_max_tokens_finishes_with_length(engine: TrtllmGrpcEngine, llm: TinyLlm) -> None:
    prompt = _chat(llm, f"Say [[force:{VIETNAMESE}]]")
    complete = _complete(_generate(engine, _request(prompt, max_tokens=3, streaming=True)))
    assert list(complete.output_token_ids) == _ids(llm, VIETNAMESE)[:3]
    assert complete.finish_reason == "length"
    assert complete.WhichOneof("matched_stop") is None


def test_sampling_is_the_default_and_a_seed_repeats_it(
    engine: TrtllmGrpcEngine, llm: TinyLlm
) -> None:
    prompt = _chat(llm, "Tell me a story")

    def ids(**sampling: Any) -> list[int]:
        config = pb2.SamplingConfig(**sampling)
        request = _request(prompt, max_tokens=12, ignore_eos=True, sampling_config=config)
        return list(_complete(_generate(engine, request)).output_token_ids)

    assert ids(seed=11) == ids(seed=11)
    assert ids(seed=11) != ids(seed=12)
    assert ids() != ids()  # no temperature given: 1.0, so sampled, not greedy
    assert ids(temperature=0.0) == ids(temperature=0.0, seed=5)


def test_a_regex_guide_is_honoured_only_with_guided_decoding(
    engine: TrtllmGrpcEngine, unguided: TrtllmGrpcEngine, llm: TinyLlm
) -> None:
    guide = pb2.GuidedDecodingParams(
        guide_type=pb2.GuidedDecodingParams.GUIDE_TYPE_REGEX, guide=REGEX
    )
    greedy = pb2.SamplingConfig(temperature=0.0)
    request = _request(_chat(llm, "A code?"), guided_decoding=guide, sampling_config=greedy)
    guided = _complete(_generate(engine, request))
    assert re.fullmatch(REGEX, llm.decode(guided.output_token_ids))
    assert guided.finish_reason == "stop"
    ignored = _complete(_generate(unguided, request))
    assert not re.fullmatch(REGEX, llm.decode(ignored.output_token_ids))


def test_guides_the_tiny_engine_lacks_are_unimplemented_unless_dropped(
    engine: TrtllmGrpcEngine, unguided: TrtllmGrpcEngine, llm: TinyLlm
) -> None:
    ebnf = pb2.GuidedDecodingParams(
        guide_type=pb2.GuidedDecodingParams.GUIDE_TYPE_EBNF_GRAMMAR, guide='root ::= "a"'
    )
    request = _request(_chat(llm, "Hi"), max_tokens=2, ignore_eos=True, guided_decoding=ebnf)
    error = _refused(engine, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "EBNF_GRAMMAR" in str(error.details())
    assert _complete(_generate(unguided, request)).completion_tokens == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "Missing tokenized input"),
        ({"tokenized": pb2.TokenizedInput()}, "input_token_ids is empty"),
        ({"tokenized": pb2.TokenizedInput(input_token_ids=[1]), "max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_requests_are_invalid_argument(
    engine: TrtllmGrpcEngine, fields: dict[str, Any], message: str
) -> None:
    error = _refused(engine, _request(None, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(error.details())


def test_an_engine_fault_mid_stream_is_internal(engine: TrtllmGrpcEngine, llm: TinyLlm) -> None:
    request = _request(_chat(llm, "Hi [[fail:2]]"), streaming=True, ignore_eos=True)
    messages, error = asyncio.run(_collect(engine.address, request))
    assert [message.WhichOneof("response") for message in messages] == ["chunk", "chunk"]
    assert error is not None
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "injected fault after 2 tokens" in str(error.details())


async def _long_stream(stub: Any, llm: TinyLlm, request_id: str) -> Any:
    """A streamed generation that would run for half a minute, once it has sent a chunk."""
    prompt = _chat(llm, "Go on")
    request = _request(
        prompt, request_id=request_id, max_tokens=1500, streaming=True, ignore_eos=True
    )
    call = stub.Generate(request)
    assert (await call.read()).WhichOneof("response") == "chunk"
    return call


def test_abort_ends_a_running_generation_as_cancelled(
    engine: TrtllmGrpcEngine, llm: TinyLlm
) -> None:
    async def scenario() -> tuple[Any, list[Any], Any]:
        async with grpc.aio.insecure_channel(engine.address) as channel:
            stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
            call = await _long_stream(stub, llm, "abort-me")
            first = await stub.Abort(pb2.AbortRequest(request_id="abort-me"))
            rest = []
            while (message := await call.read()) != grpc.aio.EOF:
                rest.append(message)
            again = await stub.Abort(pb2.AbortRequest(request_id="abort-me"))
            return first, rest, again

    first, rest, again = asyncio.run(scenario())
    assert (first.success, first.message) == (True, "Request abort-me aborted")
    complete = _complete(rest)
    assert complete.finish_reason == "cancelled"
    assert 0 < complete.completion_tokens < 1500
    assert (again.success, again.message) == (False, "Request abort-me not found")


def test_a_cancelled_call_stops_generating(engine: TrtllmGrpcEngine, llm: TinyLlm) -> None:
    assert engine.pid is not None
    pid = engine.pid

    async def scenario() -> Any:
        async with grpc.aio.insecure_channel(engine.address) as channel:
            stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
            call = await _long_stream(stub, llm, "cancel-me")
            call.cancel()
            await asyncio.sleep(0.5)  # the server sees the cancellation and drops the request
            return await stub.Abort(pb2.AbortRequest(request_id="cancel-me"))

    assert asyncio.run(scenario()).success is False
    before = cpu_ticks(pid)
    time.sleep(1.0)
    # Generating keeps a core busy (about TICKS_PER_SECOND a second); an idle server is not.
    assert cpu_ticks(pid) - before < TICKS_PER_SECOND / 4


def test_health_and_discovery(engine: TrtllmGrpcEngine, llm: TinyLlm, tiny_model_dir: Path) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        async with grpc.aio.insecure_channel(engine.address) as channel:
            stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
            return (
                await stub.HealthCheck(pb2.HealthCheckRequest()),
                await stub.GetModelInfo(pb2.GetModelInfoRequest()),
                await stub.GetServerInfo(pb2.GetServerInfoRequest()),
            )

    health, model, server = asyncio.run(scenario())
    assert health.status == "OK"
    assert model.model_id == str(tiny_model_dir)
    assert model.vocab_size == llm.tokenizer.vocab_size
    assert (model.max_input_len, model.max_seq_len) == (1024, 2048)
    assert server.backend == "tensorrt-llm"


def test_embed_tokenizer_and_kv_events_are_unimplemented(engine: TrtllmGrpcEngine) -> None:
    async def codes() -> list[grpc.StatusCode]:
        found = []
        async with grpc.aio.insecure_channel(engine.address) as channel:
            stub = trtllm_service_pb2_grpc.TrtllmServiceStub(channel)
            attempts: list[Any] = [
                stub.Embed(pb2.EmbedRequest()),
                stub.GetTokenizer(common_pb2.GetTokenizerRequest()).read(),
                stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest()).read(),
            ]
            for attempt in attempts:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await attempt
                found.append(raised.value.code())
        return found

    assert asyncio.run(codes()) == [grpc.StatusCode.UNIMPLEMENTED] * 3
