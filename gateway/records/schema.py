"""The `pairs` table: one row per `PairRecord`, legs flattened to `primary_*` / `candidate_*`.

Both stores share this mapping; only the column types differ (JSON is TEXT in SQLite, JSONB in
PostgreSQL). Example::

    row = to_row(pair)            # values in the order of NAMES
    assert from_row(row) == pair
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any, Literal, cast

import orjson

from backends.sampling import Sampling
from gateway.probes import ProbeResult
from gateway.shadow.pairs import Divergence, Leg, PairKind, PairRecord, Params

ColumnType = Literal["text", "int", "real", "json"]

PAIR_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("pair_id", "text"),
    ("created_at", "real"),
    ("kind", "text"),
    ("public_model", "text"),
    ("path", "text"),
    ("request_hash", "text"),
    ("request", "text"),
    ("params", "json"),
    ("prompt_version", "text"),
    ("extra", "json"),
    ("prompt_diff", "int"),
    ("divergence", "json"),
    ("route", "text"),
)
LEG_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("backend", "text"),
    ("status", "int"),
    ("text", "text"),
    ("finish_reason", "text"),
    ("prompt_tokens", "int"),
    ("completion_tokens", "int"),
    ("ttft_ms", "real"),
    ("e2e_ms", "real"),
    ("error", "text"),
    ("parsed", "json"),
    ("sampling", "json"),
    ("prompt_digest", "text"),
    ("output_ids", "json"),
    ("endpoint", "text"),
)
LEGS = ("primary", "candidate")
COLUMNS = PAIR_COLUMNS + tuple(
    (f"{leg}_{name}", kind) for leg in LEGS for name, kind in LEG_COLUMNS
)
NAMES = tuple(name for name, _ in COLUMNS)
# Columns added after stores were first made; `upgrade_statements` adds them to an older table.
ADDED = frozenset(
    {"prompt_diff", "divergence", "route"}
    | {f"{leg}_{name}" for leg in ("primary", "candidate")
       for name in ("sampling", "prompt_digest", "output_ids", "endpoint")}
)  # fmt: skip
_REQUIRED = {"pair_id", "created_at", "kind", "public_model", "path", "request_hash", "params"}
_REQUIRED |= {"extra"} | {f"{leg}_{name}" for leg in LEGS for name in ("backend", "status")}
_PARAM_NAMES = tuple(f.name for f in fields(Params))
_PARAM_FIELDS = set(_PARAM_NAMES)


def create_statements(types: Mapping[ColumnType, str]) -> list[str]:
    """DDL for the table and its index, given the dialect's name for each column type.

    Reads select everything or from a time on (`created_at`), and purges go by time. An index
    on `kind`, which no query used, slowed every insert (benchmarks/README.md, optimisation
    log): stores made before lose it on their next start."""
    columns = ",\n    ".join(
        f"{name} {types[kind]}{' NOT NULL' if name in _REQUIRED else ''}"
        + (" PRIMARY KEY" if name == "pair_id" else "")
        for name, kind in COLUMNS
    )
    return [
        f"CREATE TABLE IF NOT EXISTS pairs (\n    {columns}\n)",
        "CREATE INDEX IF NOT EXISTS pairs_created_at ON pairs (created_at)",
        "DROP INDEX IF EXISTS pairs_kind",
    ]


# Columns renamed since stores were first made: new name, old name. `route` held the path
# until routes (a model's backends) came, and took the name.
RENAMED = {"path": "route"}


def upgrade_statements(existing: set[str], types: Mapping[ColumnType, str]) -> list[str]:
    """ALTER statements that give a table made by an older gateway the columns it lacks."""
    statements = []
    present = set(existing)
    for new, old in RENAMED.items():
        if new not in present and old in present:
            statements.append(f"ALTER TABLE pairs RENAME COLUMN {old} TO {new}")
            present = (present - {old}) | {new}
    statements += [
        f"ALTER TABLE pairs ADD COLUMN {name} {types[kind]}"
        for name, kind in COLUMNS
        if name in ADDED and name not in present
    ]
    return statements


# The latest conformance probe result of each backend and check (`gateway.probes`).
PROBE_COLUMNS = ("backend", "probe", "outcome", "detail", "at")


def probe_statements(types: Mapping[ColumnType, str]) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS probes (backend {types['text']} NOT NULL, "
        f"probe {types['text']} NOT NULL, outcome {types['text']} NOT NULL, "
        f"detail {types['text']} NOT NULL, at {types['real']} NOT NULL, "
        "PRIMARY KEY (backend, probe))"
    ]


def probe_row(result: ProbeResult) -> tuple[Any, ...]:
    return result.backend, result.check, result.outcome, result.detail, result.at


def probe_from_row(row: Sequence[Any]) -> ProbeResult:
    backend, check, outcome, detail, at = row
    return ProbeResult(backend, check, outcome, detail, float(at))


def dump_json(value: Any) -> str:
    # Never fails on odd values a parser let through: NaN becomes null, unknown types their str.
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def load_json(value: Any) -> Any:
    # SQLite hands back the text; psycopg has already decoded JSONB.
    return orjson.loads(value) if isinstance(value, str) else value


def to_row(record: PairRecord) -> tuple[Any, ...]:
    """The record's column values in the order of `NAMES`, JSON columns as text."""
    divergence = None if record.divergence is None else dump_json(asdict(record.divergence))
    head = (
        record.pair_id, record.created_at, record.kind, record.public_model, record.path,
        record.request_hash, record.request, dump_json(_params_dict(record.params)),
        record.prompt_version, dump_json(record.extra), record.prompt_diff, divergence,
        record.route,
    )  # fmt: skip
    return head + _leg_row(record.primary) + _leg_row(record.candidate)


