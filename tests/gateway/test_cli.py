"""`gateway serve` as an operator runs it: a real process, uvicorn workers, env configuration."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.devstack.vllm_engine import free_port
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]


@pytest.fixture
def served(fake_upstream: Fake) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps({"main": {"kind": "vllm", "url": fake_upstream[1].url}}),
        "GATEWAY_PRIMARY": "main",
        "GATEWAY_API_KEYS": '["sk-test-secret-key"]',
        "GATEWAY_LOG_LEVEL": "debug",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def test_serve_runs_workers_and_never_logs_keys_or_text(
    served: tuple[str, subprocess.Popen[str]],
) -> None:
    url, process = served
    secret_text = "con tên là Bống, nhà con ở số 12"
    for _ in range(6):
        response = httpx.post(
            url + "/v1/chat/completions",
            headers={"authorization": "Bearer sk-test-secret-key"},
            json={"model": MODEL, "messages": [{"role": "user", "content": secret_text}]},
        )
        assert response.status_code == 200
    refused = httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": "Bearer sk-wrong-key"},
        json={"model": MODEL, "messages": [{"role": "user", "content": secret_text}]},
    )
    assert refused.status_code == 401
    malformed = httpx.post(
        url + "/v1/chat/completions",
        headers={"authorization": "Bearer sk-test-secret-key"},
        content=b'{"model": "' + secret_text.encode() + b'", "messages": [}',
    )
    assert malformed.status_code == 400
    assert secret_text not in malformed.text
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Started parent process" in output  # uvicorn's multi-worker supervisor
    assert output.count("Application startup complete") == 2
    for leaked in ("sk-test-secret-key", "sk-wrong-key", "Bống", secret_text):
        assert leaked not in output


def test_sigterm_under_load_answers_everything_and_drains_records(
    fake_upstream: Fake, tmp_path: Path
) -> None:
    port = free_port()
    store = tmp_path / "pairs.db"
    upstream = fake_upstream[1].url
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps(
            {
                "main": {"kind": "vllm", "url": upstream},
                "cand": {"kind": "vllm", "url": upstream},
            }
        ),
        "GATEWAY_PRIMARY": "main",
        "GATEWAY_SHADOW": "cand",
        "GATEWAY_SHADOW_RATE": "1",
        "GATEWAY_NOISE_RATE": "0",
        "GATEWAY_RECORDS_URL": f"sqlite:///{store}",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/ready").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "slow:1.0"}]}

        def one(_: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as client:
                return client.post("/v1/chat/completions", json=body).status_code

        fake = fake_upstream[0]
        before = fake.calls
        with ThreadPoolExecutor(40) as pool:
            answers = [pool.submit(one, index) for index in range(40)]
            deadline = time.monotonic() + 20
            while fake.calls - before < 80:  # 40 requests and their 40 shadows, all upstream
                assert time.monotonic() < deadline, "the requests never all reached upstream"
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            statuses = [answer.result() for answer in answers]
        assert statuses == [200] * 40  # every accepted request answered
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    with sqlite3.connect(store) as db:
        (count,) = db.execute("SELECT count(*) FROM pairs WHERE kind = 'shadow'").fetchone()
    assert count == 40
