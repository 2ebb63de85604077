"""Chat templates render exactly as vLLM (HF transformers) renders them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from backends.chat_template import ChatTemplate
from backends.errors import InvalidRequest

CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "Bạn là Pika."},
    {"role": "user", "content": "Con làm đúng rồi!"},
    {"role": "assistant", "content": "Giỏi quá!"},
    {"role": "user", "content": [{"type": "text", "text": "Thật"}, {"type": "text", "text": "ạ?"}]},
]


def test_tokenizer_dir_template_equals_transformers(tiny_model_dir: Path) -> None:
    reference = AutoTokenizer.from_pretrained(tiny_model_dir)
    flat = [{**m, "content": "Thật\nạ?"} if isinstance(m["content"], list) else m for m in CHAT]
    expected = reference.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
    assert ChatTemplate.from_tokenizer_dir(tiny_model_dir).render(CHAT) == expected


def test_qwen3_dir_template_equals_transformers(tiny_qwen3_dir: Path) -> None:
    reference = AutoTokenizer.from_pretrained(tiny_qwen3_dir)
    flat = [{**m, "content": "Thật\nạ?"} if isinstance(m["content"], list) else m for m in CHAT]
    expected = reference.apply_chat_template(flat, tokenize=False, add_generation_prompt=True)
    template = ChatTemplate.from_tokenizer_dir(tiny_qwen3_dir)
    assert template.render(CHAT) == expected
    assert template.end_token == "<|im_end|>"


def test_builtin_phi3_matches_the_model_card_shape() -> None:
    rendered = ChatTemplate.builtin("phi3").render(CHAT[:2])
    assert (
        rendered
        == "<|system|>\nBạn là Pika.<|end|>\n<|user|>\nCon làm đúng rồi!<|end|>\n<|assistant|>\n"
    )


def test_builtin_chatml() -> None:
    rendered = ChatTemplate.builtin("chatml").render(CHAT[:2])
    assert rendered.endswith(
        "<|im_start|>user\nCon làm đúng rồi!<|im_end|>\n<|im_start|>assistant\n"
    )
    assert ChatTemplate.builtin("chatml").end_token == "<|im_end|>"


def test_tokenizer_dir_end_token_is_phi3_end(tiny_model_dir: Path) -> None:
    assert ChatTemplate.from_tokenizer_dir(tiny_model_dir).end_token == "<|end|>"


def test_leading_bos_is_left_to_the_engine() -> None:
    template = ChatTemplate("{{ bos_token }}{{ messages[0]['content'] }}", {"bos_token": "<s>"}, "")
    assert template.render([{"role": "user", "content": "hi"}]) == "hi"


def test_non_text_parts_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        ChatTemplate.builtin("phi3").render(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        )


def test_template_errors_are_400() -> None:
    template = ChatTemplate("{{ raise_exception('roles must alternate') }}", {}, "")
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        template.render([{"role": "user", "content": "x"}])
