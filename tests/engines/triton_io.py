"""What every Triton test model shares: reading request tensors, shaping responses, declaring
tensors, and running ``TinyLlm``'s steps off PyTriton's event loop.

``triton_models`` (the legacy ``ensemble`` and ``tensorrt_llm_bls``) and ``triton_llmapi`` (the
LLM-API ``tensorrt_llm``) both build on it, so neither imports the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pytriton.model_config import Tensor
from pytriton.proxy.types import Request

from tests.engines.tiny_llm import InvalidRequestError, Step

MAX_SEQ_LEN = 2048

Response = dict[str, npt.NDArray[Any]]


async def steps_async(steps: Iterator[Step]) -> AsyncIterator[Step]:
    """Run each step in a worker thread so PyTriton's event loop serves other requests."""
    while (step := await asyncio.to_thread(next, steps, None)) is not None:
        yield step


def scalar(request: Request, name: str) -> Any:
    """The single value of an optional input, or ``None`` when the client left it out."""
    array = request.data.get(name)
    if array is None:
        return None
    if array.size != 1:
        raise InvalidRequestError(f"Expected a scalar tensor for tensor {name}")
    return array.reshape(-1)[0].item()


def strings(request: Request, name: str) -> list[str]:
    """The non-empty strings of an optional string input, in order."""
    array = request.data.get(name)
    if array is None:
        return []
    return [text(value) for value in array.reshape(-1) if text(value)]


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def single(requests: list[Request]) -> Request:
    # Without a dynamic batcher Triton hands over one request per call; say so if it ever doesn't.
    if len(requests) != 1:
        raise InvalidRequestError(f"expected one request per call, got {len(requests)}")
    return requests[0]


def check_length(prompt_ids: Sequence[int], max_tokens: int) -> None:
    if max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be at least 1, got {max_tokens}")
    if len(prompt_ids) + max_tokens > MAX_SEQ_LEN:
        raise InvalidRequestError(
            f"Prompt length + number of requested output tokens ({len(prompt_ids)} + "
            f"{max_tokens}) exceeds maximum sequence length ({MAX_SEQ_LEN})"
        )


def bytes_out(value: str, *, batched: bool) -> npt.NDArray[Any]:
    shape = (1, 1) if batched else (1,)
    return np.array([value.encode("utf-8")], dtype=object).reshape(shape)


def tensor(
    name: str, dtype: Any, shape: tuple[int, ...] = (1,), *, optional: bool = True
) -> Tensor:
    return Tensor(name=name, dtype=dtype, shape=shape, optional=optional)
