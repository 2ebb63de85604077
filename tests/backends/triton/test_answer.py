"""What a client may see of an engine's error: one clean, bounded line."""

from __future__ import annotations

from backends.triton.answer import ERROR_SUMMARY_CHARS, error_summary

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
