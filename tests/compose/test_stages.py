"""Each stage's env file passes `gateway check-config` as the gateway container would see it.

The container is rebuilt from the compose files: its environment is the image's ENV under the
service's `environment`, and its working directory is the mounted env/ folder, where `.env`
points at the stage's file. The mounts are stood in for by temporary folders: the model volume
with a real tokenizer, the API-key secret, the env folder, and the task files the image copies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import Settings
from tests.compose.stack import (
    COMPOSE,
    COMPOSE_FILES,
    REPO,
    STAGES,
    TEST_ENV,
    image_env,
    load_stack,
    read_env_file,
)

HF_DIR = "/models/hf/Phi-3-mini-4k-instruct"
# What each stage changes from the one before it (the runbook's "exact env change").
CHANGES = {
    "shadow": {"GATEWAY_BACKENDS", "GATEWAY_SHADOW", "GATEWAY_SHADOW_RATE", "GATEWAY_NOISE_RATE"},
    "canary": {"GATEWAY_CANARY", "GATEWAY_CANARY_PERCENT", "GATEWAY_FALLBACK"},
    "cutover": {"GATEWAY_PRIMARY", "GATEWAY_SHADOW", "GATEWAY_SHADOW_RATE", "GATEWAY_CANARY",
                "GATEWAY_CANARY_PERCENT"},
    "rollback": {"GATEWAY_PRIMARY", "GATEWAY_SHADOW", "GATEWAY_FALLBACK"},
}  # fmt: skip
ROLES = {  # stage: (primary, shadow, canary, fallback)
    "stage1": ("vllm", None, None, None),
    "shadow": ("vllm", "trt", None, None),
    "canary": ("vllm", "trt", "trt", "vllm"),
    "cutover": ("trt", "vllm", None, "vllm"),
    "rollback": ("vllm", "trt", None, None),
}


def gateway_service() -> dict[str, Any]:
    service: dict[str, Any] = load_stack([COMPOSE_FILES[0]], TEST_ENV)["services"]["gateway"]
    return service


def container_env() -> dict[str, str]:
    """The container's environment: the service's `environment` wins over the image's ENV."""
    return {**image_env(), **{k: str(v) for k, v in gateway_service()["environment"].items()}}


def stage_values(stage: str) -> dict[str, str]:
    return read_env_file(COMPOSE / "env" / f"{stage}.env")


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    """Container path -> the temporary folder or file standing in for it."""
    root = tmp_path_factory.mktemp("container")
    tokenizer = root / HF_DIR.removeprefix("/")
    tokenizer.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, tokenizer / name)
    keys = root / "run/secrets/gateway_api_keys"
    keys.parent.mkdir(parents=True)
    keys.write_text("sha256:" + "ab" * 32 + "\n", encoding="utf-8")
    for task in (REPO / "prompts").glob("*/task.toml"):  # what the image copies, no more
        target = root / "app/prompts" / task.parent.name / "task.toml"
        target.parent.mkdir(parents=True)
        shutil.copy(task, target)
    found = {"/models": root / "models", "/run/secrets/gateway_api_keys": keys,
             "/app/prompts": root / "app/prompts", "/app/env": root / "app/env"}  # fmt: skip
    found["/app/env"].mkdir(parents=True)
    for stage in STAGES:  # the env folder, with the container paths in its files stood in for
        for value in stage_values(stage).values():
            in_container(json.loads(value) if value[:1] in "[{" else value, found)
        text = (COMPOSE / "env" / f"{stage}.env").read_text(encoding="utf-8")
        for inside in sorted(found, key=len, reverse=True):
            text = re.sub(rf"(?<=[\"'=]){re.escape(inside)}(?=/)", str(found[inside]), text)
        (found["/app/env"] / f"{stage}.env").write_text(text, encoding="utf-8")
    return found


def select(stage: str, mounts: dict[str, Path]) -> Path:
    """`ln -sfn <stage>.env env/.env`, as the runbook switches stages; returns the folder."""
    folder = mounts["/app/env"]
    (folder / ".env").unlink(missing_ok=True)
    (folder / ".env").symlink_to(f"{stage}.env")
    return folder


