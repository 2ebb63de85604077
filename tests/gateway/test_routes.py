"""Route configuration: a routes file (TOML) or GATEWAY_ROUTES (JSON), or the single-model
variables as the one-route shorthand; contradictions refused, naming the route and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.app import enabled_tasks
from gateway.gate_rule import GateRule
from gateway.routes import GateOverrides, RouteSettings, RouteSpec
from gateway.settings import Settings, describe_errors
from gateway.tasks.config import TaskConfigError
from tests.support.env import without_gateway_env

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
NAMES = ["vllm-qwen3", "trt-qwen3", "vllm-phi3", "trt-phi3"]
POOL = {name: {"kind": "vllm", "url": f"http://10.0.0.{i}:8000"} for i, name in enumerate(NAMES)}
ROUTES_TOML = """
# Model names hold what env var names cannot: slashes, dots, capitals.
[routes."Qwen/Qwen3-8B.ft"]
primary = "vllm-qwen3"
aliases = ["qwen3-chat"]
shadow = "trt-qwen3"
shadow_rate = 1.0
noise_rate = 0.05
max_concurrency = 192

[routes.phi-3-mini]
primary = "vllm-phi3"
canary = "trt-phi3"
canary_percent = 50
fallback = "vllm-phi3"
tasks = ["tagger"]
gate = { agreement = "structured", max_p95_ratio = 1.0 }
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_gateway_env(monkeypatch, tmp_path)


def configure(monkeypatch: pytest.MonkeyPatch, **env: Any) -> None:
    """Sets `GATEWAY_<NAME>` for each keyword; dicts and lists as JSON."""
    for name, value in {"backends": POOL, **env}.items():
        text = value if isinstance(value, str) else json.dumps(value)
        monkeypatch.setenv(f"GATEWAY_{name.upper()}", text)


def refusal(monkeypatch: pytest.MonkeyPatch, **env: Any) -> str:
    """The start message for a configuration that must be refused."""
    configure(monkeypatch, **env)
    with pytest.raises(ValidationError) as caught:
        Settings()
    return describe_errors(caught.value)


def test_a_routes_file_makes_one_route_per_model_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES_TOML, encoding="utf-8")
    configure(monkeypatch, routes_file=str(path), gate_min_pairs="300")
    settings = Settings()
    qwen3 = RouteSettings(
        primary="vllm-qwen3", aliases=["qwen3-chat"], shadow="trt-qwen3", shadow_rate=1.0,
        noise_rate=0.05, max_concurrency=192,
    )  # fmt: skip
    phi3 = RouteSettings(
        primary="vllm-phi3", canary="trt-phi3", canary_percent=50.0, fallback="vllm-phi3",
        tasks=["tagger"], gate=GateOverrides(agreement="structured", max_p95_ratio=1.0),
    )  # fmt: skip
    assert settings.route_table() == [
        RouteSpec("Qwen/Qwen3-8B.ft", qwen3),
        RouteSpec("phi-3-mini", phi3),
    ]
    # Each route's gate: GATEWAY_GATE_* with the route's own thresholds over it.
    assert settings.route_rules() == {
        "Qwen/Qwen3-8B.ft": GateRule(min_pairs=300),
        "phi-3-mini": GateRule(min_pairs=300, agreement="structured", max_p95_ratio=1.0),
    }
    assert settings.shadowing_routes() == ["Qwen/Qwen3-8B.ft"]


def test_gateway_routes_json_is_the_same_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = {"qwen3-chat": {"primary": "vllm-qwen3", "shadow": "trt-qwen3", "shadow_rate": 0.5},
              "phi-3-mini": {"primary": "vllm-phi3", "max_concurrency": 4}}  # fmt: skip
    configure(monkeypatch, routes=routes)
    table = Settings().route_table()
    assert [spec.name for spec in table] == ["qwen3-chat", "phi-3-mini"]
    assert table[0].settings.shadow_rate == 0.5
    assert table[0].settings.noise_rate == 0.1  # the default, as GATEWAY_NOISE_RATE's
    assert table[1].settings.max_concurrency == 4
    assert not any(spec.shorthand for spec in table)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "No such file or directory"),
        ("[routes.chat\nprimary = 1", "Expected ']' at the end of a table declaration"),
        ('[route.chat]\nprimary = "vllm-phi3"', "unknown table 'route'"),
        ("title = 'nothing else'", "unknown table 'title'"),
        ("", "no [routes.<model>] table"),
        ("routes = 'chat'", "no [routes.<model>] table"),
    ],
    ids=["missing", "not-toml", "misspelt-table", "stray-key", "empty", "not-a-table"],
)
def test_a_bad_routes_file_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None, expected: str
) -> None:
    path = tmp_path / "routes.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    message = refusal(monkeypatch, routes_file=str(path))
    assert message.startswith(f"GATEWAY_ROUTES_FILE={path}: "), message
    assert expected in message


