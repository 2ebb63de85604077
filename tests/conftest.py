"""Shared fixtures: servers start once per test run and listen on free ports."""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.loops import LOOP_KINDS, Scenario, run_on
from tests.support.servers import ThreadedServer

if TYPE_CHECKING:
    from tests.engines.triton_engine import TritonEngine
    from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine
    from tests.engines.trtllm_serve_engine import TrtllmServeEngine
    from tests.engines.vllm_engine import VllmEngine
    from tests.support.redis import RedisServer


CACHE = Path(__file__).resolve().parent.parent / ".cache"
TINY_MODEL = "tiny-phi3"
QWEN3_MODEL = "qwen3-chat"  # the name the team serves its fine-tuned Qwen3 under
RUN_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture(params=LOOP_KINDS)
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario on each event loop the gateway may run on (the test runs once per loop)."""
    return partial(run_on, request.param)


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[tuple[FakeUpstream, ThreadedServer]]:
    app = FakeUpstream()
    with ThreadedServer(app) as server:
        yield app, server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server (Debian's package), for limits shared between processes."""
    from tests.support.redis import RedisServer

    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny Phi-3-shaped model every engine serves, trained to answer the tagger; built
    once into the repo's cache (a few minutes), rebuilt when its recipe changes."""
    from tests.engines.tagger_model import build_tagger_model

    return build_tagger_model(CACHE / "tiny-phi3")


