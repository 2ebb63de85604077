"""Sort py-spy's collapsed stacks into the steps of the hot path, in microseconds per request.

A sample is one line ``frame;frame;...;frame COUNT`` (root first), each frame
``function (file:line)``. Its step is found by walking from the leaf to the root: the first frame
a rule recognises names the step, so library code is charged to the step that called it
(``asyncio.wait`` under ``until_disconnect`` is the watcher's). Non-blocking sampling can cut a
stack short at the root end; the leaf, which decides most steps, survives.

    >>> classify([Frame("parse_body", "gateway/proxy/parsing.py", 25)])
    'orjson parse of the request (parse_body)'
"""

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    function: str
    file: str
    line: int


Stack = Sequence[Frame]
Rule = tuple[str, Callable[[Frame, Stack], bool]]


def _under(stack: Stack, function: str) -> bool:
    return any(frame.function == function for frame in stack)


WATCHER = "disconnect watcher (until_disconnect; under uvicorn's protocol a timer, a task)"
WRITES = "socket writes, gathered per turn of the loop (backends/transport/write_batch.py)"
SHADOW_FILES = (
    "gateway/shadow/leg.py",
    "gateway/shadow/legs.py",
    "gateway/shadow/compare.py",
    "gateway/shadow/pairs.py",
    "gateway/records/store.py",
    "gateway/records/redaction.py",
    "gateway/records/schema.py",
    "gateway/records/sqlite.py",
)
SEND = "response send (head and body writes: gateway/http/cycle.py, or uvicorn's)"
SERVER_SENDS = (
    "Cycle.send",
    "Cycle._start",
    "Cycle._body",
    "Cycle._flush_head",
    "HTTPProtocol.write",
)
RECEIVES = ("RequestResponseCycle.receive", "Cycle.receive")
RULES: list[Rule] = [
    ("body validation (gateway/proxy/plain_bodies.py; pydantic for other bodies)",
     lambda f, s: "pydantic" in f.file or f.file == "gateway/proxy/plain_bodies.py"),
    ("metrics (prometheus_client labels/inc/observe)",
     lambda f, s: "prometheus_client" in f.file or f.file == "gateway/metrics.py"),
    (WRITES, lambda f, s: f.file == "backends/transport/write_batch.py"),
    (SEND, lambda f, s: f.function == "RequestResponseCycle.send"),
    (SEND, lambda f, s: f.file.startswith("gateway/") and f.function in SERVER_SENDS),
    ("body read (read_body, the server's receive)",
     lambda f, s: f.function == "read_body"
     or (f.function in RECEIVES and _under(s, "read_body"))),
    (WATCHER, lambda f, s: f.function == "until_disconnect" or f.function in RECEIVES),
    (WATCHER, lambda f, s: f.file == "asyncio/tasks.py" and f.function.startswith("_wait")),
    ("aiohttp: read the answer (protocol, parser, ClientResponse)",
     lambda f, s: "aiohttp/" in f.file and ("client_proto" in f.file or "streams" in f.file
                                            or f.function.startswith("ClientResponse."))),
    ("aiohttp: send the request (session, connector, writer, timers)",
     lambda f, s: "aiohttp/" in f.file),
    ("upstream client (backends/transport/: pool, socket write, httptools parse, timers)",
     lambda f, s: f.file.startswith("backends/transport/")),
    ("stream relay (gateway/proxy/relay.py, the guard's stream wrapper)",
     lambda f, s: f.file == "gateway/proxy/relay.py" or f.function == "Guarded._relay"),
    ("orjson parse of the request (parse_body)", lambda f, s: f.function == "parse_body"),
    ("backend adapter (openai_http: answer check, SSE events, model rename)",
     lambda f, s: f.file.startswith("backends/")),
    ("uvicorn + httptools: parse, new request, start the ASGI task",
     lambda f, s: f.function.startswith("HttpToolsProtocol.")),
    ("HTTP protocol (gateway/http/server.py): parse, new request, start the ASGI task",
     lambda f, s: f.file in ("gateway/http/server.py", "gateway/http/cycle.py")),
    ("uvicorn: run_asgi, ProxyHeadersMiddleware",
     lambda f, s: f.function.startswith("RequestResponseCycle.") or "proxy_headers" in f.file),
    ("shadow leg and record writer (gateway/shadow/leg.py, legs, compare, records*, redaction)",
     lambda f, s: f.file in SHADOW_FILES),
    ("gateway: dispatch, auth, routing, Exchange, headers",
     lambda f, s: f.file.startswith("gateway/")),
    ("event loop (uvloop: epoll, transports, callbacks, task steps)",
     lambda f, s: f.function == "Runner.run"),
]  # fmt: skip
ASYNCIO = "asyncio internals, caller unknown (stack cut short)"
UNRESOLVED = "unresolved (empty stack)"


def parse_frame(text: str) -> Frame:
    """``'parse_body (gateway/proxy/parsing.py:25)'`` -> Frame; odd frames keep their text."""
    match = FRAME.match(text)
    if match is None:
        return Frame(text, "", 0)
    return Frame(match["function"], match["file"], int(match["line"] or 0))


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """py-spy ``--format raw`` output -> (frames root first, sample count) pairs."""
    samples = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if count.isdigit():
            frames = [parse_frame(part) for part in stack.split(";") if part]
            samples.append((frames, int(count)))
    return samples


def classify(frames: Stack) -> str:
    """The step of one stack: the first rule matching a frame, walking from the leaf."""
    for depth in range(len(frames) - 1, -1, -1):
        for step, matches in RULES:
            if matches(frames[depth], frames[:depth]):
                return step
    if any(frame.file.startswith("asyncio/") for frame in frames):
        return ASYNCIO
    return UNRESOLVED


def breakdown(samples: Iterable[tuple[list[Frame], int]]) -> Counter[str]:
    """Samples per step."""
    counts: Counter[str] = Counter()
    for frames, count in samples:
        counts[classify(frames)] += count
    return counts


def render(counts: Counter[str], us_per_request: float, unit: str = "request") -> str:
    """Markdown table, biggest step first: share of busy samples and microseconds per request
    (or per relayed chunk: ``unit``)."""
    total = sum(counts.values()) or 1
    lines = [f"| step | share of gateway CPU | µs per {unit} |", "|---|---|---|"]
    for step, count in counts.most_common():
        share = count / total
        lines.append(f"| {step} | {share:.1%} | {share * us_per_request:.1f} |")
    lines.append(f"| **total** | 100 % | {us_per_request:.1f} |")
    return "\n".join(lines)
