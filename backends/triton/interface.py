"""What a TensorRT-LLM model on Triton accepts, read from its config, and tensors built for it.

TensorRT-LLM's models differ by version and kind: `seed` or `random_seed`, `min_tokens` or
`min_length`, `stream` or `streaming`, the LLM-API model's `sampling_param_*` names, a batch
dimension or none. Discovery maps each logical parameter to the name that exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from backends.triton.settings import StreamText

# Logical parameter -> input names, newest first (ensemble/BLS, then the LLM-API model).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "prompt": ("text_input",),
    "max_tokens": ("max_tokens", "sampling_param_max_tokens"),
    "stream": ("stream", "streaming"),
    "temperature": ("temperature", "sampling_param_temperature"),
    "top_p": ("top_p", "sampling_param_top_p"),
    "top_k": ("top_k", "sampling_param_top_k"),
    "seed": ("seed", "random_seed", "sampling_param_seed"),
    "min_tokens": ("min_tokens", "min_length"),
    "repetition_penalty": ("repetition_penalty",),
    "presence_penalty": ("presence_penalty", "sampling_param_presence_penalty"),
    "frequency_penalty": ("frequency_penalty", "sampling_param_frequency_penalty"),
    "stop": ("stop_words", "sampling_param_stop"),
    "end_id": ("end_id",),
    "exclude_input": ("exclude_input_in_output", "sampling_param_exclude_input_from_output"),
    "guide_type": ("guided_decoding_guide_type",),
    "guide": ("guided_decoding_guide",),
    "return_input_tokens": ("return_num_input_tokens",),
    "return_output_tokens": ("return_num_output_tokens",),
    "return_finish_reason": ("return_finish_reason",),
}

DTYPES: dict[str, Any] = {
    "TYPE_STRING": np.object_,
    "TYPE_BOOL": np.bool_,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_UINT64": np.uint64,
    "TYPE_FP32": np.float32,
    "TYPE_FP16": np.float16,
}
TRITON_NAMES = {
    "TYPE_STRING": "BYTES", "TYPE_BOOL": "BOOL", "TYPE_INT32": "INT32", "TYPE_INT64": "INT64",
    "TYPE_UINT64": "UINT64", "TYPE_FP32": "FP32", "TYPE_FP16": "FP16",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ModelInterface:
    """A Triton model's inputs by logical name, its batch convention and streaming semantics."""

    model: str
    names: Mapping[str, str]  # logical -> actual input name
    dtypes: Mapping[str, str]  # actual input name -> TYPE_*
    required: frozenset[str]  # actual names the model requires
    outputs: frozenset[str]
    batched: bool  # max_batch_size > 0: every tensor gets a leading batch dim of 1
    decoupled: bool
    cumulative: bool  # streamed text_output holds all text so far, not the new token's
    llm_api: bool = False  # the LLM-API model: it always tokenizes with special tokens

    @classmethod
    def from_config(cls, config: Mapping[str, Any], stream_text: StreamText) -> ModelInterface:
        inputs = {entry["name"]: entry for entry in config.get("input", [])}
        names = {}
        for logical, candidates in CANDIDATES.items():
            found = next((name for name in candidates if name in inputs), None)
            if found is not None:
                names[logical] = found
        if "prompt" not in names or "max_tokens" not in names:
            raise ValueError(
                f"Triton model '{config.get('name')}' has no text_input/max_tokens inputs: "
                "not a TensorRT-LLM text model"
            )
        llm_api = names["max_tokens"].startswith("sampling_param_")
        accumulate = _parameter(config, "accumulate_tokens").lower() in ("true", "1")
        cumulative = stream_text == "cumulative" or (
            stream_text == "auto" and (llm_api or accumulate)
        )
        policy = config.get("model_transaction_policy", {})
        return cls(
            model=str(config.get("name", "")),
            names=names,
            dtypes={name: entry.get("data_type", "TYPE_STRING") for name, entry in inputs.items()},
            required=frozenset(n for n, e in inputs.items() if not e.get("optional", False)),
            outputs=frozenset(entry["name"] for entry in config.get("output", [])),
            batched=int(config.get("max_batch_size", 0)) > 0,
            decoupled=bool(policy.get("decoupled", False)),
            cumulative=cumulative,
            llm_api=llm_api,
        )

    def has(self, logical: str) -> bool:
        return logical in self.names

    def tensor(self, logical: str, value: Any) -> tuple[str, str, np.ndarray[Any, Any]]:
        """(name, Triton datatype, array) for one input, shaped by the batch convention."""
        name = self.names[logical]
        type_name = self.dtypes[name]
        values = value if isinstance(value, list | tuple) else [value]
        if type_name == "TYPE_STRING":
            array = np.array([_utf8(item) for item in values], dtype=np.object_)
        else:
            array = np.array(values, dtype=DTYPES[type_name])
        if self.batched:
            array = array.reshape(1, -1)
        return name, TRITON_NAMES[type_name], array


def _parameter(config: Mapping[str, Any], key: str) -> str:
    entry = config.get("parameters", {}).get(key, {})
    return str(entry.get("string_value", "")) if isinstance(entry, dict) else ""


def _utf8(item: Any) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")