@pytest.fixture(scope="session")
def random_model_dir() -> Path:
    """The same model untrained (random weights): for tests of engine faults, where what the
    model answers does not matter."""
    from tests.engines.tiny_model import build_tiny_model

    return build_tiny_model(CACHE / "tiny-phi3-random")


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir: Path) -> Iterator[VllmEngine]:
    """Real vLLM (CPU build) serving the tiny model: started once per test run."""
    from tests.engines.vllm_engine import VllmEngine

    engine = VllmEngine(tiny_model_dir, served_name=TINY_MODEL, log_path=CACHE / "vllm.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def vllm_replicas(vllm_engine: VllmEngine, tiny_model_dir: Path) -> Iterator[list[VllmEngine]]:
    """Three replicas of one engine for pools: `vllm_engine` and two more like it, the two
    started at once. A test may kill one of the two, and must start it again on its port."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.engines.vllm_engine import VllmEngine

    more = [
        VllmEngine(tiny_model_dir, served_name=TINY_MODEL, log_path=CACHE / f"vllm-{n}.log")
        for n in (2, 3)
    ]
    try:
        with ThreadPoolExecutor(len(more)) as starting:
            list(starting.map(lambda engine: engine.start(), more))
        yield [vllm_engine, *more]
    finally:
        for engine in more:
            engine.stop()


@pytest.fixture(scope="session")
def tiny_qwen3_dir() -> Path:
    """The tiny Qwen3-shaped model, the shape of the team's chat model, built once into the
    repo's cache."""
    from tests.engines.tiny_qwen3 import build_tiny_qwen3

    return build_tiny_qwen3(CACHE / "tiny-qwen3")


@pytest.fixture(scope="session")
def vllm_qwen3_engine(tiny_qwen3_dir: Path) -> Iterator[VllmEngine]:
    """Real vLLM serving the tiny Qwen3 as the team serves its model: no sampling flags, so
    vLLM's default ``--generation-config auto`` applies generation_config.json."""
    from tests.engines.vllm_engine import VllmEngine

    engine = VllmEngine(tiny_qwen3_dir, served_name=QWEN3_MODEL, log_path=CACHE / "vllm-qwen3.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def triton_engine(tiny_model_dir: Path) -> Iterator[TritonEngine]:
    """Real Triton (PyTriton's tritonserver) hosting TensorRT-LLM-shaped models on the same
    tiny weights: `ensemble`, `tensorrt_llm_bls` and the LLM-API `tensorrt_llm`."""
    from tests.engines.triton_engine import TritonEngine

    engine = TritonEngine(tiny_model_dir, log_path=CACHE / "triton.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def trtllm_serve_engine(tiny_model_dir: Path) -> Iterator[TrtllmServeEngine]:
    """The trtllm-serve stand-in (`trtllm-serve MODEL`, no guided decoding backend, default
    generation config) on the same tiny weights; the model id is the dir's basename."""
    from tests.engines.trtllm_serve_engine import TrtllmServeEngine

    engine = TrtllmServeEngine(tiny_model_dir, log_path=CACHE / "trtllm-serve.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def trtllm_grpc_engine(tiny_model_dir: Path) -> Iterator[TrtllmGrpcEngine]:
    """A `trtllm-serve --grpc` stand-in (SMG's TrtllmService) on the same tiny weights, with
    guided decoding."""
    from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine

    engine = TrtllmGrpcEngine(tiny_model_dir, log_path=CACHE / "trtllm-grpc.log")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def trtllm_serve_guided_engine(tiny_model_dir: Path) -> Iterator[TrtllmServeEngine]:
    """The trtllm-serve stand-in as stage 2 should run it: a guided-decoding backend
    (xgrammar) configured, so `response_format` is enforced."""
    from tests.engines.trtllm_serve_engine import TrtllmServeEngine

    log = CACHE / "trtllm-serve-guided.log"
    yield from running(TrtllmServeEngine(tiny_model_dir, guided_decoding=True, log_path=log))


@pytest.fixture(scope="session")
def trtllm_serve_qwen3_engine(tiny_qwen3_dir: Path) -> Iterator[TrtllmServeEngine]:
    """The trtllm-serve stand-in on the tiny Qwen3, guided decoding configured, served under
    the team's name for its model."""
    from tests.engines.trtllm_serve_engine import TrtllmServeEngine

    engine = TrtllmServeEngine(
        tiny_qwen3_dir, guided_decoding=True, served_name=QWEN3_MODEL,
        log_path=CACHE / "trtllm-serve-qwen3.log",
    )  # fmt: skip
    yield from running(engine)


@pytest.fixture(scope="session")
def trtllm_grpc_qwen3_engine(tiny_qwen3_dir: Path) -> Iterator[TrtllmGrpcEngine]:
    """The `trtllm-serve --grpc` stand-in on the tiny Qwen3, with guided decoding."""
    from tests.engines.trtllm_grpc_engine import TrtllmGrpcEngine

    yield from running(TrtllmGrpcEngine(tiny_qwen3_dir, log_path=CACHE / "trtllm-grpc-qwen3.log"))


@pytest.fixture(scope="session")
def triton_qwen3_engine(tiny_qwen3_dir: Path) -> Iterator[TritonEngine]:
    """Real Triton hosting the three TensorRT-LLM models on the tiny Qwen3."""
    from tests.engines.triton_engine import TritonEngine

    yield from running(TritonEngine(tiny_qwen3_dir, log_path=CACHE / "triton-qwen3.log"))


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


Engine = TypeVar("Engine", bound=_Startable)


def running(engine: Engine) -> Iterator[Engine]:
    """Starts a test engine, hands it out, and stops it when its fixture ends."""
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture
def run_summary(pytestconfig: pytest.Config) -> list[str]:
    """Lines a test reports to whoever reads the run's output (pytest captures `print`)."""
    return pytestconfig.stash.setdefault(RUN_SUMMARY, [])


# What `./dev check` leaves out: tests that start engines, gateway processes or a browser.
SLOW_FOLDERS = ("integration", "conformance", "engines", "compose", "benchmarks")
SLOW_FIXTURES = {
    "vllm_engine",
    "vllm_replicas",
    "vllm_qwen3_engine",
    "triton_engine",
    "trtllm_serve_engine",
    "trtllm_grpc_engine",
    "trtllm_serve_guided_engine",
    "trtllm_serve_qwen3_engine",
    "trtllm_grpc_qwen3_engine",
    "triton_qwen3_engine",
    "tiny_model_dir",
    "random_model_dir",
    "tiny_qwen3_dir",
    "redis_server",
}


def pytest_configure(config: pytest.Config) -> None:
    """Conformance probes run only where a test asks for them (they send requests of their
    own, which tests counting an engine's requests would see); subprocesses inherit this."""
    os.environ.setdefault("GATEWAY_PROBE_CONFORMANCE_INTERVAL", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks the slow tests (`-m "not slow"` is the fast lane): by folder, by the engines
    they use, or by their module's own `pytestmark`."""
    tests = Path(__file__).resolve().parent
    for item in items:
        parts = item.path.relative_to(tests).parts
        if parts[0] in SLOW_FOLDERS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Shows the `run_summary` lines after the results, in CI's output too."""
    lines = config.stash.get(RUN_SUMMARY, [])
    if lines:
        terminalreporter.write_sep("=", "reported by tests")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Collect what tests left for the garbage collector before pytest's own final check.

    SDK clients created inside tests hold pooled sockets until collected; any leak while a test
    runs still fails that test, but clients that outlive the session are test scaffolding, not
    the gateway, so their sockets are closed here quietly.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
