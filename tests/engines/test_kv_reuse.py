"""The Triton test engine's KV block reuse: time saved, never an answer changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.engines.kv_reuse import BLOCK, BlockReuse, reusable_length
from tests.engines.tiny_llm import TinyLlm


@pytest.fixture(scope="module")
def llm(random_model_dir: Path) -> TinyLlm:
    return TinyLlm(random_model_dir)


def prompt(llm: TinyLlm, text: str) -> list[int]:
    return llm.encode(text, special=True)


def test_reusable_length_keeps_a_token_to_compute() -> None:
    assert [reusable_length(range(n)) for n in (1, 64, 65, 128, 129, 200)] == [
        0,
        0,
        64,
        64,
        128,
        192,
    ]


def test_reused_blocks_give_the_same_logits_bit_for_bit(
    llm: TinyLlm, random_model_dir: Path
) -> None:
    shared = "Bạn gắn nhãn cho avatar của Pika, gia sư AI của trẻ tiểu học Việt Nam. " * 6
    first, second = prompt(llm, shared + "Trẻ: 12 ạ"), prompt(llm, shared + "Trẻ: chán quá")
    assert reusable_length(second) >= 2 * BLOCK
    llm._prefill(first)  # keeps the blocks the second prompt starts with
    warm, _ = llm._prefill(second)
    cold, _ = TinyLlm(random_model_dir)._prefill(second)
    assert torch.equal(warm, cold)


def test_lookup_finds_the_longest_shared_whole_blocks(llm: TinyLlm) -> None:
    reuse = BlockReuse()
    ids = list(range(10, 10 + 3 * BLOCK + 5))
    _, cache = llm._prefill(ids)  # a cache of the whole prompt; keep() uses its whole blocks
    reuse.keep(ids, cache)
    assert reuse.lookup(ids)[0] == 3 * BLOCK
    changed = [*ids[: 2 * BLOCK + 7], 1, *ids[2 * BLOCK + 8 :]]
    start, found = reuse.lookup(changed)
    assert start == 2 * BLOCK
    assert found.get_seq_length() == 2 * BLOCK
    assert reuse.lookup([1, *ids[1:]]) == (0, None)
    assert reuse.lookup(ids[: BLOCK + 1])[0] == BLOCK  # never the prompt's last token
