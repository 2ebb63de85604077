"""The compose files, read as Docker Compose reads them, against the Compose specification.

Two independent parsers: the specification's JSON schema (what Docker Compose validates
against), and the `compose_spec` Rust parser, which also checks durations, sizes and ports.
Then the references between files and services, which neither parser checks, and what the
runbook promises of the engines: the seeds' flags, one GPU share at a time, no engine build.
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
    LEGACY_FILE,
    TEST_ENV,
    InterpolationError,
    load_stack,
    schema_errors,
)

MAIN, SINGLE = [COMPOSE_FILES[0]], list(COMPOSE_FILES)
LEGACY = [COMPOSE_FILES[0], LEGACY_FILE]
VLLM = ("vllm-qwen3", "vllm-phi3")
TRTLLM = ("trtllm-qwen3", "trtllm-phi3")
ENGINES = VLLM + TRTLLM
JOBS = ("trtllm-build",)  # one-shot (legacy file): no health check, no restart
# The seeds' commands (/work/shared/seeds): 000 serves the fine-tuned Qwen3, 004 Phi-3 AWQ.
SEED_FLAGS = {
    "vllm-qwen3": ("--port=8000", "--tensor-parallel-size=1", "--max-model-len=2048",
                   "--trust-remote-code"),
    "vllm-phi3": ("--port=8000", "--quantization=awq", "--max-model-len=2048",
                  "--enable-prefix-caching"),
}  # fmt: skip
# The engines' memory knobs: vLLM's share of the whole card, trtllm-serve's share of what is
# free once its weights are loaded (runbook, "Sizing").
MEMORY_FLAGS = ("--gpu-memory-utilization", "--kv_cache_free_gpu_memory_fraction")
# trtllm-serve flags and the LLM-API field each sets (tensorrt_llm/commands/serve.py@00209af1):
# a field set by a flag must not be in the YAML too (which wins changed between versions).
FLAG_FIELDS = {
    "--backend": "backend", "--max_seq_len": "max_seq_len", "--max_batch_size": "max_batch_size",
    "--max_num_tokens": "max_num_tokens", "--kv_cache_free_gpu_memory_fraction": "kv_cache_config",
}  # fmt: skip
# LLM-API fields the candidates' YAML may hold, each read in the upstream sources: the server
# refuses to start on any other (LlmArgs forbid extra fields; backends/TENSORRT_LLM.md, E).
YAML_FIELDS = {"guided_decoding_backend", "return_perf_metrics", "enable_iter_perf_stats"}


def services(files: list[str], **env: str) -> dict[str, Any]:
    stack: dict[str, Any] = load_stack(files, {**TEST_ENV, **env})["services"]
    return stack


def flag(service: dict[str, Any], name: str) -> str:
    values = [str(arg).split("=", 1)[1] for arg in service["command"] if arg.startswith(name + "=")]
    assert len(values) == 1, name
    return values[0]


def checkpoint(service: dict[str, Any]) -> str:
    """The folder an engine serves: vLLM's --model, trtllm-serve's positional argument."""
    if service["command"][0] == "trtllm-serve":
        return str(service["command"][1])
    return flag(service, "--model")


def gpu(service: dict[str, Any]) -> str:
    device_ids: list[str] = service["deploy"]["resources"]["reservations"]["devices"][0][
        "device_ids"
    ]
    return device_ids[0]


def after(stack: dict[str, Any], name: str) -> set[str]:
    """Every service `name` waits for, directly or not."""
    found: set[str] = set()
    todo = list(stack[name].get("depends_on", {}))
    while todo:
        dependency = todo.pop()
        if dependency not in found:
            found.add(dependency)
            todo += list(stack[dependency].get("depends_on", {}))
    return found


@pytest.mark.parametrize("files", [MAIN, [COMPOSE_FILES[1]], SINGLE, LEGACY], ids=str)
def test_every_file_is_a_valid_compose_model(files: list[str]) -> None:
    assert schema_errors(load_stack(files, TEST_ENV)) == []


def test_the_compose_spec_parser_accepts_the_merged_models() -> None:
    try:
        from compose_spec import PyCompose
    except ImportError:  # pragma: no cover - the message is the point
        pytest.fail("the compose-spec package is missing: pip install 'compose-spec==0.2.1'")
    for files in (MAIN, SINGLE, LEGACY):
        parsed = PyCompose.from_yaml(yaml.safe_dump(load_stack(files, TEST_ENV)))
        assert set(parsed.service_names()) == set(services(files))
    broken = load_stack(SINGLE, TEST_ENV)
    broken["services"]["vllm-phi3"]["healthcheck"]["start_period"] = "15 minutes"  # schema: fine
    assert schema_errors(broken) == []
    with pytest.raises(ValueError, match="start_period"):
        PyCompose.from_yaml(yaml.safe_dump(broken))


def test_the_checks_above_do_catch_mistakes() -> None:
    model = load_stack(MAIN, TEST_ENV)
    model["services"]["vllm-qwen3"]["helthcheck"] = model["services"]["vllm-qwen3"].pop(
        "healthcheck"
    )
    assert schema_errors(model) != []


@pytest.mark.parametrize("secret", sorted(TEST_ENV))
def test_secrets_are_required_not_defaulted(secret: str) -> None:
    env = {name: value for name, value in TEST_ENV.items() if name != secret}
    with pytest.raises(InterpolationError, match=secret):
        load_stack(MAIN, env)


@pytest.mark.parametrize("files", [MAIN, SINGLE, LEGACY], ids=str)
def test_depends_on_names_services_and_waits_for_health(files: list[str]) -> None:
    stack = services(files)
    for name, service in stack.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in stack, f"{name} depends on unknown {dependency}"
            assert "healthcheck" in stack[dependency], f"{name} waits on {dependency}"
            assert rule["condition"] == "service_healthy"
    # The gateway waits for the primaries only: a candidate that is down costs clients nothing.
    assert set(stack["gateway"]["depends_on"]) == {*VLLM, "postgres"}


def test_long_running_services_have_health_checks_and_restart() -> None:
    stack = services(LEGACY)
    for name, service in stack.items():
        if name in JOBS:
            assert service.get("profiles") == ["build"]
            continue
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] == "unless-stopped", name
    for engine in ENGINES:  # vLLM's and trtllm-serve's readiness route
        assert "8000/health'" in stack[engine]["healthcheck"]["test"][-1], engine
    assert "/v2/health/ready" in stack["triton"]["healthcheck"]["test"][-1]
    assert "/ready" in stack["gateway"]["healthcheck"]["test"][-1]


@pytest.mark.parametrize("files", [MAIN, SINGLE, LEGACY], ids=str)
def test_engines_reserve_one_gpu(files: list[str]) -> None:
    stack = services(files)
    for name in [*ENGINES, *(("triton", "trtllm-build") if files == LEGACY else ())]:
        devices = stack[name]["deploy"]["resources"]["reservations"]["devices"]
        assert len(devices) == 1, (files, name)
        assert devices[0]["driver"] == "nvidia"
        assert devices[0]["capabilities"] == ["gpu"]
        assert len(devices[0]["device_ids"]) == 1


def test_two_gpus_by_default_one_shared_gpu_with_the_override() -> None:
    two, one = services(MAIN), services(SINGLE)
    assert gpu(two["vllm-qwen3"]) == gpu(two["vllm-phi3"])
    assert gpu(two["trtllm-qwen3"]) == gpu(two["trtllm-phi3"]) != gpu(two["vllm-qwen3"])
    assert len({gpu(one[name]) for name in ENGINES}) == 1


@pytest.mark.parametrize("files", [MAIN, SINGLE], ids=str)
def test_engines_sharing_a_gpu_start_one_at_a_time_vllm_first(files: list[str]) -> None:
    """Each engine sizes its memory at start against what the others already hold: two starting
    together would both count the same free memory. vLLM's share is of the whole card and it
    refuses to start without it; trtllm-serve's is of what is left."""
    stack = services(files)
    for first in ENGINES:
        for second in ENGINES:
            if first < second and gpu(stack[first]) == gpu(stack[second]):
                assert first in after(stack, second) or second in after(stack, first)
        if first in TRTLLM:
            shared = [v for v in VLLM if gpu(stack[v]) == gpu(stack[first])]
            assert set(shared) <= after(stack, first), first


