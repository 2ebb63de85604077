"""`gateway report`: the shadow report and cutover verdict, from the stored pairs.

Exit status: 0 when the candidate passes the gate (on every route reported), 1 when it fails
(on any), 2 for a usage or configuration error (bad flag, bad settings, unreadable store, a
route that is not there), so a deploy can be gated on it.

Example::

    gateway report --since 24h --format html --output shadow.html --max-p95-ratio 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.gate_rule import METRICS, GateRule
from gateway.probes import ProbeResult
from gateway.records.base import StoreError
from gateway.records.store import open_store
from gateway.report.routes import UnknownRoute, passed, render_routes, summarize_routes
from gateway.shadow.pairs import PairRecord

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
FORMATS = ("text", "json", "html")
# CLI flag -> GateRule field, with the type that checks the flag's value.
GATE_FLAGS = {
    "min_pairs": "count",
    "min_noise_pairs": "count",
    "max_agreement_drop": "share",
    "max_p95_ratio": "ratio",
    "max_error_rate": "share",
    "max_schema_violations": "share",
    "max_parity_flagged": "share",
}


def parse_since(text: str, now: float) -> float:
    """Unix seconds from a duration back from `now` (`90s`, `30m`, `6h`, `7d`, `2w`) or an ISO
    8601 time (UTC when it names no zone). ValueError when it is neither."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if match:
        return now - float(match[1]) * UNITS[match[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: give a duration (90s, 30m, 6h, 7d, 2w) or an ISO 8601 time"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


CHECKS = {"count": _count, "share": _share, "ratio": _ratio}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", help="only pairs from this long ago (30m, 6h, 7d) or this ISO time on"
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="default: text")
    parser.add_argument("--route", help="one route (model name); default: every route")
    parser.add_argument("--output", type=Path, help="write the report here instead of stdout")
    parser.add_argument(
        "--agreement", choices=METRICS, help="agreement measure the gate uses (GATEWAY_GATE_*)"
    )
    for name, kind in GATE_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=CHECKS[kind], help=f"GATEWAY_GATE_{name.upper()}")


def run(
    args: argparse.Namespace,
    rule: GateRule,
    records_url: str,
    routes: Mapping[str, GateRule] | None = None,
    shadowing: Collection[str] = (),
) -> int:
    """The command, on the configured rule (`Settings.gate_rule`), each route's own (`routes`,
    `shadowing`: those reported even without pairs) and the records; flags override every
    rule."""
    try:
        since = parse_since(args.since, time.time()) if args.since else None
    except ValueError as exc:
        return _fail(str(exc))
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in [*GATE_FLAGS, "agreement"]
        if getattr(args, name) is not None
    }
    rule = replace(rule, **overrides)
    rules = {name: replace(own, **overrides) for name, own in (routes or {}).items()}
    try:
        pairs, probes = asyncio.run(read_records(records_url, since))
    except StoreError as exc:
        return _fail(f"cannot read the records: {exc}")
    start = None if since is None else datetime.fromtimestamp(since, UTC).isoformat()
    try:
        reports = summarize_routes(pairs, rules, rule, start, probes, args.route, shadowing)
    except UnknownRoute as exc:
        return _fail(str(exc))
    text = render_routes(reports, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror}")
    return 0 if passed(reports) else 1


async def read_records(url: str, since: float | None) -> tuple[list[PairRecord], list[ProbeResult]]:
    """The pairs since `since`, and the latest conformance probe of each backend and check."""
    store = open_store(url)
    try:
        return await store.read(since), await store.read_probes()
    finally:
        await store.close()


def _fail(message: str) -> int:
    print(f"gateway report: {message}", file=sys.stderr)
    return 2
