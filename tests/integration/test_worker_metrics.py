"""`gateway serve --workers 2`: one scrape, whichever worker answers it, gives the group's
exact totals after known traffic spread over both workers: requests, their statuses, client
timeouts and rate-limit refusals."""

from __future__ import annotations

import json
import os
import socket
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.conftest import TINY_MODEL
from tests.engines.vllm_engine import VllmEngine, sum_samples
from tests.support.servers import gateway_process

CHAT = "/v1/chat/completions"
HEAD_TIMEOUT = 0.5  # seconds; a client that has not sent its whole head by then gets 408
PER_MINUTE = 12  # requests each worker admits a minute: each counts alone (no Redis)
SLOW_CLIENTS = 6


def slow_heads(url: str, count: int) -> list[bytes]:
    """`count` clients that send half a head and wait: what each is answered."""
    parts = urlsplit(url)
    clients = [socket.create_connection((parts.hostname, parts.port)) for _ in range(count)]
    for client in clients:
        client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    answers = []
    for client in clients:
        client.settimeout(10 * HEAD_TIMEOUT)
        answers.append(client.recv(65536))
        client.close()
    return answers


def test_one_scrape_sums_both_workers(vllm_engine: VllmEngine, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps({"vllm": {"kind": "vllm", "url": vllm_engine.url}}),
        "GATEWAY_MODELS": json.dumps([TINY_MODEL]),
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'pairs.db'}",
        "GATEWAY_METRICS_DIR": str(folder),
        "GATEWAY_CLIENT_HEAD_TIMEOUT": str(HEAD_TIMEOUT),
        "GATEWAY_RATE_LIMITS__REQUESTS_PER_MINUTE": str(PER_MINUTE),
    }
    with gateway_process(env, "--workers", "2") as (url, _):
        # Each request on a new connection: the kernel spreads connections over the workers.
        # More than both workers admit a minute: some are refused (429), by either worker.
        sent: Counter[int] = Counter({404: 7, 400: 5})
        for _ in range(3 * PER_MINUTE):
            body = {"model": TINY_MODEL, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 1}  # fmt: skip
            sent[httpx.post(url + CHAT, json=body, timeout=30).status_code] += 1
        assert set(sent) == {200, 429, 404, 400}
        for _ in range(sent[404]):
            body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
            assert httpx.post(url + CHAT, json=body).status_code == 404
        for _ in range(sent[400]):
            assert httpx.post(url + CHAT, content=b"{not json").status_code == 400
        answers = slow_heads(url, SLOW_CLIENTS)
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
        # Both workers served some of it: each wrote its own files.
        serving = [path for path in folder.glob("*.idx") if b'"served"' in path.read_bytes()]
        assert len(serving) == 2
        for _ in range(6):  # scrapes land on either worker; each must give the same sums
            text = httpx.get(url + "/metrics").text
            ok = {"route": TINY_MODEL, "backend": "vllm", "path": CHAT, "status": "200"}
            assert sum_samples(text, "gateway_requests_total", ok) == sent[200]
            assert sum_samples(text, "gateway_request_duration_seconds_count", ok) == sent[200]
            for status in (429, 404, 400):
                labels = {"path": CHAT, "status": str(status)}
                assert sum_samples(text, "gateway_requests_total", labels) == sent[status]
            overhead = {"path": CHAT, "le": "+Inf"}
            assert sum_samples(text, "gateway_overhead_seconds_bucket", overhead) == sent.total()
            assert sum_samples(text, "gateway_in_flight_requests", {}) == 0
            refused = {"route": TINY_MODEL, "limit": "requests"}
            assert sum_samples(text, "gateway_rate_limited_total", refused) == sent[429]
            head = {"phase": "head"}
            assert sum_samples(text, "gateway_client_timeouts_total", head) == SLOW_CLIENTS