@pytest.mark.parametrize("files", [MAIN, SINGLE], ids=str)
def test_the_vllm_shares_of_one_card_leave_headroom(files: list[str]) -> None:
    stack = services(files)
    by_gpu: dict[str, float] = {}
    for name in VLLM:
        share = float(flag(stack[name], "--gpu-memory-utilization"))
        by_gpu[gpu(stack[name])] = by_gpu.get(gpu(stack[name]), 0.0) + share
    assert all(0 < total <= 0.9 for total in by_gpu.values()), by_gpu
    for name in TRTLLM:
        assert 0 < float(flag(stack[name], "--kv_cache_free_gpu_memory_fraction")) < 1


def test_the_single_gpu_file_changes_only_the_memory_shares() -> None:
    two, one = services(MAIN), services(SINGLE)
    for name in ENGINES:
        assert len(one[name]["command"]) == len(two[name]["command"]), name
        for mine, theirs in zip(one[name]["command"], two[name]["command"], strict=True):
            if not mine.startswith(MEMORY_FLAGS):
                assert mine == theirs, name
        assert one[name]["image"] == two[name]["image"]
    assert float(flag(one["vllm-qwen3"], "--gpu-memory-utilization")) < float(
        flag(two["vllm-qwen3"], "--gpu-memory-utilization")
    )


