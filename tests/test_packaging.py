"""The production install as the README gives it: the wheel alone in a fresh virtualenv, with
its base dependencies only, serving real vLLM; the image's install step with its extras and
lock; and a base that is exactly what the runtime code imports."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.engines.vllm_engine import VllmEngine
from tests.support.servers import until_ready

pytestmark = pytest.mark.slow  # builds the wheel, installs it in fresh virtualenvs

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# Modules only a backend kind or a store with an extra loads, and that extra.
OPTIONAL = {
    "backends/chat_template.py": "triton",
    "backends/prompting.py": "trtllm-serve",
    "backends/trtllm_grpc/adapter.py": "trtllm-grpc",
    "backends/triton/adapter.py": "triton",
    "backends/triton/answer.py": "triton",
    "backends/triton/interface.py": "triton",
    "backends/triton/request.py": "triton",
    "gateway/records/postgres.py": "records-postgres",
    "gateway/ratelimit/shared.py": "rate-limit-redis",
}


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(spec).name) for spec in requirements}


def third_party_imports(path: Path) -> set[str]:
    """Distributions a module imports, as this environment maps import names to them."""
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        for module in modules:
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in ("gateway", "backends", "__future__"):
                continue
            if top == "_typeshed":  # the standard library's type stubs, for annotations only
                continue
            found.update(canonicalize_name(name) for name in providers.get(top, [top]))
    return found


def test_base_dependencies_are_exactly_what_the_runtime_imports() -> None:
    base: set[str] = set()
    by_extra: dict[str, set[str]] = {}
    for path in [*ROOT.joinpath("gateway").rglob("*.py"), *ROOT.joinpath("backends").rglob("*.py")]:
        extra = OPTIONAL.get(path.relative_to(ROOT).as_posix())
        (by_extra.setdefault(extra, set()) if extra else base).update(third_party_imports(path))
    assert base == names(PROJECT["dependencies"])
    for extra, imported in by_extra.items():
        assert imported - base <= names(PROJECT["optional-dependencies"][extra]), extra


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("pika_gateway-*.whl")
    return built


def test_the_wheel_holds_the_gateway_and_no_test_engines(wheel: Path) -> None:
    files = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in files}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"gateway", "backends"}
    assert not [name for name in files if "engines" in name or "devstack" in name]
    assert "gateway/records/postgres.py" in files  # optional modules ship, their drivers don't


def fresh_venv(folder: Path, *install: str) -> Path:
    """A new virtualenv with `install` given to its pip; returns its bin folder."""
    venv.EnvBuilder(with_pip=True).create(folder)
    bin_dir = folder / "bin"
    done = subprocess.run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", *install],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ERROR" not in done.stderr, done.stderr[-3000:]  # a resolver conflict, say
    return bin_dir


@pytest.fixture(scope="module")
def base_install(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` as the README's production install: the wheel, base dependencies."""
    return fresh_venv(tmp_path_factory.mktemp("base") / "venv", str(wheel))


def gateway_env(backends: dict[str, object], **more: str) -> dict[str, str]:
    keep = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    return {**keep, "GATEWAY_BACKENDS": json.dumps(backends), **more}


def run_gateway(bin_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [bin_dir / "gateway", *args], env=env, capture_output=True, text=True, timeout=60,
        cwd=bin_dir, check=False,
    )  # fmt: skip


