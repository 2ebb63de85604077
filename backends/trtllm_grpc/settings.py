"""Settings of a `trtllm-grpc` backend: pydantic only, so a configuration validates without the
`trtllm-grpc` extra installed (the adapter, `backends.trtllm_grpc.adapter`, needs it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from backends.settings import BackendSettingsBase


class TrtllmGrpcSettings(BackendSettingsBase):
    """`trtllm-serve MODEL --grpc`: the gateway tokenises with the model's own files."""

    kind: Literal["trtllm-grpc"] = "trtllm-grpc"
    url: str = Field(default="127.0.0.1:50051", description="The gRPC address, host:port.")
    model_dir: Path | None = Field(
        default=None, description="The model's folder: tokenizer, chat template, generation config."
    )

    @model_validator(mode="after")
    def _tokenizer_is_there(self) -> TrtllmGrpcSettings:
        if self.model_dir is None:
            raise ValueError("model_dir is required: the gateway sends this engine token ids")
        if not (self.model_dir / "tokenizer.json").is_file():
            raise ValueError(f"{self.model_dir} has no tokenizer.json")
        return self
