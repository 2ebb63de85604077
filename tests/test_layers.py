"""The package's layers, read from its import statements: what each part may reach, and no cycle.

Every import counts, wherever it stands: at the top, inside a function, or under
`TYPE_CHECKING`. A module reaches what it imports and everything that reaches in turn.

    gateway.cli, gateway.app, gateway.admin     compose the rest
    gateway.report, gateway.eval                 read records and pairs; never serve
    gateway.proxy                                the hot path
    gateway.records                              stores pairs
    gateway.ratelimit                            counts clients' use against their limits
    gateway.shadow                               mirrors and pairs answers
    gateway.http                                 serves HTTP/1.1 to clients
    backends                                     engines' adapters, errors, the Backend protocol
    backends.transport                           HTTP/1.1 client, write batching, polling, turns
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "backends", "tests.engines")

# What composes the gateway: nothing below may reach it.
TOP = ("gateway.app", "gateway.admin", "gateway.cli", "gateway.settings")
READERS = ("gateway.report", "gateway.eval")  # read stored pairs and datasets, never serve

# (part, parts it must never reach, directly or through another module)
FORBIDDEN = [
    ("backends", ("gateway", "tests")),
    ("backends.transport", ("backends.base", "backends.registry", "backends.openai_http")),
    ("gateway", ("tests",)),
    (
        "gateway.http",
        (
            *TOP,
            *READERS,
            "gateway.proxy",
            "gateway.shadow",
            "gateway.records",
            "gateway.tasks",
            "gateway.metrics",
        ),
    ),
    ("gateway.shadow", (*TOP, *READERS, "gateway.proxy", "gateway.records")),
    ("gateway.records", (*TOP, *READERS, "gateway.proxy")),
    (
        "gateway.ratelimit",
        (*TOP, *READERS, "gateway.proxy", "gateway.shadow", "gateway.records", "gateway.http"),
    ),
    ("gateway.proxy", (*READERS, "gateway.app", "gateway.admin", "gateway.cli")),
    ("gateway.report", ("gateway.proxy", "gateway.app", "gateway.admin", "gateway.cli")),
    ("gateway.eval", ("gateway.proxy", "gateway.shadow", "gateway.records", "gateway.app")),
]


def module_files() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        folder = ROOT.joinpath(*package.split("."))
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not path.name.startswith("test_"):
                yield name, path


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules `name` imports; `from a import b` counts as `a.b` when it is one."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {module for module in found if module in known}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = dict(module_files())
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def within(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


@pytest.mark.parametrize(("part", "forbidden"), FORBIDDEN, ids=[rule[0] for rule in FORBIDDEN])
def test_a_layer_never_reaches_what_sits_above_it(
    graph: dict[str, set[str]], part: str, forbidden: tuple[str, ...]
) -> None:
    breaches = sorted(
        f"{module} -> {target}"
        for module in graph
        if within(module, part)
        for target in reach(graph, module)
        if any(within(target, bad) for bad in forbidden)
        and not within(target, part)  # a part's own modules are its own business
    )
    assert breaches == []


def test_no_import_cycle_remains(graph: dict[str, set[str]]) -> None:
    cycles = sorted({" -> ".join(sorted(reach_loop)) for reach_loop in strongly_connected(graph)})
    assert cycles == []


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Components of more than one module (or a module importing itself): each is a cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_sees_a_cycle_and_a_breach() -> None:
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": set()}
    assert strongly_connected(graph) == [{"a", "b"}]
    assert reach(graph, "c") == {"d"}


def test_packages_are_parts_of_packages_not_their_siblings() -> None:
    assert within("gateway.http.server", "gateway.http")
    assert not within("gateway.httpx", "gateway.http")


def test_the_http_server_loads_neither_the_shadow_nor_the_report_libraries() -> None:
    """Serving HTTP needs none of jsonschema (shadow comparison) or prometheus (metrics)."""
    code = (
        "import sys, gateway.http.server, gateway.http.cycle\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert "jsonschema" not in loaded
    assert "prometheus_client" not in loaded
