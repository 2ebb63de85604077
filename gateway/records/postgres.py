"""Pairs in PostgreSQL (psycopg 3, async): the store for several gateway replicas.

Example::

    store = PostgresStore("postgresql://gateway:secret@db:5432/gateway")
    await store.write_batch(pairs)

One connection per process, opened on first use and again after it breaks; the table is created
if missing. psycopg errors become `StoreError` here. PostgreSQL text cannot hold NUL characters,
so a NUL in any text is stored as U+FFFD rather than failing the whole batch.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow

from gateway.probes import ProbeResult
from gateway.records.base import StoreError, StoreUnavailable
from gateway.records.schema import (
    COLUMNS,
    NAMES,
    ColumnType,
    create_statements,
    from_row,
    probe_from_row,
    probe_row,
    probe_statements,
    to_row,
    upgrade_statements,
)
from gateway.shadow.pairs import PairRecord

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
OPERATION_TIMEOUT_S = 60.0
TYPES: dict[ColumnType, str] = {
    "text": "TEXT",
    "int": "BIGINT",
    "real": "DOUBLE PRECISION",
    "json": "JSONB",
}
# Replicas starting together would race on CREATE TABLE IF NOT EXISTS; they queue on this lock.
_DDL_LOCK = 0x9A1C5E
_UPSERT_PROBE = (
    "INSERT INTO probes (backend, probe, outcome, detail, at) VALUES (%s, %s, %s, %s, %s) "
    "ON CONFLICT (backend, probe) DO UPDATE SET outcome = excluded.outcome, "
    "detail = excluded.detail, at = excluded.at"
)
_SELECT = f"SELECT {', '.join(NAMES)} FROM pairs"  # noqa: S608 - fixed column names
_INSERT = (
    f"INSERT INTO pairs ({', '.join(NAMES)}) VALUES ("  # noqa: S608 - fixed column names
    + ", ".join("%s::jsonb" if kind == "json" else "%s" for _, kind in COLUMNS)
    + ") ON CONFLICT (pair_id) DO NOTHING"
)
# A JSON \u0000 escape: preceded by an even run of backslashes (escaped ones), not an odd one.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")

Connection = psycopg.AsyncConnection[TupleRow]
T = TypeVar("T")


class PostgresStore:
    """A `RecordStore` in the `pairs` table of the database `url` names."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()

    async def write_batch(self, records: Sequence[PairRecord]) -> None:
        rows = [_without_nul(to_row(record)) for record in records]

        async def insert(conn: Connection) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(_INSERT, rows)

        await self._run(insert)

    async def read(self, since: float | None = None) -> list[PairRecord]:
        async def select(conn: Connection) -> list[PairRecord]:
            if since is None:
                cursor = await conn.execute(f"{_SELECT} ORDER BY created_at, pair_id")
            else:
                query = f"{_SELECT} WHERE created_at >= %s ORDER BY created_at, pair_id"
                cursor = await conn.execute(query, (since,))
            return [from_row(row) for row in await cursor.fetchall()]

        return await self._run(select)

    async def purge(self, older_than: float) -> int:
        async def delete(conn: Connection) -> int:
            cursor = await conn.execute("DELETE FROM pairs WHERE created_at < %s", (older_than,))
            return cursor.rowcount

        return await self._run(delete)

    async def write_probes(self, results: Sequence[ProbeResult]) -> None:
        async def upsert(conn: Connection) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(_UPSERT_PROBE, [probe_row(r) for r in results])

        await self._run(upsert)

    async def read_probes(self) -> list[ProbeResult]:
        async def select(conn: Connection) -> list[ProbeResult]:
            cursor = await conn.execute("SELECT * FROM probes ORDER BY backend, probe")
            return [probe_from_row(row) for row in await cursor.fetchall()]

        return await self._run(select)

    async def close(self) -> None:
        async with self._lock:
            await self._discard()

    async def _run(self, work: Callable[[Connection], Awaitable[T]]) -> T:
        async with self._lock:
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_S):
                    return await work(await self._connection())
            except psycopg.Error as exc:
                # The server is down, restarting or unreachable: the connection is gone.
                down = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
                if down:
                    await self._discard()
                # Server messages can quote the values of the row at fault: only the kind goes.
                state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
                error = StoreUnavailable if down else StoreError
                raise error(f"postgresql: {type(exc).__name__}{state}") from exc
            except TimeoutError as exc:
                await self._discard()
                raise StoreUnavailable(
                    f"postgresql: no answer in {OPERATION_TIMEOUT_S:g} s"
                ) from exc

    async def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            prepare_threshold=None,  # no server-side prepared statements: poolers stay happy
        )
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
                for statement in [*create_statements(TYPES), *probe_statements(TYPES)]:
                    await conn.execute(statement)
                columns = await conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'pairs' AND table_schema = current_schema()"
                )
                existing = {row[0] for row in await columns.fetchall()}
                for statement in upgrade_statements(existing, TYPES):
                    await conn.execute(statement)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def _discard(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()


def _without_nul(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_scrub(value, kind) for value, (_, kind) in zip(row, COLUMNS, strict=True))


def _scrub(value: Any, kind: ColumnType) -> Any:
    if not isinstance(value, str):
        return value
    if kind == "json":  # JSON text holds a NUL as the escape \u0000
        return _JSON_NUL.sub(r"\1\\ufffd", value) if "\\u0000" in value else value
    return value.replace("\x00", "\ufffd")
