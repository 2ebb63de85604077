"""`gateway eval`: a labelled dataset through one or more targets, scored against gold labels.

A target is an OpenAI base URL. When its `/v1/models` lists the task's alias (a gateway
serving the task) the eval sends the exchange as a client does; otherwise (an engine, directly)
it builds the task's prompt itself with the same `Task.build`, so both see identical prompts.

Example::

    gateway eval --dataset prompts/tagger/dataset.jsonl --split test \\
        --target vllm=http://127.0.0.1:8080/v1 --target trt=http://127.0.0.1:8081/v1 \\
        --format html --output tagger-test.html
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter
from typing import Any, TextIO

import aiohttp
import orjson

from gateway.eval import render as report
from gateway.eval.predictions import Example, Prediction, Run, label_text
from gateway.eval.summary import summarize
from gateway.tasks.config import TaskConfigError
from gateway.tasks.task import DEBUG_HEADER, Task, load_tasks

TIMEOUT = aiohttp.ClientTimeout(total=120.0, sock_connect=5.0)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str  # the OpenAI base URL, ending in /v1

    @classmethod
    def parse(cls, text: str) -> Target:
        name, sep, url = text.partition("=")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
        url = url.rstrip("/")
        return cls(name, url if url.endswith("/v1") else url + "/v1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=Path, required=True, help="labelled JSONL")
    parser.add_argument("--split", choices=("test", "dev", "all"), default="test")
    parser.add_argument("--task", default="tagger", help="the task alias (default: tagger)")
    parser.add_argument("--tasks-dir", type=Path, default=Path("prompts"))
    parser.add_argument(
        "--target", type=Target.parse, action="append", required=True, metavar="NAME=URL",
        help="an OpenAI base URL: the gateway, or an engine directly (repeat for several)",
    )  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight per target")
    parser.add_argument("--api-key", default=None, help="bearer key sent to every target")
    parser.add_argument("--format", choices=("text", "json", "html"), default="text")
    parser.add_argument("--output", type=Path, default=None, help="file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    """The `gateway eval` command; 0 when every target was scored."""
    try:
        task = load_tasks(args.tasks_dir)[args.task]
    except TaskConfigError as exc:
        return _fail(str(exc))
    except KeyError:
        return _fail(f"no task '{args.task}' in {args.tasks_dir}")
    try:
        examples = load_examples(args.dataset, task, args.split)
    except (OSError, ValueError, KeyError) as exc:
        return _fail(f"{args.dataset}: {exc}")
    if len({target.name for target in args.target}) < len(args.target):
        return _fail("target names must differ")
    try:
        runs = asyncio.run(_run_all(task, examples, args))
    except EvalError as exc:
        return _fail(str(exc))
    summary = summarize(
        task,
        examples,
        runs,
        dataset=str(args.dataset),
        split=args.split,
        concurrency=args.concurrency,
        created=datetime.now(UTC),
    )
    text = report.render(summary, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


class EvalError(Exception):
    """A target that cannot be evaluated at all (unreachable, lists no model)."""


def load_examples(path: Path, task: Task, split: str) -> list[Example]:
    """The rows of `split` as client payloads with gold labels as text."""
    columns = task.config.dataset.exchange if task.config.dataset else {}
    if not columns:
        raise ValueError(f"task '{task.alias}' has no [dataset] section")
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if split != "all" and row.get("split") != split:
            continue
        messages = [{"role": role, "content": row[column]} for role, column in columns.items()]
        gold = {field: label_text(row[field]) for field in task.fields}
        examples.append(Example(str(row.get("id", number)), {"messages": messages}, gold))
    if not examples:
        raise ValueError(f"no examples in split '{split}'")
    return examples


async def _run_all(task: Task, examples: list[Example], args: argparse.Namespace) -> list[Run]:
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    runs = []
    # One target after another: a gateway and the engine behind it must not share the load.
    for target in args.target:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(
            connector=connector, timeout=TIMEOUT, headers=headers
        ) as session:
            runs.append(await _run_target(session, task, target, examples, args.concurrency))
    return runs


async def _run_target(
    session: aiohttp.ClientSession,
    task: Task,
    target: Target,
    examples: Sequence[Example],
    concurrency: int,
) -> Run:
    mode, model = await _mode(session, task, target)
    progress = Progress(len(examples), target.name)
    gate = asyncio.Semaphore(concurrency)
    await _predict(session, task, target.url, mode, model, examples[0])  # warms the prefix cache

    async def one(example: Example) -> Prediction:
        async with gate:
            prediction = await _predict(session, task, target.url, mode, model, example)
        progress.advance()
        return prediction

    predictions = await asyncio.gather(*(one(example) for example in examples))
    progress.close()
    return Run(target.name, target.url, mode, model, list(predictions))


async def _mode(session: aiohttp.ClientSession, task: Task, target: Target) -> tuple[str, str]:
    """("gateway", alias) when the target serves the task, else ("direct", its model)."""
    try:
        async with session.get(target.url + "/models") as response:
            data = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise EvalError(f"target '{target.name}' ({target.url}) is unreachable: {exc}") from None
    try:
        ids = [str(model["id"]) for model in orjson.loads(data)["data"]]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        ids = []
    if status != 200 or not ids:
        raise EvalError(f"target '{target.name}' lists no model at {target.url}/models")
    if task.alias in ids:
        return "gateway", task.alias
    return "direct", ids[0]


async def _predict(
    session: aiohttp.ClientSession,
    task: Task,
    url: str,
    mode: str,
    model: str,
    example: Example,
) -> Prediction:
    if mode == "gateway":
        body: dict[str, Any] = {"model": model, **example.payload}
        headers = {DEBUG_HEADER: "raw"}
    else:
        body, headers = task.build(example.payload, model), {}
    started = perf_counter()
    try:
        async with session.post(url + "/chat/completions", json=body, headers=headers) as response:
            data = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Prediction.failed(f"{type(exc).__name__}: {exc}", perf_counter() - started)
    elapsed = perf_counter() - started
    try:
        completion = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Prediction.failed(f"HTTP {status}: not JSON", elapsed)
    if status != 200:
        message = (completion.get("error") or {}).get("message", "") if completion else ""
        return Prediction.failed(f"HTTP {status}: {message}", elapsed)
    return Prediction.read(task, mode, completion, elapsed)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per quarter otherwise."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = total, label, 0
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._shown = -1

    def advance(self) -> None:
        self.done += 1
        step = self.done * 4 // self.total
        if self._tty:
            filled = self.done * 30 // self.total
            bar = "#" * filled + "." * (30 - filled)
            self._stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
        elif step != self._shown:
            self._shown = step
            self._stream.write(f"{self.label}: {self.done}/{self.total}\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def _fail(message: str) -> int:
    print(f"gateway eval: {message}", file=sys.stderr)
    return 1
