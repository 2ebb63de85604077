"""Prometheus scrapes what runs; the Grafana dashboard queries metrics that exist, with the
labels they have, and filters the gateway's by the `route` it selects.

Gateway metric names and labels come from the gateway's own registry (`gateway.metrics.Metrics`).
Engine metric names come from fixed lists: vLLM's checked against a real vLLM in
test_seed_command.py, trtllm-serve's read in TensorRT-LLM's source (no GPU here to run it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from gateway.http.limits import ConnectionGuard, ConnectionLimits
from gateway.metrics import Metrics
from gateway.probes import Conformance, ProbeResult
from tests.compose.stack import COMPOSE, COMPOSE_FILES, REPO, TEST_ENV, load_stack

GRAFANA = COMPOSE / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards/gateway.json").read_text(encoding="utf-8"))
# Engine metrics the dashboard may use. vLLM: docs.vllm.ai "Production Metrics" (V1 names).
# trtllm-serve, at /prometheus/metrics with return_perf_metrics (and iteration stats for the
# gauges): NVIDIA/TensorRT-LLM tensorrt_llm/metrics/collector.py@050f80de (the prefix and the
# gauges date from early 2026, backends/TENSORRT_LLM.md E.1; older images lack them).
VLLM_METRICS = {
    "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total",
    "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
}  # fmt: skip
TRTLLM_METRICS = {
    "trtllm_num_requests_waiting", "trtllm_num_requests_running", "trtllm_kv_cache_utilization",
    "trtllm_kv_cache_hit_rate", "trtllm_time_to_first_token_seconds_bucket",
    "trtllm_e2e_request_latency_seconds_bucket",
}  # fmt: skip
ENGINE_JOBS = {"vllm": ("/metrics", 8000), "trtllm": ("/prometheus/metrics", 8000)}
ROUTE_FILTER = 'route=~"$route"'
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
_FUNCTIONS = r"\b[a-z_]+\s*\("
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
             "and", "or", "unless", "le", "inf"}  # fmt: skip


def gateway_metrics() -> Metrics:
    metrics = Metrics()  # the shadow records' series are there from the start
    ConnectionGuard(ConnectionLimits(), numbers=metrics.numbers)  # as the app's, counting there
    conformance = Conformance()
    conformance.record([ProbeResult("trtllm-phi3", "constraint", "fail", "free text", 0.0)])
    metrics.watch_conformance(conformance)
    # Series made by their first use: one of each, so they have samples.
    metrics.observe("phi-3-mini", "vllm-phi3", "/v1/chat/completions", 200, 0.02, 0.0001)
    metrics.in_flight_for("phi-3-mini", "vllm-phi3", "/v1/chat/completions")
    metrics.shadow_for("phi-3-mini").dropped("shutdown")
    metrics.fallback_for("vllm-phi3").inc()
    return metrics


def gateway_metric_names() -> set[str]:
    families: list[Metric] = list(gateway_metrics().registry.collect())
    return {f.name + suffix for f in families for suffix in _SUFFIXES[f.type]}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, ranges and functions removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(_FUNCTIONS, "(", expr)
    tokens = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
    return {token for token in tokens if token not in _KEYWORDS}


def panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((COMPOSE / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_every_scrape_target_is_a_compose_service_on_its_metrics_port() -> None:
    stack = load_stack(list(COMPOSE_FILES), TEST_ENV)["services"]
    jobs = scrape_jobs()
    assert set(jobs) == {"gateway", *ENGINE_JOBS}
    (gateway,) = jobs["gateway"]["dns_sd_configs"]  # every replica, by the service's DNS name
    assert (gateway["names"], gateway["port"]) == (["gateway"], 8080)  # the entrypoint's default
    scraped = set()
    for name, (path, port) in ENGINE_JOBS.items():
        assert jobs[name]["metrics_path"] == path
        (discovery,) = jobs[name]["dns_sd_configs"]
        assert (discovery["type"], discovery["port"]) == ("A", port)
        for service in discovery["names"]:
            assert service.startswith(name + "-")
            assert f"--port={port}" in stack[service]["command"], service
            scraped.add(service)
    engines = {n for n, s in stack.items() if "/models:ro" in " ".join(s.get("volumes", []))}
    assert scraped == engines - {"gateway"}  # every engine, and the engines only
    mounted = stack["prometheus"]["volumes"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted


def test_engine_series_carry_the_engine_label_the_dashboard_groups_by() -> None:
    jobs = scrape_jobs()
    for name in ENGINE_JOBS:
        (relabel,) = jobs[name]["relabel_configs"]
        assert relabel == {"source_labels": ["__meta_dns_name"], "target_label": "engine"}
    for panel in panels():
        for target in panel["targets"]:
            if re.search(r"\bby\s*\([^)]*\bengine\b", target["expr"]):
                assert metric_names(target["expr"]) <= VLLM_METRICS | TRTLLM_METRICS, panel["title"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard_folder() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    assert source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/gateway.yml").read_text())
    (dashboards,) = provider["providers"]
    grafana = load_stack(list(COMPOSE_FILES), TEST_ENV)["services"]["grafana"]
    assert f"./grafana/dashboards:{dashboards['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    for panel in panels():
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"]


def test_panels_are_laid_out_without_overlap_and_have_unique_ids() -> None:
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}  # fmt: skip
        assert not area & cells, panel["title"]
        cells |= area


def test_every_query_uses_metrics_that_exist() -> None:
    exposed = gateway_metric_names()
    allowed = exposed | VLLM_METRICS | TRTLLM_METRICS
    for panel in panels():
        for target in panel["targets"]:
            unknown = metric_names(target["expr"]) - allowed
            assert not unknown, f"{panel['title']}: {unknown}"


def test_the_dashboard_covers_what_the_runbook_says_to_watch() -> None:
    used = {name for p in panels() for t in p["targets"] for name in metric_names(t["expr"])}
    for family in ("gateway_overhead_seconds", "gateway_request_duration_seconds",
                   "gateway_requests_total", "gateway_in_flight_requests"):  # fmt: skip
        assert any(name.startswith(family) for name in used), family
    shadow = {name for name in gateway_metric_names() if name.startswith("gateway_shadow_")}
    assert shadow, "the gateway exposes no gateway_shadow_* metrics"
    assert {n for n in shadow if n.endswith("_total")} <= used  # agreement, drops, failures
    assert "gateway_conformance" in used  # an engine that accepts a constraint and ignores it
    assert used >= VLLM_METRICS | TRTLLM_METRICS


def gateway_label_names() -> dict[str, set[str]]:
    """Label names per exposed sample name (histograms add `le`)."""
    labels: dict[str, set[str]] = {}
    metrics = gateway_metrics()
    for metric in vars(metrics).values():
        if hasattr(metric, "_labelnames"):  # declared labels, samples or not
            family = next(iter(metric.describe()))
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                labels[family.name + suffix] = set(metric._labelnames) | extra
    for family in metrics.registry.collect():  # collectors: labels from their samples
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_gateway_label_names_and_values_exist() -> None:
    labels = gateway_label_names()
    source = "".join(p.read_text(encoding="utf-8") for p in (REPO / "gateway").glob("*.py"))
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for metric, matchers in re.findall(r"(gateway_\w+)\{([^}]*)\}", expr):
                for label, op, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', matchers):
                    assert label in labels[metric], f"{metric} has no label {label}"
                    if op == "=" and not value.isdigit():
                        assert f'"{value}"' in source, f"the gateway never sets {label}={value}"
            used = metric_names(expr)
            if not used <= set(labels):  # engine metrics: their labels are not ours to check
                continue
            for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
                names = {name.strip() for name in group.split(",")}
                assert names <= set().union(*(labels[m] for m in used)), (panel["title"], names)


def test_the_dashboard_selects_routes_by_the_gateways_route_label() -> None:
    (variable,) = DASHBOARD["templating"]["list"]
    assert variable["name"] == "route"
    query = variable["query"]["query"]
    assert variable["definition"] == query
    found = re.fullmatch(r"label_values\((\w+), route\)", query)
    assert found is not None, query
    labels = gateway_label_names()
    assert "route" in labels[found.group(1)]
    assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (True, True, ".*")
    with_route = {name for name, names in labels.items() if "route" in names}
    filtered = set()
    for panel in panels():
        for target in panel["targets"]:
            for metric, matchers in re.findall(r"(gateway_\w+)(?:\{([^}]*)\})?", target["expr"]):
                if metric in with_route:  # every series with a route obeys the selector
                    assert ROUTE_FILTER in matchers, (panel["title"], metric)
                    filtered.add(metric)
            # The route label holds model names; the OpenAI operation is the `path` label.
            for value in re.findall(r'\broute\s*(?:=~|!=|!~|=)\s*"([^"]*)"', target["expr"]):
                assert value == "$route", (panel["title"], value)
    assert {name.removesuffix("_bucket") for name in filtered} >= {
        "gateway_request_duration_seconds", "gateway_requests_total",
        "gateway_in_flight_requests", "gateway_shadow_agreement_total",
    }  # fmt: skip


def test_legends_name_only_labels_the_query_keeps() -> None:
    for panel in panels():
        for target in panel["targets"]:
            kept = {
                name.strip()
                for group in re.findall(r"\bby\s*\(([^)]*)\)", target["expr"])
                for name in group.split(",")
            }
            shown = set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            assert shown <= kept, (panel["title"], shown - kept)


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (le, backend) (rate(gateway_request_duration_seconds_bucket{path="/v1/x"}'
        "[$__rate_interval])) / on (backend) vllm:kv_cache_usage_perc"
    )
    assert metric_names(expr) == {
        "gateway_request_duration_seconds_bucket",
        "vllm:kv_cache_usage_perc",
    }


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:  # pragma: no cover - the message is the point
        pytest.fail("promtool is missing: ./dev test installs Debian's prometheus package")
    return path


def test_prometheus_config_passes_promtool() -> None:
    config = COMPOSE / "prometheus/prometheus.yml"
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", str(config)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Prometheus' own parser reads each query, as recording rules (Grafana's interval
    variable stands in as 1m)."""
    rules = [
        {"record": f"dashboard:panel_{panel['id']}_{index}",
         "expr": target["expr"].replace("$__rate_interval", "1m").replace("$route", ".*")}
        for panel in panels() for index, target in enumerate(panel["targets"])
    ]  # fmt: skip
    assert rules
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


def test_promtool_is_not_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "bad-rules.yml"
    bad = {"record": "x", "expr": "sum(rate(gateway_requests_total[1m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [bad]}]}))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True)
    assert result.returncode != 0
