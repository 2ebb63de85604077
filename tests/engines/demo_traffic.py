"""The demo's clients: a few tagger exchanges shown with their labels, then a batch mirrored.

Everything goes through the gateway with the official `openai` SDK, as the app sends it: the
exchange to the `tagger` alias, and once the app's own request from before the alias (its
system prompt and a `[CONTEXT]` block) with only `model` changed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai

DATASET = Path(__file__).resolve().parents[2] / "prompts" / "tagger" / "dataset.jsonl"
SHOWN = ("t0001", "t0050", "t0262", "t0431")  # test split: exchanges the model never saw
REQUESTS = 150  # mirrored exchanges: the test split, then dev
APP_SYSTEM = "You are a high-speed, accurate Mood & Celebrate Tagger..."  # the app's, replaced


def rows() -> list[dict[str, Any]]:
    lines = DATASET.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def exchange(row: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": row["child"]},
        {"role": "assistant", "content": row["pika"]},
    ]


def show_exchanges(url: str) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="demo")
    by_id = {row["id"]: row for row in rows()}
    print("demo: exchanges of the dataset's test split through the alias: model='tagger'")
    for key in SHOWN:
        row = by_id[key]
        raw = client.chat.completions.with_raw_response.create(
            model="tagger",
            messages=exchange(row),  # type: ignore[arg-type]
        )
        labels = raw.parse().choices[0].message.content
        gold = json.dumps({"mood": row["mood"], "celebrate": row["celebrate"]})
        print(f"  child: {row['child']}\n  Pika:  {row['pika']}")
        print(f"  -> {labels}   (dataset: {gold.replace(' ', '')})")
        backend, overhead = raw.headers["x-gateway-backend"], raw.headers["x-gateway-overhead-ms"]
        print(f"     x-gateway-backend {backend}, x-gateway-overhead-ms {overhead}")
    row = by_id[SHOWN[0]]
    block = f'[CONTEXT]\nuser_last_message: "{row["child"]}"\npika_response: "{row["pika"]}"'
    app = [{"role": "system", "content": APP_SYSTEM}, {"role": "user", "content": block}]
    answer = client.chat.completions.create(model="tagger", messages=app)  # type: ignore[arg-type]
    print("demo: the app's own request (system prompt + [CONTEXT] block), only `model` changed:")
    print(f"  -> {answer.choices[0].message.content}")


def mirror(url: str) -> None:
    """The first ``REQUESTS`` exchanges (test split first), each mirrored to the candidate;
    returns once every shadow call has finished."""
    client = openai.OpenAI(base_url=url + "/v1", api_key="demo")
    chosen = sorted(rows(), key=lambda row: row["split"] != "test")[:REQUESTS]

    def one(row: dict[str, Any]) -> None:
        client.chat.completions.create(model="tagger", messages=exchange(row))  # type: ignore[arg-type]

    print(f"demo: sending {REQUESTS} exchanges, each mirrored to the shadow backend")
    with ThreadPoolExecutor(4) as pool:
        for done, _ in enumerate(pool.map(one, chosen), start=1):
            if done % 50 == 0:
                print(f"  {done}/{REQUESTS}")
    _wait_for_shadows(url)


def _wait_for_shadows(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:  # noqa: S310
            metrics = response.read().decode()
        sampled = _total(metrics, "gateway_shadow_sampled_total")
        finished = _total(metrics, "gateway_shadow_completed_total")
        finished += _total(metrics, "gateway_shadow_dropped_total")
        if finished >= sampled:
            return
        time.sleep(0.5)


def _total(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name)
    )


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with status {process.returncode}")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url + "/ready", timeout=2) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")
