"""Prompts for the test hooks every tiny engine honours (`tiny_llm`), without importing it."""

from __future__ import annotations

# Plain ASCII words, one token and one streamed event each, longer than any fault point used.
_ANSWER = "Well done, that is right: five and seven make twelve, so you earned a star today."


def fails_after(tokens: int) -> str:
    """A prompt whose answer fails after `tokens` tokens, every time. The answer is forced:
    sampled freely, the model ended before a fault after 2 tokens about once in 150 calls."""
    return f"[[force:{_ANSWER}]] [[fail:{tokens}]]"
