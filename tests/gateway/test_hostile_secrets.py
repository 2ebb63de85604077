"""No secret and no child's text leaves the gateway: a real `gateway serve` at log level debug,
with an API key, an admin token and a shadow candidate, gets good, bad and failing requests
that carry a child's sentence; neither the key, the token nor the sentence may appear in its
output, its /metrics, any response, or the records store (which keeps hashes by default)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer, gateway_process

Fake = tuple[FakeUpstream, ThreadedServer]
KEY = "sk-pika-4f1c9e7a2b8d6053e1aa"
ADMIN = "adm-pika-9b2e47c1d08f3a65"
CHILD = "con tên là Bống, nhà con ở số 12 phố Hoa Sữa"
SECRETS = [KEY, ADMIN, CHILD, "Bống", "Hoa Sữa"]


@pytest.fixture
def served(fake_upstream: Fake, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    upstream = {"kind": "vllm", "url": fake_upstream[1].url, "read_timeout": 1.0, "retries": 0}
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps({"main": upstream, "cand": upstream}),
        "GATEWAY_PRIMARY": "main",
        "GATEWAY_SHADOW": "cand",
        "GATEWAY_SHADOW_RATE": "1",
        "GATEWAY_API_KEYS": json.dumps([KEY]),
        "GATEWAY_ADMIN_TOKEN": ADMIN,
        "GATEWAY_LOG_LEVEL": "debug",
        "GATEWAY_MAX_BODY_BYTES": "65536",
        "GATEWAY_RECORDS_URL": f"sqlite:///{tmp_path / 'pairs.db'}",
    }
    with gateway_process(env, output=subprocess.PIPE, graceful=False) as served:
        yield served


def chat(*texts: str, **fields: object) -> dict[str, object]:
    """A chat whose earlier turns are the child's; the last text may cue the fake upstream."""
    turns = [{"role": "user", "content": CHILD}, {"role": "assistant", "content": "Giỏi lắm!"}]
    turns += [{"role": "user", "content": text} for text in texts]
    return {"model": MODEL, "messages": turns, **fields}


def hostile_requests(url: str) -> list[httpx.Response]:
    """Everything a careless or hostile client might send, each carrying the child's text."""
    good = {"authorization": f"Bearer {KEY}"}
    completions, models = url + "/v1/chat/completions", url + "/v1/models"
    sent = []
    with httpx.Client(timeout=10.0) as client:

        def post(body: object, headers: dict[str, str] = good, path: str = completions) -> None:
            content = body if isinstance(body, bytes) else orjson.dumps(body)
            sent.append(client.post(path, content=content, headers=headers))

        post(chat(user=CHILD))
        post(chat(stream=True))
        post({"model": MODEL, "prompt": CHILD}, path=url + "/v1/completions")
        for wrong in (f"Bearer {KEY[:-1]}", f"Basic {KEY}", f"Bearer {ADMIN}", KEY, ""):
            post(chat(), {"authorization": wrong})
        post(b'{"model": "' + CHILD.encode() + b'", "messages": [}')  # malformed
        post(chat(**{CHILD: CHILD}))  # an unknown field named by the child's text
        post(chat(temperature=CHILD, logit_bias={CHILD: CHILD}))  # wrong types
        post(chat(structured_outputs={"x": [[[[CHILD]]]], "y": json.loads("[" * 80 + "]" * 80)}))
        post(orjson.dumps(chat()).replace("Bống".encode(), b"B\xff\xfeng"))  # invalid UTF-8
        post(chat(CHILD * 3000))  # larger than the limit
        for cue in ("status:400", "status:422", "status:500", "garbage", "hang"):
            post(chat(cue))  # the engine refuses, fails, talks nonsense or stalls
        for cue in ("malformed-sse", "reset-mid-stream"):
            post(chat(cue, stream=True))  # the engine fails mid-stream
        sent.append(client.get(models, headers=good))
        sent.append(client.get(models, headers={"authorization": f"Bearer {ADMIN}"}))
        sent.append(client.get(url + "/admin/report", headers=good))  # the API key is not it
        sent.append(client.post(url + "/admin/reload", headers={"authorization": KEY}))
        sent.append(client.get(url + "/admin/report?format=text", headers=bearer(ADMIN)))
        sent.append(client.options(completions, headers={"origin": "https://evil.example"}))
    return sent


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_no_key_token_or_child_text_in_logs_metrics_answers_or_records(
    served: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    url, process = served
    responses = hostile_requests(url)
    statuses = {response.status_code for response in responses}
    assert {200, 400, 401, 413, 422, 502, 504} <= statuses
    time.sleep(1.5)  # the shadow calls of the last requests finish
    metrics = httpx.get(url + "/metrics").text
    assert 'status="401"' in metrics  # the failures were counted, by status only
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Application startup complete" in output  # at debug, today no line says more
    with sqlite3.connect(tmp_path / "pairs.db") as db:
        assert db.execute("SELECT count(*) FROM pairs").fetchone()[0] > 0
    records = b"".join(path.read_bytes() for path in tmp_path.glob("pairs.db*"))
    for secret in SECRETS:
        assert secret not in output
        assert secret not in metrics
        assert secret.encode() not in records
        for response in responses:
            assert secret not in response.text, (response.status_code, response.text)
            assert secret not in str(response.headers)
    for response in responses:
        assert "access-control-allow-origin" not in response.headers