def test_routes_come_from_the_file_or_the_json_not_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES_TOML, encoding="utf-8")
    routes = {"chat": {"primary": "vllm-qwen3"}}
    message = refusal(monkeypatch, routes_file=str(path), routes=routes)
    assert message == "set GATEWAY_ROUTES or GATEWAY_ROUTES_FILE, not both"


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"primray": "vllm-phi3"}, "route 'Phi-3/mini' primary: Field required"),
        (
            {"primary": "vllm-phi3", "primray": "x"},
            "route 'Phi-3/mini' primray: Extra inputs are not permitted",
        ),
        (
            {"primary": "vllm-phi3", "shadow_rate": 2},
            "route 'Phi-3/mini' shadow_rate: Input should be less than or equal to 1",
        ),
        (
            {"primary": "vllm-phi3", "max_concurrency": 0},
            "route 'Phi-3/mini' max_concurrency: Input should be greater than or equal to 1",
        ),
        (
            {"primary": "vllm-phi3", "gate": {"max_p95_ratio": 0}},
            "route 'Phi-3/mini' gate.max_p95_ratio: Input should be greater than 0",
        ),
        (
            {"primary": "vllm-phi3", "gate": {"agreement": "fuzzy"}},
            "route 'Phi-3/mini' gate.agreement: Input should be 'exact', 'normalised' or "
            "'structured'",
        ),
        (
            {"primary": "vllm-phi3", "gate": {"min_pair": 10}},
            "route 'Phi-3/mini' gate.min_pair: Extra inputs are not permitted",
        ),
        (
            "vllm-phi3",
            "route 'Phi-3/mini': Input should be a valid dictionary or instance of RouteSettings",
        ),
    ],
)
def test_a_bad_route_field_is_named_with_its_route(
    monkeypatch: pytest.MonkeyPatch, route: Any, expected: str
) -> None:
    """The model name keeps its case: it is a route's name, not part of an env var's."""
    assert expected in refusal(monkeypatch, routes={"Phi-3/mini": route}).splitlines()


ROLES = ("primary", "shadow", "canary", "fallback")


@pytest.mark.parametrize(
    ("routes", "expected"),
    [
        (
            {"chat": {"primary": "vllm-qwen3", "shadow": "vllm-qwen3"}},
            "route 'chat' shadow must differ from route 'chat' primary",
        ),
        (
            {"chat": {"primary": "vllm-qwen3", "canary": "vllm-qwen3", "canary_percent": 5}},
            "route 'chat' canary must differ from route 'chat' primary",
        ),
        *(
            (
                {"chat": {"primary": "vllm-qwen3", role: "trt-phi4"}},
                f"route 'chat' {role}='trt-phi4' is not one of GATEWAY_BACKENDS "
                "(trt-phi3, trt-qwen3, vllm-phi3, vllm-qwen3)",
            )
            for role in ROLES
        ),
        (
            {
                "chat": {"primary": "vllm-qwen3", "aliases": ["phi-3-mini"]},
                "phi-3-mini": {"primary": "vllm-phi3"},
            },
            "route 'phi-3-mini' name: 'phi-3-mini' is also an alias of route 'chat'",
        ),
        (
            {
                "chat": {"primary": "vllm-qwen3", "aliases": ["default"]},
                "phi-3-mini": {"primary": "vllm-phi3", "aliases": ["default"]},
            },
            "route 'phi-3-mini' aliases: 'default' is also an alias of route 'chat'",
        ),
        (
            {
                "chat": {"primary": "vllm-qwen3", "tasks": ["tagger"]},
                "phi-3-mini": {"primary": "vllm-phi3", "tasks": ["tagger"]},
            },
            "route 'phi-3-mini' tasks: 'tagger' is also a task on route 'chat'",
        ),
        (
            {
                "chat": {"primary": "vllm-qwen3"},
                "phi-3-mini": {"primary": "vllm-phi3", "aliases": ["chat"]},
            },
            "route 'phi-3-mini' aliases: 'chat' is also the name of route 'chat'",
        ),
        ({"": {"primary": "vllm-qwen3"}}, "route '' name: a model name cannot be empty"),
        (
            {"chat": {"primary": "vllm-qwen3", "aliases": [" "]}},
            "route 'chat' aliases: a model name cannot be empty",
        ),
    ],
    ids=[
        "shadow-is-primary",
        "canary-is-primary",
        *(f"unknown-{role}" for role in ROLES),
        "name-is-another-alias",
        "alias-twice",
        "task-twice",
        "alias-is-another-name",
        "empty-name",
        "empty-alias",
    ],
)
def test_contradictions_are_refused_naming_route_and_field(
    monkeypatch: pytest.MonkeyPatch, routes: dict[str, Any], expected: str
) -> None:
    assert refusal(monkeypatch, routes=routes) == expected


def test_a_fallback_may_be_the_primary_serving_for_its_canary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """compose/env/canary.env's shape: the canary's circuit open, the primary takes its share."""
    routes = {"phi-3-mini": {"primary": "vllm-phi3", "canary": "trt-phi3", "canary_percent": 10,
                             "fallback": "vllm-phi3"}}  # fmt: skip
    configure(monkeypatch, routes=routes)
    assert Settings().route_table()[0].settings.fallback == "vllm-phi3"


