"""The compose files, read as Docker Compose reads them, against the Compose specification.

Two independent parsers: the specification's JSON schema (what Docker Compose validates
against), and the `compose_spec` Rust parser, which also checks durations, sizes and ports.
Then the references between files and services, which neither parser checks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compose.stack import (
    COMPOSE,
    COMPOSE_FILES,
    STAGES,
    TEST_ENV,
    InterpolationError,
    load_stack,
    schema_errors,
)

BOTH = list(COMPOSE_FILES)
ENGINES = ("vllm", "triton", "trtllm-build")
JOBS = ("trtllm-build", "trtllm-llmapi")  # one-shot: no health check, no restart
SEED_FLAGS = (
    "--port=8000",
    "--quantization=awq",
    "--max-model-len=2048",
    "--enable-prefix-caching",
)


def services(files: list[str], **env: str) -> dict[str, Any]:
    stack: dict[str, Any] = load_stack(files, {**TEST_ENV, **env})["services"]
    return stack


@pytest.mark.parametrize("files", [[COMPOSE_FILES[0]], [COMPOSE_FILES[1]], BOTH], ids=str)
def test_every_file_is_a_valid_compose_model(files: list[str]) -> None:
    assert schema_errors(load_stack(files, TEST_ENV)) == []


def test_the_compose_spec_parser_accepts_the_merged_models() -> None:
    try:
        from compose_spec import PyCompose
    except ImportError:  # pragma: no cover - the message is the point
        pytest.fail("the compose-spec package is missing: pip install 'compose-spec==0.2.1'")
    for files in ([COMPOSE_FILES[0]], BOTH):
        parsed = PyCompose.from_yaml(yaml.safe_dump(load_stack(files, TEST_ENV)))
        assert set(parsed.service_names()) == set(services(files))
    broken = load_stack(BOTH, TEST_ENV)
    broken["services"]["vllm"]["healthcheck"]["start_period"] = "15 minutes"  # the schema allows it
    assert schema_errors(broken) == []
    with pytest.raises(ValueError, match="start_period"):
        PyCompose.from_yaml(yaml.safe_dump(broken))


def test_the_checks_above_do_catch_mistakes() -> None:
    model = load_stack([COMPOSE_FILES[0]], TEST_ENV)
    model["services"]["vllm"]["helthcheck"] = model["services"]["vllm"].pop("healthcheck")
    assert schema_errors(model) != []


@pytest.mark.parametrize("secret", sorted(TEST_ENV))
def test_secrets_are_required_not_defaulted(secret: str) -> None:
    env = {name: value for name, value in TEST_ENV.items() if name != secret}
    with pytest.raises(InterpolationError, match=secret):
        load_stack([COMPOSE_FILES[0]], env)


def test_depends_on_names_services_and_waits_for_health() -> None:
    stack = services(BOTH)
    for name, service in stack.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in stack, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in stack[dependency], f"{name} waits on {dependency}"
            assert rule["condition"] == "service_healthy"
    gateway = stack["gateway"]["depends_on"]
    assert set(gateway) == {"vllm", "triton", "postgres"}
    assert gateway["triton"]["required"] is False  # absent before the engine exists


def test_long_running_services_have_health_checks_and_restart() -> None:
    for name, service in services(BOTH).items():
        if name in JOBS:
            assert service.get("profiles") == ["build"]
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
    stack = services(BOTH)
    assert "/health" in stack["vllm"]["healthcheck"]["test"][-1]
    assert "/v2/health/ready" in stack["triton"]["healthcheck"]["test"][-1]
    assert "/ready" in stack["gateway"]["healthcheck"]["test"][-1]


def test_engines_reserve_a_gpu() -> None:
    for files in ([COMPOSE_FILES[0]], BOTH):
        for name in ENGINES:
            devices = services(files)[name]["deploy"]["resources"]["reservations"]["devices"]
            assert len(devices) == 1, (files, name)
            assert devices[0]["driver"] == "nvidia"
            assert devices[0]["capabilities"] == ["gpu"]
            assert len(devices[0]["device_ids"]) == 1


def gpu(service: dict[str, Any]) -> str:
    device_ids: list[str] = service["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"
    ]
    return device_ids[0]


def flag(service: dict[str, Any], name: str) -> str:
    values = [str(arg).split("=", 1)[1] for arg in service["command"] if arg.startswith(name + "=")]
    assert len(values) == 1, name
    return values[0]


def test_two_gpus_by_default_one_shared_gpu_with_the_override() -> None:
    two, one = services([COMPOSE_FILES[0]]), services(BOTH)
    assert gpu(two["vllm"]) != gpu(two["triton"])
    assert gpu(two["triton"]) == gpu(two["trtllm-build"])
    assert gpu(one["vllm"]) == gpu(one["triton"]) == gpu(one["trtllm-build"])
    assert float(flag(two["vllm"], "--gpu-memory-utilization")) == pytest.approx(0.85)
    assert float(flag(one["vllm"], "--gpu-memory-utilization")) == pytest.approx(0.40)
    for job in JOBS:
        assert float(one[job]["environment"]["KV_CACHE_FREE_GPU_MEM_FRACTION"]) == 0.40
        assert two[job]["environment"]["KV_CACHE_FREE_GPU_MEM_FRACTION"] == ""  # script default
    # vLLM sizes itself against the whole card, so it must start before TensorRT-LLM.
    assert one["triton"]["depends_on"]["vllm"]["condition"] == "service_healthy"


def test_vllm_runs_the_seeds_flags_and_the_single_gpu_file_keeps_them() -> None:
    for files in ([COMPOSE_FILES[0]], BOTH):
        vllm = services(files)["vllm"]
        assert vllm["entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        for expected in SEED_FLAGS:
            assert expected in vllm["command"], (files, expected)
        assert vllm["ipc"] == "host"
        assert "Phi-3-mini-4k-instruct" in flag(vllm, "--model")
        assert any(v.endswith(":/root/.cache/huggingface") for v in vllm["volumes"])


def test_triton_serves_the_built_repository_with_the_references_shm_and_ulimits() -> None:
    triton = services(BOTH)["triton"]
    assert re.fullmatch(
        r"nvcr\.io/nvidia/tritonserver:\d\d\.\d\d-trtllm-python-py3", triton["image"]
    )
    assert services(BOTH)["trtllm-build"]["image"] == triton["image"]  # same TensorRT-LLM
    assert "--model-repository=/models/triton-repo" in triton["command"]
    assert {"--grpc-port=8001", "--metrics-port=8002"} <= set(triton["command"])
    assert triton["shm_size"] == "2gb"
    assert triton["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert "trtllm-models:/models:ro" in triton["volumes"]


def test_images_are_pinned() -> None:
    for name, service in services(BOTH).items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "compose/gateway.Dockerfile"
            assert (COMPOSE / service["build"]["context"] / "compose/gateway.Dockerfile").is_file()
            continue
        image = service["image"]
        assert re.search(r":[A-Za-z0-9._-]*\d", image), f"{name}: {image} has no version tag"
        assert not image.endswith((":latest", ":main", ":nightly")), image


def test_every_referenced_file_exists_or_is_an_ignored_operator_secret() -> None:
    model = load_stack(BOTH, TEST_ENV)
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in model["volumes"], f"{name} mounts undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in model["secrets"], f"{name} uses undeclared secret {secret}"
    ignored = (COMPOSE / ".gitignore").read_text(encoding="utf-8").splitlines()
    for secret in model["secrets"].values():
        assert Path(secret["file"]).parts[0] + "/" in ignored  # secrets/...: never committed


def test_the_gateway_reads_its_stage_from_the_mounted_env_folder() -> None:
    gateway = services(BOTH)["gateway"]
    # Not env_file: the container's environment would win over .env, and a reload (SIGHUP,
    # POST /admin/reload) re-reads only .env, so stage changes would need a restart.
    assert "env_file" not in gateway
    assert gateway["working_dir"] == "/app/env"
    assert "./env:/app/env:ro" in gateway["volumes"]
    assert gateway["environment"]["PIKA_REQUIRE_ENV_FILE"] == "1"
    for stage in STAGES:
        assert (COMPOSE / "env" / f"{stage}.env").is_file()
    assert ".env" in (COMPOSE / ".gitignore").read_text().splitlines()  # env/.env: per host


def test_env_example_lists_every_variable_compose_requires() -> None:
    example = (COMPOSE / ".env.example").read_text(encoding="utf-8")
    for name in TEST_ENV:
        assert f"\n{name}=" in example
    required = set(re.findall(r"\$\{(\w+):\?", (COMPOSE / COMPOSE_FILES[0]).read_text()))
    assert required == set(TEST_ENV)
