"""KV-cache reuse by whole blocks of the prompt, as TensorRT-LLM's engines reuse KV blocks.

A prompt is computed in blocks of ``BLOCK`` tokens, aligned from its first token. The keys and
values of a prompt's whole blocks are kept; a later prompt that starts with the same tokens
starts from them and computes only the rest. Blocks are always computed the same way, from the
same cache before them, so an answer is the same bit for bit whether its blocks were reused or
not: reuse only saves time (the tagger's 1,500 shared tokens), it never changes an answer.

Example::

    reuse = BlockReuse()
    start, cache = reuse.lookup(prompt_ids)     # tokens already computed, their cache or None
    ...                                         # compute prompt_ids[start:] block by block
    reuse.keep(prompt_ids, cache)               # once the cache holds reusable_length(...) tokens
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from transformers import DynamicCache

BLOCK = 64  # tokens per KV block (TensorRT-LLM's `tokens_per_block` default)
_KEPT = 8  # prompts whose blocks are kept, least recently used dropped first


def reusable_length(prompt: Sequence[int]) -> int:
    """Tokens in the prompt's whole blocks, leaving at least one token to compute."""
    return (len(prompt) - 1) // BLOCK * BLOCK


class BlockReuse:
    """The kept blocks of the last few prompts. Not thread-safe: the caller holds a lock."""

    def __init__(self) -> None:
        self._kept: OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = OrderedDict()

    def lookup(self, prompt: Sequence[int]) -> tuple[int, Any]:
        """How many of the prompt's first tokens are already computed, and a new cache holding
        them (``None`` for none)."""
        best, found = 0, None
        limit = reusable_length(prompt)
        for ids, layers in self._kept.items():
            shared = _common_length(ids, prompt, limit) // BLOCK * BLOCK
            if shared > best:
                best, found = shared, (ids, layers)
        if found is None:
            return 0, None
        self._kept.move_to_end(found[0])
        cache = DynamicCache()
        for index, (keys, values) in enumerate(found[1]):
            cache.update(keys[..., :best, :], values[..., :best, :], index)
        return best, cache

    def keep(self, prompt: Sequence[int], cache: Any) -> None:
        """Keeps the cache's keys and values, which hold at least ``reusable_length(prompt)``
        tokens. The cache's tensors are never written in place, so no copy is needed."""
        ids = tuple(prompt[: reusable_length(prompt)])
        if not ids or ids in self._kept:
            return
        self._kept[ids] = [(layer.keys, layer.values) for layer in cache.layers]
        while len(self._kept) > _KEPT:
            self._kept.popitem(last=False)


def _common_length(first: Sequence[int], second: Sequence[int], limit: int) -> int:
    length = 0
    for a, b in zip(first[:limit], second[:limit], strict=False):
        if a != b:
            break
        length += 1
    return length
