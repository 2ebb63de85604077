"""Pair storage and the recorder, one suite run against SQLite and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import sqlite3
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError

from backends.sampling import OPENAI_DEFAULTS, resolve
from gateway import cli
from gateway.probes import ProbeResult
from gateway.records.base import RecordStore, StoreError
from gateway.records.postgres import TYPES as POSTGRES_TYPES
from gateway.records.redaction import error_code, labels, redact, schema_enums
from gateway.records.schema import ADDED, COLUMNS, LEG_COLUMNS, NAMES, create_statements, to_row
from gateway.records.sqlite import ROWS_PER_INSERT, TYPES, SqliteStore
from gateway.records.sqlite import TYPES as SQLITE_TYPES
from gateway.records.store import Recorder, RecorderOptions, check_url, open_store, purge
from gateway.settings import Settings, describe_errors
from gateway.shadow import legs
from gateway.shadow.compare import compare
from gateway.shadow.evidence import prompt_digest
from gateway.shadow.pairs import Divergence, Leg, PairRecord, Params, sha256
from gateway.tasks.task import load_tasks

T = TypeVar("T")
DAY = 86400.0
# What a child wrote: it must never reach storage in `hashes` mode.
CHILD_TEXT = "Mi perro Toby se comió mis deberes de mates 🐶 y mañana hay examen — Lucía, 9 años"
CHILD_WORD = "Toby"
SCHEMA = {"type": "object", "properties": {"label": {"enum": ["homework", "other"]}}}
PROMPTS = Path(__file__).resolve().parents[3] / "prompts"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def make_pair(n: int = 0, *, created_at: float | None = None) -> PairRecord:
    """A pair with every field set, the candidate's leg failed on odd `n`."""
    body = f'{{"messages": [{{"role": "user", "content": "{CHILD_TEXT}"}}], "n": {n}}}'
    parsed = {"label": "homework", "confidence": 0.93, "flagged": False, "count": 2}
    primary = Leg(
        backend="vllm", status=200, text=f"{CHILD_TEXT} ({n})", finish_reason="stop",
        prompt_tokens=31, completion_tokens=12, ttft_ms=12.5, e2e_ms=140.25,
        parsed=parsed | {"quote": CHILD_TEXT, "spans": [[0, 4]], "meta": {"lang": "es"}},
        sampling=resolve({"seed": n}, {"temperature": 0.6, "top_k": 20}, OPENAI_DEFAULTS),
        prompt_digest=prompt_digest(range(31)), output_ids=tuple(range(100, 112)),
    )  # fmt: skip
    candidate = replace(primary, backend="trt", ttft_ms=9.75, e2e_ms=99.125)
    if n % 2:
        candidate = Leg(backend="trt", status=503, text=None, e2e_ms=3.5, error="unavailable")
    return PairRecord(
        pair_id=f"{n:06d}-{uuid.uuid4().hex[:8]}",
        created_at=1_750_000_000.123456 + n if created_at is None else created_at,
        kind="noise" if n % 3 == 2 else "shadow",
        public_model="phi-3-mini",
        path="/v1/chat/completions",
        request_hash=sha256(body),
        request=body,
        params=Params(
            stream=True,
            max_tokens=64,
            temperature=0.7,
            stop=("\n\n", "END"),
            schema=SCHEMA,
            response_format="json_schema",
        ),
        primary=primary,
        candidate=candidate,
        prompt_version="tagger-v3",
        extra={"parity": ["max_tokens"], "note": CHILD_TEXT, "retries": 1},
        prompt_diff=None if n % 2 else 7,
        divergence=None if n % 2 else Divergence("token", 3, "103", "9"),
    )


def config(**overrides: Any) -> Settings:
    return Settings(**overrides)