def test_the_single_model_variables_make_one_route(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch, primary="vllm-phi3", models=["phi-3-mini", "phi3"], shadow="trt-phi3",
        shadow_rate="0.2", noise_rate="0.05", canary="trt-phi3", canary_percent="5",
        fallback="vllm-qwen3",
    )  # fmt: skip
    [spec] = Settings().route_table()
    assert spec == RouteSpec(
        "phi-3-mini",
        RouteSettings(
            primary="vllm-phi3", aliases=["phi3"], shadow="trt-phi3", shadow_rate=0.2,
            noise_rate=0.05, canary="trt-phi3", canary_percent=5.0, fallback="vllm-qwen3",
        ),
        shorthand=True,
    )  # fmt: skip
    assert spec.names == ("phi-3-mini", "phi3")


def test_without_models_the_shorthand_route_is_named_by_its_primary_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configured `model` is the route's name from the start; without one the name is
    learnt from the engine (None here)."""
    named = {"main": {"kind": "vllm", "url": "http://10.0.0.1:8000", "model": "phi-3-mini"}}
    configure(monkeypatch, backends=named, primary="main")
    assert [spec.name for spec in Settings().route_table()] == ["phi-3-mini"]
    configure(monkeypatch, backends={"main": {"kind": "vllm", "url": "http://10.0.0.1:8000"}})
    [spec] = Settings().route_table()
    assert spec.name is None
    assert spec.names == ()
    assert Settings().route_rules() == {}  # no name to judge its pairs under yet


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"primary": "vllm-phi3", "shadow": "vllm-phi3"},
         "GATEWAY_SHADOW must differ from GATEWAY_PRIMARY"),
        ({"primary": "vllm-phi3", "canary": "vllm-phi3"},
         "GATEWAY_CANARY must differ from GATEWAY_PRIMARY"),
        ({"primary": "vllm-phi3", "fallback": "nope"},
         "GATEWAY_FALLBACK='nope' is not one of GATEWAY_BACKENDS"),
        ({"primary": "vllm-phi3", "models": ["phi-3-mini", "phi-3-mini"]},
         "GATEWAY_MODELS: 'phi-3-mini' is also the name of route 'phi-3-mini'"),
        ({"primary": "vllm-phi3", "models": [""]}, "GATEWAY_MODELS: a model name cannot be empty"),
    ],
)  # fmt: skip
def test_shorthand_contradictions_name_the_single_model_variables(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, Any], expected: str
) -> None:
    assert expected in refusal(monkeypatch, **env)


@pytest.mark.parametrize("variable", ["primary", "models", "shadow_rate", "canary", "fallback"])
def test_routes_and_single_model_variables_do_not_mix(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    values = {"primary": "vllm-phi3", "models": ["phi3"], "shadow_rate": "0.5",
              "canary": "trt-phi3", "fallback": "vllm-phi3"}  # fmt: skip
    routes = {"phi-3-mini": {"primary": "vllm-phi3"}}
    message = refusal(monkeypatch, routes=routes, **{variable: values[variable]})
    assert message == (
        f"GATEWAY_{variable.upper()} is for a single model: with routes configured, set it in "
        "each route"
    )


def test_a_task_on_a_route_must_be_served_and_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = {"phi-3-mini": {"primary": "vllm-phi3", "tasks": ["tagger"]}}
    configure(monkeypatch, routes=routes)
    with pytest.raises(TaskConfigError, match="route 'phi-3-mini' tasks names 'tagger': set "):
        enabled_tasks(Settings())
    configure(monkeypatch, tasks_enabled="true", tasks_dir=str(PROMPTS))
    assert list(enabled_tasks(Settings())) == ["tagger"]
    configure(monkeypatch, routes={"phi-3-mini": {"primary": "vllm-phi3", "tasks": ["mood"]}})
    with pytest.raises(TaskConfigError, match=f"names 'mood', which {PROMPTS} does not have"):
        enabled_tasks(Settings())
    configure(monkeypatch, routes={"tagger": {"primary": "vllm-phi3"}})
    with pytest.raises(TaskConfigError, match="task aliases also model names: tagger"):
        enabled_tasks(Settings())


def test_check_config_refuses_a_bad_routes_file_naming_route_and_field(tmp_path: Path) -> None:
    """What an operator sees at start: one line naming the route and field, exit 2."""
    path = tmp_path / "routes.toml"
    path.write_text(ROUTES_TOML.replace('shadow = "trt-qwen3"', 'shadow = "vllm-qwen3"'))
    env = {key: value for key, value in os.environ.items() if not key.startswith("GATEWAY_")}
    env |= {"GATEWAY_BACKENDS": json.dumps(POOL), "GATEWAY_ROUTES_FILE": str(path)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        "route 'Qwen/Qwen3-8B.ft' shadow must differ from route 'Qwen/Qwen3-8B.ft' primary"
        in done.stderr
    )
    assert "Traceback" not in done.stderr
