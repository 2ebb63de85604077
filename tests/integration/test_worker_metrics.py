"""`gateway serve --workers 2`: one scrape, whichever worker answers it, gives the group's
exact totals after known traffic spread over both workers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx

from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine, sum_samples
from tests.support.servers import gateway_process

CHAT = "/v1/chat/completions"


def test_one_scrape_sums_both_workers(vllm_engine: VllmEngine, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps({"vllm": {"kind": "vllm", "url": vllm_engine.url}}),
        "GATEWAY_MODELS": json.dumps([TINY_MODEL]),
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'pairs.db'}",
        "GATEWAY_METRICS_DIR": str(folder),
    }
    with gateway_process(env, "--workers", "2") as (url, _):
        # Each request on a new connection: the kernel spreads connections over the workers.
        sent = {200: 20, 404: 7, 400: 5}
        for _ in range(sent[200]):
            body = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 1}  # fmt: skip
            assert httpx.post(url + CHAT, json=body, timeout=30).status_code == 200
        for _ in range(sent[404]):
            body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(url + CHAT, json=body).status_code == 404
        for _ in range(sent[400]):
            assert httpx.post(url + CHAT, content=b"{not json").status_code == 400
        # Both workers served some of it: each wrote its own files.
        serving = [path for path in folder.glob("*.idx") if b'"served"' in path.read_bytes()]
        assert len(serving) == 2
        for _ in range(6):  # scrapes land on either worker; each must give the same sums
            text = httpx.get(url + "/metrics").text
            ok = {"route": TINY_MODEL, "backend": "vllm", "path": CHAT, "status": "200"}
            assert sum_samples(text, "gateway_requests_total", ok) == sent[200]
            assert sum_samples(text, "gateway_request_duration_seconds_count", ok) == sent[200]
            for status in (404, 400):
                labels = {"path": CHAT, "status": str(status)}
                assert sum_samples(text, "gateway_requests_total", labels) == sent[status]
            overhead = {"path": CHAT, "le": "+Inf"}
            assert sum_samples(text, "gateway_overhead_seconds_bucket", overhead) == 32
            assert sum_samples(text, "gateway_in_flight_requests", {}) == 0