def options(**overrides: Any) -> RecorderOptions:
    """The recorder's options as the settings give them."""
    return config(**overrides).recorder_options()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session on the server ./dev test starts."""
    base = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
    if not base:
        pytest.fail(
            "GATEWAY_TEST_POSTGRES_URL is not set. Run the suite with `./dev test`, which starts "
            "a local PostgreSQL, or point it at a server: "
            "postgresql://user:password@host:port/postgres with a role that may CREATE DATABASE."
        )
    name = f"gateway_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(base)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store of each kind, as the URL an operator would set."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shadow.db'}"
    url: str = request.getfixturevalue("postgres_url")
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("DROP TABLE IF EXISTS pairs")
    return url


def raw_rows(url: str) -> str:
    """Everything stored, read straight from the database, not through the store."""
    if url.startswith("sqlite:"):
        path = Path(url.removeprefix("sqlite:///"))
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT * FROM pairs").fetchall()
        conn.close()
        return repr(rows) + path.read_bytes().decode("utf-8", "replace")
    with psycopg.connect(url, connect_timeout=5) as pg:
        return repr(pg.execute("SELECT to_jsonb(p)::text FROM pairs p").fetchall())


class CountingStore:
    """A real store that also notes the size of every batch it is given."""

    def __init__(self, inner: RecordStore) -> None:
        self.inner = inner
        self.batches: list[int] = []

    async def write_batch(self, records: Sequence[PairRecord]) -> None:
        self.batches.append(len(records))
        await self.inner.write_batch(records)

    async def read(self, since: float | None = None) -> list[PairRecord]:
        return await self.inner.read(since)

    async def purge(self, older_than: float) -> int:
        return await self.inner.purge(older_than)

    async def write_probes(self, results: Sequence[ProbeResult]) -> None:
        await self.inner.write_probes(results)

    async def read_probes(self) -> list[ProbeResult]:
        return await self.inner.read_probes()

    async def close(self) -> None:
        await self.inner.close()


def test_probe_results_keep_the_latest_of_each_backend_and_check(store_url: str) -> None:
    first = [ProbeResult("trt", "constraint", "fail", "ignored", 1.0),
             ProbeResult("trt", "seed", "pass", "same", 1.0)]  # fmt: skip
    later = [ProbeResult("trt", "constraint", "pass", "held", 2.0)]

    async def scenario() -> list[ProbeResult]:
        store = open_store(store_url)
        await store.write_probes(first)
        await store.write_probes(later)
        found = await store.read_probes()
        await store.close()
        return found

    assert run(scenario()) == [later[0], first[1]]


def store_in_hashes_mode(url: str, pairs: Sequence[PairRecord]) -> list[PairRecord]:
    """The pairs as a `hashes` mode recorder stores them, read back."""

    async def scenario() -> list[PairRecord]:
        recorder = Recorder(open_store(url), options(records_text="hashes"))
        for pair in pairs:
            recorder.record(pair)
        await recorder.close()
        assert recorder.written == len(pairs)
        return await read_all(url)

    return run(scenario())


def with_schema(pair: PairRecord, schema: dict[str, Any] | None) -> PairRecord:
    return replace(pair, params=replace(pair.params, schema=schema))


async def read_all(url: str, since: float | None = None) -> list[PairRecord]:
    store = open_store(url)
    try:
        return await store.read(since)
    finally:
        await store.close()


# Pure parts: schema, URLs, redaction.


def test_every_field_of_the_contract_has_a_column() -> None:
    pair_fields = {f.name for f in fields(PairRecord)} - {"primary", "candidate"}
    leg_fields = {f.name for f in fields(Leg)}
    assert pair_fields <= set(NAMES)
    assert leg_fields == {name for name, _ in LEG_COLUMNS}
    assert {f"{leg}_{name}" for leg in ("primary", "candidate") for name in leg_fields} <= set(
        NAMES
    )


@pytest.mark.parametrize(
    "url", ["sqlite:///var/shadow.db", "sqlite:////tmp/x.db", "postgresql://u:p@h:5432/db"]
)
def test_store_urls_are_accepted(url: str) -> None:
    assert check_url(url) in url
    assert Settings(records_url=url).records_url == url


def test_sqlite_urls_are_relative_or_absolute() -> None:
    relative, absolute = open_store("sqlite:///var/a.db"), open_store("sqlite:////srv/b.db")
    assert isinstance(relative, SqliteStore)
    assert isinstance(absolute, SqliteStore)
    assert (relative.path, absolute.path) == (Path("var/a.db"), Path("/srv/b.db"))


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "sqlite://", "sqlite:///", "shadow.db"])
def test_an_unknown_store_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(records_url=url)
    message = describe_errors(caught.value)
    assert message.startswith("GATEWAY_RECORDS_URL: must be sqlite:///")
    assert "secret" not in message
    with pytest.raises(ValueError, match="must be"):
        open_store(url)


def test_redact_keeps_hashes_labels_and_error_codes_only() -> None:
    pair = make_pair(1)
    hidden = redact(pair)
    assert hidden.request is None
    assert hidden.request_hash == pair.request_hash
    assert pair.primary.text is not None
    assert hidden.primary.text == f"sha256:{sha256(pair.primary.text)}"
    assert hidden.primary.parsed == {
        "label": "homework", "confidence": 0.93, "flagged": False, "count": 2
    }  # fmt: skip
    assert (hidden.candidate.text, hidden.candidate.error) == (None, "backend_unavailable")
    assert hidden.extra == {"retries": 1}
    restored = replace(hidden, request=None, primary=pair.primary, candidate=pair.candidate,
                       extra=pair.extra, divergence=pair.divergence)  # fmt: skip
    assert restored == replace(pair, request=None)
    assert hidden.primary.output_ids is None  # ids spell out the answer
    dropped = {"text", "parsed", "error", "output_ids"}
    kept = [field.name for field in fields(Leg) if field.name not in dropped]
    for before, after in ((pair.primary, hidden.primary), (pair.candidate, hidden.candidate)):
        assert [getattr(after, name) for name in kept] == [getattr(before, name) for name in kept]
    assert CHILD_WORD not in repr(hidden)


def test_redact_keeps_where_answers_part_but_not_what_they_say() -> None:
    pair = make_pair(2)
    assert pair.divergence is not None
    assert redact(pair).divergence == Divergence("token", 3)


@pytest.mark.parametrize("schema", [SCHEMA, None])
def test_redact_is_idempotent(schema: dict[str, Any] | None) -> None:
    pair = with_schema(make_pair(1), schema)
    once = redact(pair)
    assert redact(once) == once


def test_with_a_schema_labels_are_its_enum_values_numbers_and_booleans() -> None:
    values = {"mood": "happy", "topic": "fractions", "other": "happy", "n": 1, "x": 1.5,
              "ok": True, "none": None, "list": ["happy"]}  # fmt: skip
    enums = {"mood": frozenset({"happy", "sad"}), "topic": frozenset({"homework"})}
    assert labels(values, enums) == {"mood": "happy", "n": 1, "x": 1.5, "ok": True}


def test_without_a_schema_short_strings_are_kept_as_hashes() -> None:
    values = {"a": "x" * 64, "b": "x" * 65, "c": 1, "d": 1.5, "e": True, "f": None, "g": [1]}
    assert labels(values) == {"a": f"sha256:{sha256('x' * 64)}", "c": 1, "d": 1.5, "e": True}


def test_schema_enums_follow_refs_const_and_unions() -> None:
    schema = {  # as the openai SDK writes a pydantic model with an enum and an optional one
        "type": "object",
        "$defs": {"Mood": {"enum": ["happy", "sad"], "type": "string"}},
        "properties": {
            "mood": {"$ref": "#/$defs/Mood"},
            "maybe": {"anyOf": [{"$ref": "#/$defs/Mood"}, {"type": "null"}]},
            "kind": {"const": "tag"},
            "note": {"type": "string"},
            "loop": {"$ref": "#/properties/loop"},
        },
    }
    mood = frozenset({"happy", "sad"})
    assert schema_enums(schema) == {
        "mood": mood, "maybe": mood, "kind": frozenset({"tag"}), "note": frozenset(),
        "loop": frozenset(),
    }  # fmt: skip
    assert schema_enums({"type": "object"}) == {}
    assert schema_enums(None) is None


def test_a_short_child_sentence_in_a_parsed_field_is_not_stored(store_url: str) -> None:
    """Short enough to pass for a label, but not one of the schema's values: it goes. Without
    a schema it is kept only as a digest, so field agreement still counts."""
    sentence = "con tên Bống, 9 tuổi, nhà ở phố Hoa Sữa"  # a child's words, under 64 characters
    parsed = {"label": "homework", "reason": sentence, "flagged": False}
    base = make_pair(0)
    pairs = [
        replace(base, pair_id=f"p{i}", created_at=base.created_at + i,
                params=replace(base.params, schema=schema),
                primary=replace(base.primary, parsed=parsed, text=sentence))
        for i, schema in enumerate([SCHEMA, None])
    ]  # fmt: skip
    stored = store_in_hashes_mode(store_url, pairs)
    raw = raw_rows(store_url)
    assert "Bống" not in raw
    assert "Hoa Sữa" not in raw
    assert stored[0].primary.parsed == {"label": "homework", "flagged": False}
    assert stored[1].primary.parsed == {
        "label": f"sha256:{sha256('homework')}", "reason": f"sha256:{sha256(sentence)}",
        "flagged": False,
    }  # fmt: skip


def test_an_engine_error_echoing_the_request_is_stored_as_a_code(store_url: str) -> None:
    echo = f"invalid token in prompt: {CHILD_TEXT!r}"  # as an engine's 400 can quote its input
    base = make_pair(0)
    pairs = [
        replace(base, pair_id="rejected", candidate=legs.failed("trt", 400, echo, 3.0)),
        replace(base, pair_id="broken", candidate=legs.failed("trt", 502, echo, 3.0)),
        replace(base, pair_id="odd", primary=legs.failed("vllm", 422, echo, 3.0)),
    ]
    stored = store_in_hashes_mode(store_url, pairs)
    assert CHILD_WORD not in raw_rows(store_url)
    errors = [(p.primary.error, p.candidate.error) for p in stored]
    assert sorted(errors, key=str) == sorted(
        [(None, "invalid_request"), (None, "backend_protocol_error"), ("upstream_rejected", None)],
        key=str,
    )
    assert (error_code(499), error_code(504), error_code(599)) == (
        "client_closed", "backend_timeout", "upstream_failed"
    )  # fmt: skip


def test_the_taggers_labels_survive_hashes_mode() -> None:
    tagger = load_tasks(PROMPTS)["tagger"]
    parsed = tagger.expand("M")
    assert parsed == {"mood": "happy", "celebrate": True}
    pair = make_pair(0)
    pair = replace(
        pair,
        params=Params(max_tokens=1, temperature=0.0, schema=tagger.schema),
        primary=replace(pair.primary, text="M", parsed=parsed, completion_tokens=1),
        candidate=replace(pair.candidate, text="E", parsed=tagger.expand("E"), completion_tokens=1),
        extra={"primary_schema_valid": True, "candidate_schema_valid": True},
    )
    hidden = redact(pair)
    assert hidden.primary.parsed == parsed
    assert hidden.candidate.parsed == {"mood": "encouraging", "celebrate": False}
    compared = compare(hidden)
    assert (compared.status, compared.exact) == ("compared", False)
    assert compared.fields == {"celebrate": False, "mood": False}


# Both stores.


def test_full_records_round_trip(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(6)]

    async def scenario() -> list[PairRecord]:
        store = open_store(store_url)
        await store.write_batch(pairs[:3])
        await store.write_batch(pairs[3:])
        await store.close()
        return await read_all(store_url)

    assert run(scenario()) == pairs


def older_table(url: str) -> None:
    """The `pairs` table as gateways made it before the columns of `ADDED`, with one row."""
    sqlite = url.startswith("sqlite:")
    types = SQLITE_TYPES if sqlite else POSTGRES_TYPES
    columns = [(name, kind) for name, kind in COLUMNS if name not in ADDED]
    key = {"pair_id": " PRIMARY KEY"}
    ddl = ", ".join(f"{name} {types[kind]}{key.get(name, '')}" for name, kind in columns)
    row = dict(zip(NAMES, to_row(replace(make_pair(0), prompt_diff=None)), strict=True))
    values = [row[name] for name, _ in columns]
    marks = ", ".join("?" if sqlite else "%s" for _ in columns)
    insert = f"INSERT INTO pairs ({', '.join(n for n, _ in columns)}) VALUES ({marks})"  # noqa: S608
    if sqlite:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(f"CREATE TABLE pairs ({ddl})")
            conn.execute(insert, values)
        conn.close()
        return
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as pg:
        pg.execute(f"CREATE TABLE pairs ({ddl})")
        pg.execute(insert, values)


def test_a_store_made_by_an_older_gateway_gains_the_new_columns(store_url: str) -> None:
    """An upgraded gateway reads the pairs stored before, and stores new ones beside them."""
    older_table(store_url)
    newer = make_pair(2)

    async def scenario() -> list[PairRecord]:
        store = open_store(store_url)
        await store.write_batch([newer])
        await store.close()
        return await read_all(store_url)

    old, new = run(scenario())
    assert new == newer
    assert old.primary.text == make_pair(0).primary.text
    assert (old.primary.sampling, old.divergence, old.primary.output_ids) == (None, None, None)


def test_a_pair_already_stored_is_skipped_so_retries_are_safe(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(3)]

    async def scenario() -> list[PairRecord]:
        store = open_store(store_url)
        await store.write_batch(pairs[:2])
        await store.write_batch(pairs)
        await store.close()
        return await read_all(store_url)

    assert run(scenario()) == pairs


def test_a_batch_of_several_statements_is_stored_whole_and_retried_safely(
    store_url: str,
) -> None:
    # SQLite inserts ROWS_PER_INSERT rows per statement: a batch spans three here.
    pairs = [make_pair(n, created_at=1000.0 + n) for n in range(2 * ROWS_PER_INSERT + 7)]

    async def scenario() -> list[PairRecord]:
        store = open_store(store_url)
        await store.write_batch(pairs[ROWS_PER_INSERT - 1 : ROWS_PER_INSERT + 2])
        await store.write_batch(pairs)
        await store.close()
        return await read_all(store_url)

    assert run(scenario()) == pairs


def test_read_since_returns_newer_pairs_oldest_first(store_url: str) -> None:
    pairs = [make_pair(n, created_at=t) for n, t in enumerate([300.0, 100.0, 200.0, 200.5])]

    async def scenario() -> tuple[list[PairRecord], list[PairRecord]]:
        store = open_store(store_url)
        await store.write_batch(pairs)
        await store.close()
        return await read_all(store_url), await read_all(store_url, since=200.0)

    everything, recent = run(scenario())
    assert [p.created_at for p in everything] == [100.0, 200.0, 200.5, 300.0]
    assert [p.created_at for p in recent] == [200.0, 200.5, 300.0]


def test_purge_deletes_pairs_older_than_the_retention(store_url: str) -> None:
    now = time.time()
    ages = [40.0, 31.0, 29.0, 1.0]
    pairs = [make_pair(n, created_at=now - age * DAY) for n, age in enumerate(ages)]

    async def scenario() -> tuple[int, list[PairRecord]]:
        store = open_store(store_url)
        await store.write_batch(pairs)
        deleted = await purge(store, 30, now=now)
        await store.close()
        return deleted, await read_all(store_url)

    deleted, kept = run(scenario())
    assert deleted == 2
    assert kept == pairs[2:]


def test_gateway_purge_command_uses_the_retention_setting(
    store_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = time.time()
    pairs = [make_pair(n, created_at=now - age * DAY) for n, age in enumerate([12.0, 8.0, 2.0])]

    async def store_them() -> None:
        store = open_store(store_url)
        await store.write_batch(pairs)
        await store.close()

    run(store_them())
    monkeypatch.setenv("GATEWAY_RECORDS_URL", store_url)
    monkeypatch.setenv("GATEWAY_RECORDS_RETENTION_DAYS", "10")
    assert cli.main(["purge"]) == 0
    assert "purged 1 pairs older than 10 days" in capsys.readouterr().out
    assert cli.main(["purge", "--days", "5"]) == 0
    assert "purged 1 pairs older than 5 days" in capsys.readouterr().out
    assert run(read_all(store_url)) == pairs[2:]


def test_text_with_nul_characters_is_stored_not_lost(store_url: str) -> None:
    pair = make_pair(0)
    odd = "a\x00b \\u0000 c"  # a NUL, and a literal backslash-u0000 that must stay as it is
    pair = replace(pair, primary=replace(pair.primary, text=odd, parsed={"k": odd}))

    async def scenario() -> list[PairRecord]:
        store = open_store(store_url)
        await store.write_batch([pair])
        await store.close()
        return await read_all(store_url)

    (stored,) = run(scenario())
    kept = odd if store_url.startswith("sqlite") else odd.replace("\x00", "\ufffd")
    assert stored.primary.text == kept
    assert stored.primary.parsed == {"k": kept}


def test_hashes_mode_stores_no_child_text(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(4)]

    async def scenario() -> Recorder:
        recorder = Recorder(open_store(store_url), options(records_text="hashes"))
        for pair in pairs:
            recorder.record(pair)
        await recorder.close()
        return recorder

    recorder = run(scenario())
    assert recorder.written == 4
    raw = raw_rows(store_url)
    assert CHILD_WORD not in raw
    assert "deberes" not in raw
    assert pairs[0].primary.text is not None
    assert f"sha256:{sha256(pairs[0].primary.text)}" in raw
    assert pairs[0].request_hash in raw
    assert run(read_all(store_url)) == [redact(pair) for pair in pairs]


def test_full_mode_stores_the_text(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(2)]

    async def scenario() -> list[PairRecord]:
        recorder = Recorder(open_store(store_url), options(records_text="full"))
        for pair in pairs:
            recorder.record(pair)
        await recorder.close()
        return await read_all(store_url)

    assert run(scenario()) == pairs


def test_recorder_writes_full_batches_at_once_and_the_rest_on_the_interval(
    store_url: str,
) -> None:
    async def scenario() -> tuple[list[int], list[int], list[int]]:
        store = CountingStore(open_store(store_url))
        recorder = Recorder(store, options(records_batch=50), flush_interval=0.3)
        for n in range(120):
            recorder.record(make_pair(n))
        await asyncio.sleep(0.1)  # within the interval: only full batches are written
        early = list(store.batches)
        await asyncio.sleep(1.0)
        on_interval = list(store.batches)
        for n in range(120, 130):
            recorder.record(make_pair(n))
        await recorder.close()
        return early, on_interval, store.batches

    early, on_interval, total = run(scenario())
    assert early == [50, 50]
    assert on_interval == [50, 50, 20]
    assert total == [50, 50, 20, 10]
    assert len(run(read_all(store_url))) == 130


def test_a_full_queue_drops_and_counts(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(25)]

    async def scenario() -> Recorder:
        recorder = Recorder(open_store(store_url), options(records_queue=10, records_batch=4))
        for pair in pairs:
            recorder.record(pair)  # no await in between: the writer cannot run yet
        assert (recorder.pending, recorder.dropped) == (10, 15)
        await recorder.close()
        recorder.record(pairs[0])  # after close: refused, counted
        return recorder

    recorder = run(scenario())
    assert (recorder.written, recorder.dropped, recorder.failed) == (10, 16, 0)
    assert [p.pair_id for p in run(read_all(store_url))] == [p.pair_id for p in pairs[:10]]


def test_close_drains_everything_accepted(store_url: str) -> None:
    pairs = [make_pair(n) for n in range(5000)]

    async def scenario() -> Recorder:
        recorder = Recorder(open_store(store_url), options(records_text="full"))
        for pair in pairs:
            recorder.record(pair)
        await recorder.close()
        return recorder

    started = time.perf_counter()
    recorder = run(scenario())
    assert time.perf_counter() - started < 30
    assert (recorder.written, recorder.dropped, recorder.failed, recorder.pending) == (
        5000,
        0,
        0,
        0,
    )
    assert run(read_all(store_url)) == pairs


def test_pairs_recorded_outside_a_loop_are_drained_by_close(store_url: str) -> None:
    recorder = Recorder(open_store(store_url), options())
    recorder.record(make_pair(0))
    run(recorder.close())
    assert recorder.written == 1
    assert len(run(read_all(store_url))) == 1


# Failures never reach the caller.


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=["postgresql", "sqlite"])
def dead_store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "postgresql":
        return f"postgresql://gateway:gateway@127.0.0.1:{closed_port()}/postgres"
    return "sqlite:////dev/null/shadow.db"  # a folder that cannot exist


def test_an_unreachable_store_keeps_pairs_waiting_then_counts_them_lost_at_shutdown(
    dead_store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> Recorder:
        recorder = Recorder(
            open_store(dead_store_url),
            options(records_batch=4),
            attempts=2,
            max_backoff=0.05,
            outage_retry=0.1,
        )
        for n in range(10):
            recorder.record(make_pair(n))
        await asyncio.sleep(0.5)  # tried again and again while serving: kept, not lost
        assert (recorder.written, recorder.failed, recorder.pending) == (0, 0, 10)
        assert not recorder.store_up
        for n in range(10, 14):
            recorder.record(make_pair(n))
        await recorder.close()
        return recorder

    with caplog.at_level(logging.WARNING, logger="gateway.records.store"):
        recorder = run(scenario())
    assert (recorder.written, recorder.dropped, recorder.failed) == (0, 0, 14)
    assert "the store is unavailable" in caplog.text
    assert "lost 4 after 2 attempts" in caplog.text
    assert CHILD_WORD not in caplog.text
    assert "gateway:gateway" not in caplog.text


def test_a_sqlite_store_out_of_room_keeps_pairs_waiting_and_writes_them_when_it_has_room(
    tmp_path: Path,
) -> None:
    """Out of room as on a full disk, by this process's file-size limit (which any user may
    set: a small tmpfs needs mount rights): writes past it fail, as they would on a full
    disk, until it is lifted."""
    path = tmp_path / "shadow.db"

    async def scenario() -> Recorder:
        recorder = Recorder(
            SqliteStore(path), options(records_batch=50), attempts=2, max_backoff=0.01,
            outage_retry=0.1,
        )  # fmt: skip
        recorder.record(make_pair(0))
        await written(recorder, 1, within=5)
        room = max(size_of(path), size_of(Path(f"{path}-wal")))
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (room, hard))
        try:
            for n in range(1, 41):
                recorder.record(make_pair(n))
            await asyncio.sleep(0.5)
            assert (recorder.written, recorder.failed, recorder.pending) == (1, 0, 40)
            assert (recorder.store_up, recorder.written) == (False, 1)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        await written(recorder, 41, within=5)
        assert (recorder.store_up, recorder.written) == (True, 41)
        await recorder.close()
        return recorder

    recorder = run(scenario())
    assert (recorder.written, recorder.dropped, recorder.failed) == (41, 0, 0)
    assert len(run(read_all(f"sqlite:///{path}"))) == 41


def size_of(path: Path) -> int:
    return path.stat().st_size


async def written(recorder: Recorder, count: int, within: float) -> None:
    """Until `count` pairs are written (polled: the recorder has no event to wait on)."""
    deadline = time.monotonic() + within
    while recorder.written < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def test_store_errors_name_the_problem_not_the_content(dead_store_url: str) -> None:
    async def scenario() -> None:
        store = open_store(dead_store_url)
        try:
            await store.write_batch([make_pair(0)])
        finally:
            await store.close()

    with pytest.raises(StoreError) as caught:
        run(scenario())
    assert CHILD_WORD not in str(caught.value)
    assert "gateway:gateway" not in str(caught.value)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "shadow.db"

    async def scenario() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.write_batch([make_pair(0)])
        await store.close()

    run(scenario())
    with sqlite3.connect(path) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(pairs)")}
    conn.close()
    assert mode == "wal"
    assert "pairs_created_at" in indexes
    assert "pairs_kind" not in indexes  # no query reads by kind: the index only cost inserts


def test_a_store_made_before_loses_its_unused_kind_index(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        for statement in create_statements(TYPES):
            conn.execute(statement)
        conn.execute("CREATE INDEX pairs_kind ON pairs (kind)")
    conn.close()

    pair = make_pair(0)

    async def scenario() -> list[PairRecord]:
        store = open_store(f"sqlite:///{path}")
        await store.write_batch([pair])
        await store.close()
        return await read_all(f"sqlite:///{path}")

    assert run(scenario()) == [pair]
    with sqlite3.connect(path) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(pairs)")}
    conn.close()
    assert "pairs_kind" not in indexes


def test_sqlite_purge_leaves_no_text_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "shadow.db"
    now = time.time()
    old = [make_pair(n, created_at=now - 40 * DAY) for n in range(50)]

    async def scenario() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.write_batch([*old, redact(make_pair(99, created_at=now))])
        assert await purge(store, 30, now=now) == 50
        await store.close()

    run(scenario())
    assert CHILD_WORD.encode() not in path.read_bytes()