def _params_dict(params: Params) -> dict[str, Any]:
    # Shallow, unlike dataclasses.asdict, which deep-copies the schema only to be serialised.
    return {name: getattr(params, name) for name in _PARAM_NAMES}


def _leg_row(leg: Leg) -> tuple[Any, ...]:
    parsed = None if leg.parsed is None else dump_json(leg.parsed)
    sampling = None if leg.sampling is None else dump_json(leg.sampling.as_dict())
    output_ids = None if leg.output_ids is None else dump_json(leg.output_ids)
    return (
        leg.backend, leg.status, leg.text, leg.finish_reason, leg.prompt_tokens,
        leg.completion_tokens, leg.ttft_ms, leg.e2e_ms, leg.error, parsed, sampling,
        leg.prompt_digest, output_ids, leg.endpoint,
    )  # fmt: skip


def from_row(row: Sequence[Any]) -> PairRecord:
    """The record a row of `NAMES` holds."""
    values = dict(zip(NAMES, row, strict=True))
    return PairRecord(
        pair_id=values["pair_id"],
        created_at=float(values["created_at"]),
        kind=cast(PairKind, values["kind"]),
        public_model=values["public_model"],
        path=values["path"],
        request_hash=values["request_hash"],
        request=values["request"],
        params=_params(load_json(values["params"])),
        primary=_leg(values, "primary"),
        candidate=_leg(values, "candidate"),
        prompt_version=values["prompt_version"],
        extra=load_json(values["extra"]),
        prompt_diff=values["prompt_diff"],
        divergence=_divergence(load_json(values["divergence"])),
        route=values["route"],
    )


def _params(data: dict[str, Any]) -> Params:
    # Keys a newer or older Params does not know are ignored, so old rows stay readable.
    known = {key: value for key, value in data.items() if key in _PARAM_FIELDS}
    return Params(**(known | {"stop": tuple(known.get("stop") or ())}))


def _leg(values: Mapping[str, Any], leg: str) -> Leg:
    own = {name: values[f"{leg}_{name}"] for name, _ in LEG_COLUMNS}
    sampling = load_json(own["sampling"])
    output_ids = load_json(own["output_ids"])
    return Leg(
        **own
        | {
            "parsed": load_json(own["parsed"]),
            "sampling": None if sampling is None else Sampling.from_dict(sampling),
            "output_ids": None if output_ids is None else tuple(output_ids),
        }
    )


def _divergence(data: dict[str, Any] | None) -> Divergence | None:
    return None if data is None else Divergence(**data)
