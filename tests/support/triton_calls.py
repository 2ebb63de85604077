"""Calling the test Triton server's models directly, one gRPC stream per request, as the
engine tests do: typed input tensors in, decoded outputs and the final flag out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpc_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from tests.engines.triton_engine import TritonEngine

Inputs = dict[str, npt.NDArray[Any]]


@dataclass
class Reply:
    """One streamed response: its outputs (decoded strings or ints) and its final flag."""

    outputs: dict[str, Any]
    final: bool


def batched(**values: Any) -> Inputs:
    """Inputs for the ensemble and BLS: every tensor is ``[1, 1]`` (``[1, N]`` for lists)."""
    return {name: array(value, batched=True) for name, value in values.items()}


def array(value: Any, *, batched: bool, dtype: Any = None) -> npt.NDArray[Any]:
    """A tensor of one value or a list; the type follows the Python values unless given."""
    items = value if isinstance(value, list) else [value]
    if dtype is None:
        dtype = _dtype(items[0])
    converted = np.array(items, dtype=object if isinstance(items[0], str) else dtype)
    return converted.reshape(1, -1) if batched else converted


def _dtype(item: Any) -> Any:
    if isinstance(item, str):
        return object
    if isinstance(item, bool):
        return np.bool_
    return np.float32 if isinstance(item, float) else np.int32


def seed(value: int, *, batched: bool) -> npt.NDArray[Any]:
    return np.array([[value]] if batched else [value], dtype=np.uint64)


def _decode(array: npt.NDArray[Any] | None) -> Any:
    if array is None:
        return None
    item = array.reshape(-1)[0]
    return item.decode("utf-8") if isinstance(item, bytes) else int(item)


async def stream(
    url: str, model: str, inputs: Inputs, outputs: tuple[str, ...]
) -> tuple[list[Reply], InferenceServerException | None]:
    """Send one request on its own gRPC stream; the replies until it ends, and its error."""
    tensors = []
    for name, value in inputs.items():
        tensor = InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {
            "model_name": model,
            "inputs": tensors,
            "outputs": [InferRequestedOutput(name) for name in outputs],
        }

    replies: list[Reply] = []
    async with grpc_aio.InferenceServerClient(url) as client:
        async for result, error in client.stream_infer(requests()):
            if error is not None:
                return replies, error
            flag = result.get_response().parameters.get("triton_final_response")
            decoded = {name: _decode(result.as_numpy(name)) for name in outputs}
            replies.append(Reply(decoded, bool(flag and flag.bool_param)))
    return replies, None


def call(
    engine: TritonEngine, model: str, inputs: Inputs, outputs: tuple[str, ...] = ("text_output",)
) -> list[Reply]:
    """The replies to one request; its error raised."""
    replies, error = asyncio.run(stream(engine.grpc_url, model, inputs, outputs))
    if error is not None:
        raise error
    return replies


def texts(replies: list[Reply]) -> list[str]:
    return [reply.outputs["text_output"] for reply in replies]


def only_text(replies: list[Reply]) -> str:
    assert len(replies) == 1
    text: str = replies[0].outputs["text_output"]
    return text


def model_config(engine: TritonEngine, model: str) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        async with grpc_aio.InferenceServerClient(engine.grpc_url) as client:
            answer: dict[str, Any] = await client.get_model_config(model, as_json=True)
            return answer

    config: dict[str, Any] = asyncio.run(fetch())["config"]
    return config