def test_a_base_install_loads_every_module_but_the_optional_ones(base_install: Path) -> None:
    modules = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for top in ("gateway", "backends")
        for path in ROOT.joinpath(top).rglob("*.py")
        if path.relative_to(ROOT).as_posix() not in OPTIONAL and path.name != "__main__.py"
    ]
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    done = subprocess.run(
        [base_install / "python", "-c", code, *modules], capture_output=True, text=True,
        cwd=base_install, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def base_gateway(
    base_install: Path, vllm_engine: VllmEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`gateway serve` of the base install in front of the real vLLM test engine."""
    from tests.engines.vllm_engine import free_port

    records = tmp_path_factory.mktemp("records") / "shadow.db"
    env = gateway_env(
        {"vllm": {"kind": "vllm", "url": vllm_engine.url}},
        GATEWAY_RECORDS_URL=f"sqlite:///{records}",
    )
    checked = run_gateway(base_install, env, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["backends"]["vllm"]["url"] == vllm_engine.url
    port = free_port()
    log = records.parent / "serve.log"
    with log.open("w") as output, subprocess.Popen(
        [base_install / "gateway", "serve", "--port", str(port)], env=env, cwd=base_install,
        stdout=output, stderr=subprocess.STDOUT,
    ) as process:  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            until_ready(url, timeout=60)
            assert process.poll() is None, log.read_text()
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_a_base_install_serves_a_chat_completion_from_vllm(
    base_gateway: str, vllm_engine: VllmEngine
) -> None:
    client = openai.OpenAI(base_url=base_gateway + "/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=vllm_engine.served_name,
        messages=[{"role": "user", "content": "Xin chào"}],
        max_tokens=5,
        temperature=0,
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.completion_tokens <= 5


@pytest.mark.parametrize("command", ["check-config", "serve"])
def test_a_kind_whose_extra_is_missing_stops_the_gateway_in_one_line(
    base_install: Path, command: str
) -> None:
    env = gateway_env(
        {"trt": {"kind": "triton", "url": "127.0.0.1:1", "chat_template": "phi3"}},
        GATEWAY_PRIMARY="trt",
    )
    done = run_gateway(base_install, env, command)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "backend 'trt'" in line
    assert "pip install 'pika-gateway[triton]'" in line


def test_a_store_whose_extra_is_missing_stops_the_gateway_in_one_line(base_install: Path) -> None:
    env = gateway_env(
        {"vllm": {"kind": "vllm", "url": "http://127.0.0.1:1"}},
        GATEWAY_RECORDS_URL="postgresql://gateway@127.0.0.1/records",
    )
    done = run_gateway(base_install, env, "check-config")
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "pip install 'pika-gateway[records-postgres]'" in line


def test_the_image_install_step_gives_every_extra_at_its_locked_version(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """What compose/gateway.Dockerfile runs, here without Docker: the project's sources as the
    image copies them, installed with its extras under the lock's constraints; a backend of
    every kind then passes check-config, which imports each adapter."""
    source = tmp_path / "src"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "gateway", "backends"):
        subprocess.run(["cp", "-r", str(ROOT / part), str(source)], check=True)
    lock = ROOT / "compose" / "gateway-requirements.lock"
    dockerfile = (ROOT / "compose" / "gateway.Dockerfile").read_text(encoding="utf-8")
    extras = re.search(r"^ARG GATEWAY_EXTRAS=(\S+)$", dockerfile, re.MULTILINE)
    assert extras is not None
    bin_dir = fresh_venv(
        tmp_path / "venv", "--constraint", str(lock), f"{source}[{extras.group(1)}]"
    )
    model = str(tiny_model_dir)
    env = gateway_env(
        {
            "trt": {"kind": "triton", "url": "127.0.0.1:1", "chat_template": "phi3"},
            "serve": {"kind": "trtllm-serve", "url": "http://127.0.0.1:1", "model_dir": model},
            "grpc": {"kind": "trtllm-grpc", "url": "127.0.0.1:1", "model_dir": model},
            "vllm": {"kind": "vllm", "url": "http://127.0.0.1:1"},
        },
        GATEWAY_PRIMARY="trt",
        GATEWAY_RECORDS_URL="postgresql://gateway@127.0.0.1/records",
    )
    done = run_gateway(bin_dir, env, "check-config")
    assert done.returncode == 0, done.stderr
    assert {"serve", "grpc", "trt", "vllm"} <= set(json.loads(done.stdout)["backends"])
    frozen = subprocess.run(
        [bin_dir / "python", "-m", "pip", "freeze"], capture_output=True, text=True, check=True
    ).stdout.split()
    pins = set(lock.read_text(encoding="utf-8").split())
    assert [line for line in frozen if "==" in line and line not in pins] == []
