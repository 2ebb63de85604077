"""The gateway image's entrypoint, run outside Docker with the system's POSIX sh.

Its decisions (workers from the CPU quota, arguments passed through, a failed check or a missing
env file stops it) are checked against a stand-in `gateway` that records its arguments; its
real job (validate, become `gateway serve`, take a new routes step on SIGHUP) against the real
gateway.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.compose.stack import COMPOSE
from tests.engines.vllm_engine import free_port
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import ThreadedServer

ENTRYPOINT = COMPOSE / "gateway-entrypoint.sh"
NPROC = len(os.sched_getaffinity(0))
STAND_IN = """#!/bin/sh
echo "gateway $*" >> "$CALLS"
[ "$1" = check-config ] && exit "${CHECK_STATUS:-0}"
exit 0
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without GATEWAY_* (and OMP_NUM_THREADS, which nproc obeys)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    keep.pop("OMP_NUM_THREADS", None)
    return {**keep, **extra}


@pytest.fixture
def stand_in(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir, cgroup = tmp_path / "bin", tmp_path / "cgroup"
    bin_dir.mkdir()
    cgroup.mkdir()
    (bin_dir / "gateway").write_text(STAND_IN, encoding="utf-8")
    (bin_dir / "gateway").chmod(0o755)
    calls = tmp_path / "calls"
    env = clean_env(
        PATH=f"{bin_dir}:/usr/bin:/bin", CALLS=str(calls), GATEWAY_CGROUP_DIR=str(cgroup)
    )
    return cgroup, env


def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> tuple[int, list[str]]:
    result = subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, cwd=cwd, capture_output=True)
    calls = Path(env["CALLS"])
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return result.returncode, lines


SERVE = "gateway serve --host 0.0.0.0 --port {port} --workers {workers}"


@pytest.mark.parametrize(
    ("files", "workers"),
    [
        ({}, NPROC),  # no cgroup files: every CPU it may run on
        ({"cpu.max": "max 100000\n"}, NPROC),
        ({"cpu.max": "150000 100000\n"}, min(NPROC, 2)),  # 1.5 CPUs: round up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, min(NPROC, 2)),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, NPROC),
    ],
)
def test_workers_default_to_the_cpus_the_container_may_use(
    stand_in: tuple[Path, dict[str, str]], files: dict[str, str], workers: int
) -> None:
    cgroup, env = stand_in
    for name, content in files.items():
        (cgroup / name).parent.mkdir(exist_ok=True)
        (cgroup / name).write_text(content, encoding="utf-8")
    status, calls = run(env)
    assert status == 0
    assert calls == ["gateway check-config", SERVE.format(port=8080, workers=workers)]


def test_workers_and_port_from_the_environment_win(stand_in: tuple[Path, dict[str, str]]) -> None:
    cgroup, env = stand_in
    (cgroup / "cpu.max").write_text("50000 100000\n", encoding="utf-8")
    status, calls = run({**env, "GATEWAY_WORKERS": "3", "GATEWAY_PORT": "9000"})
    assert status == 0
    assert calls[-1] == SERVE.format(port=9000, workers=3)


def test_a_failed_check_stops_before_serving(stand_in: tuple[Path, dict[str, str]]) -> None:
    _, env = stand_in
    status, calls = run({**env, "CHECK_STATUS": "2"})
    assert status == 2
    assert calls == ["gateway check-config"]


def test_arguments_run_that_gateway_command(stand_in: tuple[Path, dict[str, str]]) -> None:
    _, env = stand_in
    status, calls = run(env, "report", "--since", "24h", "--format", "json")
    assert status == 0
    assert calls == ["gateway report --since 24h --format json"]


