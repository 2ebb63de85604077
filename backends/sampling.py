"""The sampling parameters an engine runs a request with: the request's value, else the model's
`generation_config.json` default as vLLM applies it, else the engine's own default. Pure.

vLLM (0.32, `ChatCompletionRequest.to_sampling_params`) resolves each of `DEFAULTED` in that
order, taking from `generation_config.json` the values present in the file (its
`ModelConfig.get_diff_sampling_param`, over transformers 5, whose `GenerationConfig` leaves
every sampling field unset). TensorRT-LLM's engines default to their own values unless started
with `--generation-config auto`; the gateway sends them the resolved values instead, so both
legs of a shadowed request sample alike (backends/TENSORRT_LLM.md, A.2).

Example::

    defaults = model_defaults(Path("/models/qwen3"))  # {"temperature": 0.6, "top_k": 20, ...}
    resolve({"top_p": 0.9}, defaults, OPENAI_DEFAULTS).temperature  # 0.6
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.values import value_class

# The fields a model's generation_config.json can default, as vLLM takes them.
DEFAULTED = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
)
# The OpenAI defaults vLLM falls back to (`_DEFAULT_SAMPLING_PARAMS`); trtllm-serve's
# `to_sampling_params` has the same (backends/TENSORRT_LLM.md, A.2).
OPENAI_DEFAULTS: Mapping[str, float] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
GENERATION_CONFIG = "generation_config.json"


@value_class
class Sampling:
    """What steers the sampling of one answer. `top_k` 0 is off (the whole vocabulary);
    `temperature` 0 is greedy. `max_tokens` None: until the context or an end token."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    max_tokens: int | None = None
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    def differences(self, other: Sampling) -> list[str]:
        """The fields that sample differently, as `name: mine vs other`; none when both are
        greedy, where temperature, top_p, top_k and seed change nothing."""
        names = [*DEFAULTED, "max_tokens", "seed"]
        if self.greedy and other.greedy:
            names = [n for n in names if n not in ("temperature", "top_p", "top_k", "seed")]
        found = []
        for name in names:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs and not _close(mine, theirs):
                found.append(f"{name}: {mine} vs {theirs}")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (*DEFAULTED, "max_tokens", "seed")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sampling:
        return cls(**{name: data[name] for name in (*DEFAULTED, "max_tokens", "seed")})


def model_defaults(path: Path | None) -> dict[str, float]:
    """The sampling defaults in a model's `generation_config.json` (a file, or the model folder
    holding one); {} when there is none. Only values present in the file count, as in vLLM."""
    if path is None:
        return {}
    file = path / GENERATION_CONFIG if path.is_dir() else path
    if not file.is_file():
        return {}
    config = json.loads(file.read_text(encoding="utf-8"))
    return {
        name: config[name]
        for name in DEFAULTED
        if isinstance(config.get(name), int | float) and not isinstance(config[name], bool)
    }


def resolve(
    request: Mapping[str, Any], defaults: Mapping[str, float], engine: Mapping[str, float]
) -> Sampling:
    """Each field from the request, else the model's defaults, else the engine's."""
    values: dict[str, Any] = {}
    for name in DEFAULTED:
        value = request.get(name)
        if value is None:
            value = defaults.get(name, engine[name])
        values[name] = value
    values["top_k"] = max(int(values["top_k"]), 0)  # vLLM and TensorRT-LLM read -1 as off too
    max_tokens = request.get("max_completion_tokens") or request.get("max_tokens")
    seed = request.get("seed")
    return Sampling(
        **values,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        seed=seed if isinstance(seed, int) else None,
    )


def _close(first: object, second: object) -> bool:
    """Equal as the engines' float32 sees them (0.95 sent as JSON and read back)."""
    if isinstance(first, int | float) and isinstance(second, int | float):
        return math.isclose(first, second, rel_tol=1e-6, abs_tol=1e-9)
    return False