def in_container(value: Any, mounts: dict[str, Path]) -> Any:
    """Absolute paths rewritten to their stand-ins, inside JSON values too."""
    if isinstance(value, dict):
        return {key: in_container(item, mounts) for key, item in value.items()}
    if isinstance(value, list):
        return [in_container(item, mounts) for item in value]
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    for target in sorted(mounts, key=len, reverse=True):
        if value == target or value.startswith(target + "/"):
            return str(mounts[target]) + value.removeprefix(target)
    raise AssertionError(f"{value} is not in any of the gateway container's mounts")


def test_the_stand_ins_cover_exactly_the_gateways_mounts() -> None:
    service = gateway_service()
    targets = {volume.split(":")[1] for volume in service["volumes"]}
    targets |= {f"/run/secrets/{secret}" for secret in service["secrets"]}
    targets.add("/app/prompts")  # the image's COPY prompts/
    assert targets == {"/models", "/run/secrets/gateway_api_keys", "/app/prompts", "/app/env"}
    assert service["working_dir"] == "/app/env"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_passes_check_config(stage: str, mounts: dict[str, Path]) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env = {key: in_container(value, mounts) for key, value in container_env().items()}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"], env={**base, **env},
        cwd=select(stage, mounts), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    roles = ("primary", "shadow", "canary", "fallback")
    assert tuple(effective[role] for role in roles) == ROLES[stage]
    assert effective["tasks_enabled"] is True
    assert effective["records_text"] == "hashes"  # children's text is not stored
    assert effective["records_url"].startswith("postgresql://pika:")
    if ROLES[stage][1] is not None:
        assert 0 < effective["shadow_rate"] <= 1
        assert 0 < effective["noise_rate"] <= 1
    if ROLES[stage][2] is not None:
        assert 0 < effective["canary_percent"] < 100


@pytest.mark.parametrize("stage", STAGES)
def test_every_variable_is_a_gateway_setting(stage: str) -> None:
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    names = {name for name in container_env() if name.startswith("GATEWAY_")}
    assert names | set(stage_values(stage)) <= known


@pytest.mark.parametrize("stage", list(CHANGES))
def test_each_stage_changes_only_what_the_runbook_says(stage: str) -> None:
    before, after = stage_values(STAGES[STAGES.index(stage) - 1]), stage_values(stage)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == CHANGES[stage]
    runbook = (COMPOSE / "README.md").read_text(encoding="utf-8")
    section = runbook.split(f"<!-- stage:{stage} -->")[1].split("<!-- stage:")[0]
    for name in CHANGES[stage]:
        assert name in section, f"the runbook's {stage} section does not mention {name}"


def test_backends_point_at_the_compose_services_and_the_built_model() -> None:
    stack = load_stack([COMPOSE_FILES[0]], TEST_ENV)["services"]
    backends = json.loads(stage_values("shadow")["GATEWAY_BACKENDS"])
    assert backends["vllm"]["url"] == "http://vllm:" + port_of(stack["vllm"], "--port")
    assert backends["trt"]["url"] == "triton:" + port_of(stack["triton"], "--grpc-port")
    assert backends["trt"]["model"] == "tensorrt_llm_bls"  # what build_engine.sh fills
    common = (COMPOSE / "trtllm/common.sh").read_text(encoding="utf-8")
    model = re.search(r"HF_MODEL=\$\{HF_MODEL:-([^}]+)\}", common)
    assert model is not None
    assert backends["trt"]["tokenizer_dir"] == "/models/hf/" + model.group(1).split("/")[-1]
    assert backends["trt"]["context_length"] == 2048  # vLLM's --max-model-len, the engine's too
    for stage in STAGES[1:]:
        same = json.loads(stage_values(stage)["GATEWAY_BACKENDS"])
        assert same == backends, stage


def port_of(service: dict[str, Any], flag: str) -> str:
    (value,) = [str(a).split("=", 1)[1] for a in service["command"] if a.startswith(flag + "=")]
    return value
