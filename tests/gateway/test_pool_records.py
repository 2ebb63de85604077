"""A replica pool behind the whole app: each shadow pair stores the endpoint of each leg, and
the endpoint series count what each endpoint answered."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.engines.vllm_engine import sum_samples
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.records import stored_pairs
from tests.support.servers import ThreadedServer


def test_pairs_and_metrics_name_the_endpoint_that_answered(tmp_path: Path) -> None:
    records = f"sqlite:///{tmp_path / 'pairs.db'}"
    with (
        ThreadedServer(FakeUpstream()) as one,
        ThreadedServer(FakeUpstream()) as two,
        ThreadedServer(FakeUpstream()) as candidate,
    ):
        endpoints = {server.url.removeprefix("http://") for server in (one, two)}
        settings = Settings(
            backends={
                "pool": VllmSettings(urls=[one.url, two.url], model=MODEL),
                "shadow": VllmSettings(url=candidate.url, model=MODEL),
            },
            primary="pool", shadow="shadow", shadow_rate=1.0, noise_rate=0.0, models=["m"],
            records_url=records, probe_interval=0,
        )  # fmt: skip
        with ThreadedServer(create_app(settings)) as gateway:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            for stream in (False, True) * 5:
                answer = httpx.post(gateway.url + "/v1/chat/completions",
                                    json={**body, "stream": stream})  # fmt: skip
                assert answer.status_code == 200
            time.sleep(0.5)
            text = httpx.get(gateway.url + "/metrics").text
    counted = {
        endpoint: sum_samples(text, "gateway_endpoint_calls_total",
                              {"endpoint": endpoint, "outcome": "answered"})
        for endpoint in endpoints
    }  # fmt: skip
    pairs = stored_pairs(records)
    assert len(pairs) == 10
    assert {pair.primary.endpoint for pair in pairs} <= endpoints
    assert {pair.candidate.endpoint for pair in pairs} == {None}  # not a pool
    for endpoint in endpoints:  # what each endpoint answered, by the records and the metrics
        assert counted[endpoint] == sum(pair.primary.endpoint == endpoint for pair in pairs)
