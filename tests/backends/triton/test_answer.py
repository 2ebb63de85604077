"""Reading a model's responses: what a client may see of an engine's error (one clean, bounded
line) and the LLM-API model's string finish reasons."""

from __future__ import annotations

from tritonclient.grpc import InferResult, service_pb2

from backends.triton.answer import ERROR_SUMMARY_CHARS, error_summary, piece_of

PYTRITON = """Traceback (most recent call last):
  File "/site-packages/pytriton/proxy/inference.py", line 393, in _handle_requests
    async for responses in self._model_callable(requests):
  File "/models/model.py", line 152, in steps
    raise InjectedFaultError(
tests.engines.tiny_llm.InjectedFaultError: injected fault after 3 tokens of '<|user|>
Bé Lan lớp 2A<|end|>'
"""
CHAINED = """Traceback (most recent call last):
  File "a.py", line 1, in f
KeyError: 'x'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "b.py", line 2, in g
    raise ValueError("bad input")
ValueError: bad input
"""
CPP = """[TensorRT-LLM][ERROR] Assertion failed: input length exceeds max_seq_len (/src/a.cpp:12)
1       0x7f3c4a2b1c3d tensorrt_llm::common::throwRuntimeError(char const*, int)
2       0x7f3c4a2b1c3e tensorrt_llm::executor::Executor::enqueueRequest
"""


def test_a_python_traceback_becomes_its_exception_line() -> None:
    summary = error_summary(PYTRITON)
    assert summary == "InjectedFaultError: injected fault after 3 tokens of '<|user|>"


def test_a_chained_traceback_becomes_the_last_exception() -> None:
    assert error_summary(CHAINED) == "ValueError: bad input"


def test_a_cpp_error_loses_its_stack() -> None:
    assert error_summary(CPP) == (
        "[TensorRT-LLM][ERROR] Assertion failed: input length exceeds max_seq_len (/src/a.cpp:12)"
    )


def test_a_long_message_is_cut() -> None:
    summary = error_summary("out of memory while serving " + "Bé Lan " * 500)
    assert len(summary) <= ERROR_SUMMARY_CHARS
    assert summary.endswith("…")


def test_control_characters_and_empty_messages() -> None:
    assert error_summary("bad\x1b[31m\tthing\r\nsecond line") == "bad [31m thing"
    assert error_summary("") == "no detail given"
    assert error_summary("Traceback (most recent call last):\n  File 'x'\n") == "no detail given"


# What the real LLM-API model's error reads (section C); PyTriton's stand-in adds a traceback.
LLMAPI_ERROR = "Error generating request: Prompt length (5000) exceeds max_seq_len (2048)"
LLMAPI_TRACEBACK = f"""Traceback (most recent call last):
  File "/work/tests/engines/triton_llmapi.py", line 100, in __call__
    raise GenerationError(f"Error generating request: {{exc}}") from None
tests.engines.triton_llmapi.GenerationError: {LLMAPI_ERROR}
"""


def test_the_llmapi_models_error_keeps_its_wording() -> None:
    assert error_summary(LLMAPI_ERROR) == LLMAPI_ERROR
    assert error_summary(LLMAPI_TRACEBACK) == f"GenerationError: {LLMAPI_ERROR}"


def result(**outputs: str) -> InferResult:
    """A response carrying string outputs, as Triton's gRPC frontend sends them."""
    response = service_pb2.ModelInferResponse()
    for name, value in outputs.items():
        tensor = response.outputs.add(name=name, datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(value.encode())
    return InferResult(response)


def test_str_none_is_no_finish_reason_yet() -> None:
    """The LLM-API model sends `str()` of the LLM API's reason: "None" until it has one."""
    running = piece_of(result(text_output="Xin", finish_reason="None"), final=False)
    assert (running.text, running.finish_reason) == ("Xin", None)
    done = piece_of(result(text_output="Xin chào", finish_reason="length"), final=True)
    assert done.finish_reason == "length"
    assert piece_of(result(text_output="Xin"), final=True).finish_reason is None  # not asked
