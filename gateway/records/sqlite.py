"""Pairs in one SQLite file (WAL): the default store, for the gateway processes of one host.

Example::

    store = SqliteStore(Path("var/shadow.db"))
    await store.write_batch(pairs)

The blocking sqlite3 calls run in a thread (`asyncio.to_thread`), one at a time; sqlite3 errors
become `StoreError` here.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.probes import ProbeResult
from gateway.records.base import StoreError, StoreUnavailable
from gateway.records.schema import (
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

# Several worker processes share the file: a writer waits this long for another's lock.
BUSY_TIMEOUT_S = 10.0
TYPES: dict[ColumnType, str] = {"text": "TEXT", "int": "INTEGER", "real": "REAL", "json": "TEXT"}
_UPSERT_PROBE = (
    "INSERT INTO probes (backend, probe, outcome, detail, at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (backend, probe) DO UPDATE SET outcome = excluded.outcome, "
    "detail = excluded.detail, at = excluded.at"
)
_SELECT = f"SELECT {', '.join(NAMES)} FROM pairs"  # noqa: S608 - fixed column names
# Rows per INSERT statement: one statement per row (`executemany`) cost more per row
# (benchmarks/README.md, optimisation log). 100 rows hold 3,200 values, under SQLite's limit
# since 3.32 (32,766).
ROWS_PER_INSERT = 100
# Primary result codes of a store that is full or unreachable now, not of a refused write.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL,
}  # fmt: skip

T = TypeVar("T")


class SqliteStore:
    """A `RecordStore` in the SQLite file at `path` (created with its folder on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def write_batch(self, records: Sequence[PairRecord]) -> None:
        rows = [to_row(record) for record in records]

        def insert(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction: all or nothing
                for start in range(0, len(rows), ROWS_PER_INSERT):
                    chunk = rows[start : start + ROWS_PER_INSERT]
                    conn.execute(_insert(len(chunk)), [value for row in chunk for value in row])

        await self._run(insert)

    async def read(self, since: float | None = None) -> list[PairRecord]:
        def select(conn: sqlite3.Connection) -> list[PairRecord]:
            if since is None:
                rows = conn.execute(f"{_SELECT} ORDER BY created_at, pair_id").fetchall()
            else:
                query = f"{_SELECT} WHERE created_at >= ? ORDER BY created_at, pair_id"
                rows = conn.execute(query, (since,)).fetchall()
            return [from_row(row) for row in rows]

        return await self._run(select)

    async def purge(self, older_than: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            with conn:
                cursor = conn.execute("DELETE FROM pairs WHERE created_at < ?", (older_than,))
                return cursor.rowcount

        return await self._run(delete)

    async def write_probes(self, results: Sequence[ProbeResult]) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            with conn:
                conn.executemany(_UPSERT_PROBE, [probe_row(result) for result in results])

        await self._run(upsert)

    async def read_probes(self) -> list[ProbeResult]:
        def select(conn: sqlite3.Connection) -> list[ProbeResult]:
            rows = conn.execute("SELECT * FROM probes ORDER BY backend, probe").fetchall()
            return [probe_from_row(row) for row in rows]

        return await self._run(select)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._call, work)
            except (sqlite3.Error, OSError) as exc:
                # sqlite3's messages name tables and constraints, never values.
                error = StoreUnavailable if _unavailable(exc) else StoreError
                raise error(f"sqlite {self.path}: {exc}") from exc

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = _connect(self.path)
        return work(self._conn)


def _unavailable(exc: Exception) -> bool:
    """A full disk (or one over a file-size limit), an I/O error, a file that cannot be
    opened or is locked by another writer: the same write may succeed later."""
    if isinstance(exc, OSError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _UNAVAILABLE


@functools.lru_cache(maxsize=ROWS_PER_INSERT)
def _insert(rows: int) -> str:
    """One INSERT of `rows` rows; a pair already stored (a retried batch) is skipped."""
    values = ", ".join([f"({', '.join('?' for _ in NAMES)})"] * rows)
    return (
        f"INSERT INTO pairs ({', '.join(NAMES)}) VALUES {values} "  # noqa: S608 - fixed names
        "ON CONFLICT (pair_id) DO NOTHING"
    )


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Used from the default executor's threads, one call at a time (the store's lock).
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        # Purged pairs may hold personal text: overwrite it rather than leave it in free pages.
        conn.execute("PRAGMA secure_delete=ON")
        with conn:
            for statement in create_statements(TYPES):
                conn.execute(statement)
            for statement in probe_statements(TYPES):
                conn.execute(statement)
            existing = {row[1] for row in conn.execute("PRAGMA table_info(pairs)")}
            for statement in upgrade_statements(existing, TYPES):
                conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn
