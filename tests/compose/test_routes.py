"""The gateway's configuration in the compose stack: env/gateway.env (the backends) and each
step of env/routes/ (the routes), as the gateway container sees them and as the runbook walks them.

The container is rebuilt from the compose files: its environment is the image's ENV under the
service's `environment`, and its working directory is the mounted env/ folder, where `.env`
points at gateway.env and `routes.toml` at one step. The mounts are stood in for by temporary
folders: the checkpoints (the tests' tiny Qwen3 and Phi-3 models), the API-key secret, the env
folder, and the task files the image copies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import SHORTHAND, Settings
from tests.compose.stack import (
    COMPOSE,
    COMPOSE_FILES,
    LEGACY_FILE,
    REPO,
    STEPS,
    TEST_ENV,
    image_env,
    load_stack,
    read_env_file,
)

ENV = COMPOSE / "env"
QWEN3, PHI3 = "qwen3-chat", "phi-3-mini"
# What each step changes in the Phi-3 route from the step before it (the runbook's changes).
CHANGES = {
    "phi3-shadow": {"shadow", "shadow_rate", "noise_rate"},
    "phi3-canary": {"canary", "canary_percent", "fallback"},
    "phi3-cutover": {"primary", "shadow", "shadow_rate", "canary", "canary_percent"},
    "phi3-rollback": {"primary", "shadow", "fallback"},
}
ROLES = {  # step: the Phi-3 route's (primary, shadow, canary, fallback)
    "start": ("vllm-phi3", None, None, None),
    "phi3-shadow": ("vllm-phi3", "trtllm-phi3", None, None),
    "phi3-canary": ("vllm-phi3", "trtllm-phi3", "trtllm-phi3", "vllm-phi3"),
    "phi3-cutover": ("trtllm-phi3", "vllm-phi3", None, "vllm-phi3"),
    "phi3-rollback": ("vllm-phi3", "trtllm-phi3", None, None),
}
# Backend kind per engine image: the adapter that speaks that engine's API.
KINDS = {"vllm/vllm-openai": "vllm", "nvcr.io/nvidia/tensorrt-llm/release": "trtllm-serve"}


def stack() -> dict[str, Any]:
    services: dict[str, Any] = load_stack([COMPOSE_FILES[0]], TEST_ENV)["services"]
    return services


def container_env() -> dict[str, str]:
    """The container's environment: the service's `environment` wins over the image's ENV."""
    return {**image_env(), **{k: str(v) for k, v in stack()["gateway"]["environment"].items()}}


def gateway_env() -> dict[str, str]:
    return read_env_file(ENV / "gateway.env")


def backends() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = json.loads(gateway_env()["GATEWAY_BACKENDS"])
    return found


def routes(step: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = tomllib.loads(
        (ENV / "routes" / f"{step}.toml").read_text(encoding="utf-8")
    )["routes"]
    return found


@pytest.fixture(scope="module")
def mounts(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_qwen3_dir: Path
) -> dict[str, Path]:
    """Container path -> the temporary folder or file standing in for it."""
    root = tmp_path_factory.mktemp("container")
    for backend in backends().values():  # each checkpoint folder: the tiny model of its shape
        folder = root / backend["model_dir"].removeprefix("/")
        source = tiny_qwen3_dir if "qwen3" in folder.name else tiny_model_dir
        if not folder.exists():
            shutil.copytree(source, folder)
    keys = root / "run/secrets/gateway_api_keys"
    keys.parent.mkdir(parents=True)
    keys.write_text("sha256:" + "ab" * 32 + "\n", encoding="utf-8")
    for task in (REPO / "prompts").glob("*/task.toml"):  # what the image copies, no more
        target = root / "app/prompts" / task.parent.name / "task.toml"
        target.parent.mkdir(parents=True)
        shutil.copy(task, target)
    found = {"/models": root / "models", "/run/secrets/gateway_api_keys": keys,
             "/app/prompts": root / "app/prompts", "/app/env": root / "app/env"}  # fmt: skip
    shutil.copytree(ENV, found["/app/env"])  # the env folder, container paths stood in for
    text = (ENV / "gateway.env").read_text(encoding="utf-8")
    for inside in sorted(found, key=len, reverse=True):
        text = re.sub(rf"(?<=[\"'=]){re.escape(inside)}(?=/)", str(found[inside]), text)
    (found["/app/env"] / "gateway.env").write_text(text, encoding="utf-8")
    (found["/app/env"] / ".env").symlink_to("gateway.env")  # the runbook's first link
    return found


def select(step: str, mounts: dict[str, Path]) -> Path:
    """`ln -sfn routes/<step>.toml env/routes.toml`, as the runbook walks; returns the folder."""
    folder = mounts["/app/env"]
    (folder / "routes.toml").unlink(missing_ok=True)
    (folder / "routes.toml").symlink_to(f"routes/{step}.toml")
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
    service = stack()["gateway"]
    targets = {volume.split(":")[1] for volume in service["volumes"]}
    targets |= {f"/run/secrets/{secret}" for secret in service["secrets"]}
    targets.add("/app/prompts")  # the image's COPY prompts/
    assert targets == {"/models", "/run/secrets/gateway_api_keys", "/app/prompts", "/app/env"}
    assert service["working_dir"] == "/app/env"
    assert gateway_env()["GATEWAY_ROUTES_FILE"] == "/app/env/routes.toml"


@pytest.mark.parametrize("step", STEPS)
def test_each_step_passes_check_config(step: str, mounts: dict[str, Path]) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env = {key: in_container(value, mounts) for key, value in container_env().items()}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"], env={**base, **env},
        cwd=select(step, mounts), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    phi3 = effective["routes"][PHI3]
    roles = ("primary", "shadow", "canary", "fallback")
    assert tuple(phi3[role] for role in roles) == ROLES[step]
    assert phi3["tasks"] == ["tagger"]
    assert effective["routes"][QWEN3] == effective_start_qwen3(mounts)
    assert effective["tasks_enabled"] is True
    assert effective["records_text"] == "hashes"  # children's text is not stored
    assert effective["records_url"].startswith("postgresql://pika:")
    if phi3["shadow"] is not None:
        assert 0 < phi3["shadow_rate"] <= 1
        assert 0 < phi3["noise_rate"] <= 1
    if phi3["canary"] is not None:
        assert 0 < phi3["canary_percent"] < 100


def effective_start_qwen3(mounts: dict[str, Path]) -> dict[str, Any]:
    """The chat route as the first step configures it."""
    route: dict[str, Any] = settings("start", mounts).routes[QWEN3].model_dump(mode="json")
    return route


def settings(step: str, mounts: dict[str, Path]) -> Settings:
    """The real Settings, built as the gateway builds them, from the stand-in env folder."""
    folder = select(step, mounts)
    values = {**container_env(), **gateway_env()}
    fields = {
        name.removeprefix("GATEWAY_").lower(): in_container(value, mounts)
        for name, value in values.items()
        if name.startswith("GATEWAY_")
    }
    fields["backends"] = in_container(json.loads(fields["backends"]), mounts)
    fields["routes_file"] = str(folder / "routes.toml")
    fields["tasks_dir"] = str(mounts["/app/prompts"])
    return Settings.model_validate(fields)  # not __init__: nothing from this process's env


def test_every_variable_is_a_gateway_setting_and_none_is_the_single_model_shorthand() -> None:
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    names = {name for name in {**container_env(), **gateway_env()} if name.startswith("GATEWAY_")}
    assert names <= known
    # With routes configured, the single-model variables are refused (gateway/settings.py).
    assert not names & {f"GATEWAY_{name.upper()}" for name in SHORTHAND}


@pytest.mark.parametrize("step", list(CHANGES))
def test_each_step_moves_only_the_phi3_route_and_as_the_runbook_says(step: str) -> None:
    before, after = routes(STEPS[STEPS.index(step) - 1]), routes(step)
    assert after[QWEN3] == before[QWEN3] == routes("start")[QWEN3]  # the other route stays put
    assert set(after) == {QWEN3, PHI3}
    old, new = before[PHI3], after[PHI3]
    assert {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)} == CHANGES[step]
    runbook = (COMPOSE / "README.md").read_text(encoding="utf-8")
    section = runbook.split(f"<!-- step:{step} -->")[1].split("<!-- step:")[0]
    assert f"ln -sfn routes/{step}.toml env/routes.toml" in section
    for name in CHANGES[step]:
        assert f"`{name}" in section, f"the runbook's {step} section does not mention {name}"


@pytest.mark.parametrize("step", STEPS)
def test_the_routes_validate_with_the_real_settings(step: str, mounts: dict[str, Path]) -> None:
    config = settings(step, mounts)
    table = {spec.name: spec.settings for spec in config.route_table()}
    assert set(table) == {QWEN3, PHI3}
    assert table[QWEN3].aliases == ["./merged_qwen3_finetuned"]  # the seed's clients' name
    assert (table[QWEN3].primary, table[QWEN3].shadow) == ("vllm-qwen3", "trtllm-qwen3")
    assert table[PHI3].tasks == ["tagger"]
    assert table[QWEN3].tasks == []
    rules = config.route_rules()  # each shadowing route's gate
    assert rules[QWEN3].agreement == "normalised"
    if table[PHI3].shadow is not None:
        assert rules[PHI3].agreement == "structured"  # the tagger: judged on its labels


def test_a_contradiction_in_a_step_is_refused_naming_the_route(
    mounts: dict[str, Path], tmp_path: Path
) -> None:
    broken = (ENV / "routes/phi3-canary.toml").read_text(encoding="utf-8")
    broken = broken.replace('canary = "trtllm-phi3"', 'canary = "trtllm-phi"')
    folder = select("phi3-canary", mounts)
    (folder / "routes.toml").unlink()
    (folder / "routes.toml").write_text(broken, encoding="utf-8")
    with pytest.raises(ValueError, match="route 'phi-3-mini' canary='trtllm-phi'"):
        settings_from(folder, mounts)
    (folder / "routes.toml").unlink()


def settings_from(folder: Path, mounts: dict[str, Path], **more: Any) -> Settings:
    return Settings.model_validate(
        {
            "backends": in_container(backends(), mounts),
            "routes_file": folder / "routes.toml",
            "tasks_dir": mounts["/app/prompts"],
            **more,
        }
    )


def checkpoint(service: dict[str, Any]) -> str:
    command = [str(argument) for argument in service["command"]]
    if command[0] == "trtllm-serve":
        return command[1]
    (model,) = [a.split("=", 1)[1] for a in command if a.startswith("--model=")]
    return model


def test_backends_are_the_compose_engines_with_their_served_names_and_folders() -> None:
    services = stack()
    pool = backends()
    engines = {n for n, s in services.items() if s.get("image", "").split(":")[0] in KINDS}
    assert set(pool) == engines  # every engine is a backend, and only they are
    for name, backend in pool.items():
        service = services[name]
        assert backend["kind"] == KINDS[service["image"].split(":")[0]], name
        assert backend["url"] == f"http://{name}:" + port_of(service), name
        assert backend["model_dir"] == checkpoint(service), name  # the weights it serves
        if backend["kind"] == "vllm":  # vLLM answers 404 to any other name
            (served,) = [a.split("=", 1)[1] for a in service["command"]
                         if a.startswith("--served-model-name=")]  # fmt: skip
            assert backend["model"] == served, name
        else:  # trtllm-serve's name for a folder is the folder's name (facts A.6)
            assert backend["model"] == Path(checkpoint(service)).name, name
    used = {b for step in STEPS for r in routes(step).values() for b in roles_of(r)}
    assert used == set(pool)


def roles_of(route: dict[str, Any]) -> set[str]:
    return {route[role] for role in ("primary", "shadow", "canary", "fallback") if role in route}


def port_of(service: dict[str, Any]) -> str:
    (value,) = [str(a).split("=", 1)[1] for a in service["command"] if a.startswith("--port=")]
    return value


def test_the_start_steps_primaries_are_what_the_gateway_waits_for() -> None:
    primaries = {route["primary"] for route in routes("start").values()}
    assert primaries | {"postgres"} == set(stack()["gateway"]["depends_on"])


def test_the_appendixs_legacy_backend_takes_the_candidates_place(
    mounts: dict[str, Path],
) -> None:
    """The runbook's appendix: Triton's BLS model over a built engine, in trtllm-phi3's place."""
    appendix = (COMPOSE / "README.md").read_text(encoding="utf-8").split("## Appendix")[1]
    found = re.search(r'^"triton-phi3": (\{.*\})$', appendix, re.MULTILINE)
    assert found is not None
    legacy = json.loads(found.group(1))
    triton = load_stack([COMPOSE_FILES[0], LEGACY_FILE], TEST_ENV)["services"]["triton"]
    (grpc,) = [a.split("=", 1)[1] for a in triton["command"] if a.startswith("--grpc-port=")]
    assert legacy["url"] == f"triton:{grpc}"
    assert legacy["model"] == "tensorrt_llm_bls"  # what legacy/trtllm/build_engine.sh fills
    assert legacy["context_length"] == 2048  # the engine's --max_seq_len, vLLM's too
    assert legacy["tokenizer_dir"] == backends()["trtllm-phi3"]["model_dir"]
    folder = select("phi3-canary", mounts)
    step = (folder / "routes.toml").read_text(encoding="utf-8")
    (folder / "routes.toml").unlink()
    (folder / "routes.toml").write_text(step.replace("trtllm-phi3", "triton-phi3"))
    pool = in_container({**backends(), "triton-phi3": legacy}, mounts)
    config = settings_from(folder, mounts, backends=pool)
    assert config.routes[PHI3].canary == "triton-phi3"
    (folder / "routes.toml").unlink()