@pytest.mark.parametrize("files", [MAIN, SINGLE], ids=str)
def test_vllm_runs_the_seeds_flags(files: list[str]) -> None:
    stack = services(files)
    for name, flags in SEED_FLAGS.items():
        vllm = stack[name]
        assert vllm["entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
        for expected in flags:
            assert expected in vllm["command"], (files, name, expected)
        assert vllm["ipc"] == "host"
        assert vllm["environment"]["HF_HUB_OFFLINE"] == "1"  # the mounted folders, no download
    assert checkpoint(stack["vllm-qwen3"]) == "/models/merged_qwen3_finetuned"  # the seed's model
    assert "AWQ" in checkpoint(stack["vllm-phi3"])


@pytest.mark.parametrize("files", [MAIN, SINGLE], ids=str)
def test_the_candidates_are_trtllm_serve_on_the_pytorch_backend_with_no_engine_build(
    files: list[str],
) -> None:
    stack = services(files)
    for name, service in stack.items():
        text = " ".join(map(str, [*service.get("command", []), *service.get("entrypoint", [])]))
        assert not re.search(r"trtllm-build|convert_checkpoint|tritonserver", text), name
    for name in TRTLLM:
        trtllm = stack[name]
        assert re.fullmatch(
            r"nvcr\.io/nvidia/tensorrt-llm/release:\d+\.\d+\.\d+(rc\d+)?", trtllm["image"]
        )
        assert trtllm["command"][0] == "trtllm-serve"
        assert checkpoint(trtllm).startswith("/models/")  # a Hugging Face checkpoint folder
        assert flag(trtllm, "--backend") == "pytorch"
        assert (flag(trtllm, "--host"), flag(trtllm, "--port")) == ("0.0.0.0", "8000")
        options = flag(trtllm, "--extra_llm_api_options")
        assert f"./trtllm/serve.yaml:{options}:ro" in trtllm["volumes"]
        assert trtllm["ipc"] == "host"
        assert trtllm["ulimits"] == {"memlock": -1, "stack": 67108864}
    assert stack["trtllm-qwen3"]["image"] == stack["trtllm-phi3"]["image"]


@pytest.mark.parametrize("files", [MAIN, SINGLE], ids=str)
def test_each_candidate_serves_its_primarys_model_within_the_same_limits(
    files: list[str],
) -> None:
    stack = services(files)
    for model in ("qwen3", "phi3"):
        vllm, trtllm = stack[f"vllm-{model}"], stack[f"trtllm-{model}"]
        assert flag(trtllm, "--max_seq_len") == flag(vllm, "--max-model-len")
    # The same weights for the chat model; for Phi-3 the unquantised checkpoint, since W4A16
    # AWQ (what vLLM serves) is not in TensorRT-LLM's support matrix for Phi (runbook).
    assert checkpoint(stack["trtllm-qwen3"]) == checkpoint(stack["vllm-qwen3"])
    assert checkpoint(stack["trtllm-phi3"]) == checkpoint(stack["vllm-phi3"]).removesuffix("-AWQ")
    quantised = services(files, TRTLLM_PHI3_CHECKPOINT="Phi-3-mini-4k-instruct-W4A8-AWQ")
    assert checkpoint(quantised["trtllm-phi3"]) == "/models/Phi-3-mini-4k-instruct-W4A8-AWQ"


# Rows of TensorRT-LLM's PyTorch-backend quantisation matrix, as read at
# docs/source/features/quantization.md@09d4c79b: the schemes marked Y for each model.
SUPPORT_MATRIX = {
    "Phi": {"FP8 KV cache", "W4A8 AWQ"},
    "Qwen-3": {"NVFP4", "FP8 per tensor", "FP8 KV cache", "W4A16 AWQ", "W4A16 GPTQ"},
}


def test_the_runbook_states_the_support_matrix_as_read() -> None:
    runbook = (COMPOSE / "README.md").read_text(encoding="utf-8")
    section = runbook.split("\n## Quantisation\n")[1].split("\n## ")[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in rows[0]]
    stated = {cells[0].strip(): {header[i] for i, c in enumerate(cells) if c.strip() == "Y"}
              for cells in rows[2:]}  # fmt: skip
    assert stated == {model: schemes & set(header) for model, schemes in SUPPORT_MATRIX.items()}
    assert "W4A16 AWQ" in header  # what vLLM serves Phi-3 with: the row says no


def test_the_candidates_options_turn_on_guided_decoding_and_set_no_flag_twice() -> None:
    options = yaml.safe_load((COMPOSE / "trtllm/serve.yaml").read_text(encoding="utf-8"))
    assert options["guided_decoding_backend"] in ("xgrammar", "llguidance")
    assert options["return_perf_metrics"] is True  # /prometheus/metrics, which Prometheus scrapes
    assert set(options) <= YAML_FIELDS
    for name in TRTLLM:
        command = services(MAIN)[name]["command"]
        names = [argument.split("=")[0] for argument in command]
        set_by_flags = {FLAG_FIELDS[name] for name in names if name in FLAG_FIELDS}
        assert set_by_flags == set(FLAG_FIELDS.values())
        assert not set_by_flags & set(options)


def test_images_are_pinned() -> None:
    for name, service in services(LEGACY).items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "compose/gateway.Dockerfile"
            assert (COMPOSE / service["build"]["context"] / "compose/gateway.Dockerfile").is_file()
            continue
        image = service["image"]
        assert re.search(r":[A-Za-z0-9._-]*\d", image), f"{name}: {image} has no version tag"
        assert not image.endswith((":latest", ":main", ":nightly")), image
        assert ".dev" not in image, f"{name}: {image} is a nightly build"


def test_every_referenced_file_exists_or_is_an_ignored_operator_folder() -> None:
    model = load_stack(LEGACY, TEST_ENV)
    ignored = (COMPOSE / ".gitignore").read_text(encoding="utf-8").splitlines()
    for name, service in model["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source == "./models":  # MODELS_DIR: the operator's checkpoints, never committed
                assert "models/" in ignored
            elif source.startswith("."):
                assert (COMPOSE / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in model["volumes"], f"{name} mounts undeclared volume {source}"
        for secret in service.get("secrets", []):
            assert secret in model["secrets"], f"{name} uses undeclared secret {secret}"
    for secret in model["secrets"].values():
        assert Path(secret["file"]).parts[0] + "/" in ignored  # secrets/...: never committed


def test_the_gateway_reads_its_configuration_from_the_mounted_env_folder() -> None:
    stack = services(MAIN)
    gateway = stack["gateway"]
    # Not env_file: the container's environment would win over .env, and a reload (SIGHUP,
    # POST /admin/reload) re-reads only .env and the routes file, so changes need a restart.
    assert "env_file" not in gateway
    assert gateway["working_dir"] == "/app/env"
    assert "./env:/app/env:ro" in gateway["volumes"]
    assert gateway["environment"]["PIKA_REQUIRE_ENV_FILE"] == "1"
    # The engines' checkpoints at the same path: each backend's model_dir is the engine's folder.
    for name in ENGINES:
        assert stack[name]["volumes"][0] == gateway["volumes"][1] == "./models:/models:ro"
    ignored = (COMPOSE / ".gitignore").read_text().splitlines()
    assert {".env", "env/routes.toml"} <= set(ignored)  # per host: the live files are links


def test_env_example_lists_every_variable_compose_requires() -> None:
    example = (COMPOSE / ".env.example").read_text(encoding="utf-8")
    for name in TEST_ENV:
        assert f"\n{name}=" in example
    required = set(re.findall(r"\$\{(\w+):\?", (COMPOSE / COMPOSE_FILES[0]).read_text()))
    assert required == set(TEST_ENV)
    for name in ("MODELS_DIR", "VLLM_GPU", "TRTLLM_GPU"):
        assert f"\n{name}=" in example


def test_the_legacy_file_adds_triton_and_the_engine_build_on_the_last_image_that_has_them() -> None:
    legacy, main = services(LEGACY), services(MAIN)
    assert set(legacy) - set(main) == {"triton", "trtllm-build"}
    for name in main:
        assert legacy[name] == main[name], f"the legacy file changes {name}"
    triton = legacy["triton"]
    # NVIDIA/TensorRT-LLM PR #15907 removed the backend in July 2026; 26.05 ships TRT-LLM 1.2.1.
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:26.05-trtllm-python-py3"
    assert legacy["trtllm-build"]["image"] == triton["image"]  # an engine runs where it was built
    assert "--model-repository=/models/triton-repo" in triton["command"]
    assert {"--grpc-port=8001", "--metrics-port=8002"} <= set(triton["command"])
    assert triton["shm_size"] == "2gb"
    assert "trtllm-models:/models:ro" in triton["volumes"]
    assert gpu(triton) == gpu(main["trtllm-phi3"])  # it takes the candidate's place