@pytest.mark.parametrize("env_file", ["missing", "dangling"])
def test_the_compose_stack_requires_its_env_file(
    stand_in: tuple[Path, dict[str, str]], tmp_path: Path, env_file: str
) -> None:
    _, env = stand_in
    folder = tmp_path / "env"
    folder.mkdir()
    if env_file == "dangling":  # env/.env -> a file that is not there
        (folder / ".env").symlink_to("gateway.evn")
    status, calls = run({**env, "PIKA_REQUIRE_ENV_FILE": "1"}, cwd=folder)
    assert status == 2
    assert calls == []
    (folder / "gateway.env").write_text("GATEWAY_PRIMARY=vllm\n", encoding="utf-8")
    (folder / ".env").unlink(missing_ok=True)
    (folder / ".env").symlink_to("gateway.env")
    status, calls = run({**env, "PIKA_REQUIRE_ENV_FILE": "1"}, cwd=folder)
    assert status == 0
    assert calls[0] == "gateway check-config"


def real_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    return clean_env(PATH=f"{venv_bin}:/usr/bin:/bin", HOME=str(tmp_path), **settings)


def test_an_invalid_configuration_exits_with_the_gateways_message(tmp_path: Path) -> None:
    env = real_env(tmp_path, GATEWAY_PRIMARY="nope")
    result = subprocess.run(
        ["sh", str(ENTRYPOINT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "gateway: invalid configuration" in result.stderr
    assert "GATEWAY_PRIMARY='nope' is not one of GATEWAY_BACKENDS (vllm)" in result.stderr
    assert result.stdout == ""  # the effective configuration is never printed


def primary(url: str) -> str:
    backends = httpx.get(url + "/ready").json()["backends"]
    (name,) = [name for name, report in backends.items() if report["role"] == "primary"]
    return str(name)


def test_a_valid_configuration_becomes_gateway_serve_and_takes_a_new_step_on_sighup(
    tmp_path: Path, fake_upstream: tuple[FakeUpstream, ThreadedServer]
) -> None:
    """As in the compose stack: .env in the working directory names the backends and the
    routes file, a symlink to one step; re-pointing it and sending SIGHUP switches a route's
    primary without a restart."""
    port, folder = free_port(), tmp_path / "env"
    (folder / "routes").mkdir(parents=True)
    backends = {name: {"kind": "vllm", "url": fake_upstream[1].url} for name in ("one", "two")}
    (folder / "gateway.env").write_text(
        f"GATEWAY_BACKENDS='{json.dumps(backends)}'\n"
        f"GATEWAY_ROUTES_FILE={folder / 'routes.toml'}\n",
        encoding="utf-8",
    )
    for name in backends:
        step = f'[routes."phi-3-mini"]\nprimary = "{name}"\n'
        (folder / "routes" / f"{name}.toml").write_text(step, encoding="utf-8")
    (folder / ".env").symlink_to("gateway.env")
    (folder / "routes.toml").symlink_to("routes/one.toml")
    env = real_env(
        tmp_path, GATEWAY_PORT=str(port), PIKA_REQUIRE_ENV_FILE="1",
        GATEWAY_WORKERS="1",  # as docker-compose.yml sets it: the gateway reloads in place
    )  # fmt: skip
    process = subprocess.Popen(
        ["sh", str(ENTRYPOINT)], env=env, cwd=folder, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        health = wait_for(url + "/health", process)
        assert health.json() == {"status": "ok"}
        assert primary(url) == "one"
        # exec: the process started as sh is now the gateway itself, so signals reach it.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline
        (folder / "routes.toml").unlink()
        (folder / "routes.toml").symlink_to("routes/two.toml")
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (current := primary_or_none(url)) != "two":
            time.sleep(0.2)
        assert current == "two"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert f"serving on 0.0.0.0:{port} with 1 worker(s)" in output
    assert "configuration reloaded: phi-3-mini -> two" in output


def primary_or_none(url: str) -> str | None:
    """The primary, or None while the workers restart."""
    try:
        return primary(url)
    except (httpx.TransportError, ValueError, KeyError):
        return None


def wait_for(url: str, process: subprocess.Popen[str], timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the entrypoint exited: {process.communicate()[0]}")
        try:
            return httpx.get(url)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")
