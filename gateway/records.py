"""Where paired records go: a `RecordStore` (SQLite or PostgreSQL), fed off the hot path.

Example::

    recorder = Recorder(open_store("sqlite:///var/shadow.db"), settings)
    recorder.record(pair)      # never blocks, never raises
    await recorder.close()     # returns once everything accepted is stored (or counted lost)

Errors: a store raises only `StoreError`, with the driver's error as its cause. Its message never
holds record content (driver messages can quote values, so they are not copied in).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway.pairs import Leg, PairRecord, sha256

if TYPE_CHECKING:
    from gateway.settings import Settings

log = logging.getLogger("gateway.records")

LABEL_MAX_CHARS = 64
_HASH_PREFIX = "sha256:"
_MAX_SCHEMA_DEPTH = 8  # `$ref` chains and nested `anyOf`s followed, at most
# The codes of gateway.errors by status, and the one for a client that hung up.
ERROR_CODES = {
    400: "invalid_request", 401: "invalid_api_key", 404: "not_found",
    413: "request_too_large", 429: "overloaded", 499: "client_closed", 500: "internal_error",
    502: "backend_protocol_error", 503: "backend_unavailable", 504: "backend_timeout",
}  # fmt: skip

Enums = Mapping[str, frozenset[str]]  # a schema's allowed strings, by top-level field


class StoreError(Exception):
    """A store could not read or write."""


class RecordStore(Protocol):
    """Durable storage for pairs. Implementations: `records_sqlite`, `records_postgres`."""

    async def write_batch(self, records: Sequence[PairRecord]) -> None:
        """Stores all of `records` or none; a pair id already stored is skipped (retries)."""

    async def read(self, since: float | None = None) -> list[PairRecord]:
        """Pairs created at or after `since` (all when None), oldest first."""

    async def purge(self, older_than: float) -> int:
        """Deletes pairs created before `older_than` (unix seconds); returns how many."""

    async def close(self) -> None: ...


def _sqlite(url: str) -> RecordStore:
    from pathlib import Path

    from gateway.records_sqlite import SqliteStore

    return SqliteStore(Path(url.removeprefix("sqlite:///")))


def _postgres(url: str) -> RecordStore:
    try:
        from gateway.records_postgres import PostgresStore
    except ImportError as exc:
        raise StoreError(
            "PostgreSQL records need psycopg: pip install 'pika-gateway[records-postgres]'"
        ) from exc
    return PostgresStore(url)


STORES: dict[str, Callable[[str], RecordStore]] = {
    "sqlite:///": _sqlite,
    "postgresql://": _postgres,
    "postgres://": _postgres,
}


def check_url(url: str) -> str:
    """The store prefix of `url`; ValueError (naming no secret) when no store serves it."""
    for prefix in STORES:
        if url.startswith(prefix) and len(url) > len(prefix):
            return prefix
    raise ValueError(
        "must be sqlite:///relative/path.db, sqlite:////absolute/path.db "
        "or postgresql://user:password@host:port/database"
    )


def open_store(url: str) -> RecordStore:
    """The store a URL names. Nothing connects yet: the first call does."""
    return STORES[check_url(url)](url)


async def purge(store: RecordStore, days: float, now: float | None = None) -> int:
    """Deletes pairs older than `days` days; returns how many."""
    cutoff = (time.time() if now is None else now) - days * 86400
    return await store.purge(cutoff)


def redact(record: PairRecord) -> PairRecord:
    """The record as the `hashes` text mode stores it: no request, answer or error text.

    The request body goes (its `request_hash` stays); each leg's text becomes `sha256:<hex>`, so
    exact agreement can still be counted; a leg's error becomes a fixed code of its status
    (`error_code`), as an engine's message can quote the request; `parsed` and `extra` keep
    only labels (`labels`), judged by the request's or the task's schema. Idempotent.
    """
    enums = schema_enums(record.params.schema)
    # Built directly, every field named: dataclasses.replace cost three times as much, and
    # this runs three times per stored pair (tests/gateway/test_records.py checks each field).
    return PairRecord(
        pair_id=record.pair_id,
        created_at=record.created_at,
        kind=record.kind,
        public_model=record.public_model,
        route=record.route,
        request_hash=record.request_hash,
        request=None,
        params=record.params,
        primary=_redact_leg(record.primary, enums),
        candidate=_redact_leg(record.candidate, enums),
        prompt_version=record.prompt_version,
        extra=labels(record.extra, enums),
    )


def _redact_leg(leg: Leg, enums: Enums | None) -> Leg:
    text = leg.text
    if text is not None and not _is_hash(text):
        text = _HASH_PREFIX + sha256(text)
    parsed = None if leg.parsed is None else labels(leg.parsed, enums)
    error = None if leg.error is None else error_code(leg.status)
    return Leg(
        backend=leg.backend,
        status=leg.status,
        text=text,
        finish_reason=leg.finish_reason,
        prompt_tokens=leg.prompt_tokens,
        completion_tokens=leg.completion_tokens,
        ttft_ms=leg.ttft_ms,
        e2e_ms=leg.e2e_ms,
        error=error,
        parsed=parsed,
    )


def _is_hash(text: str) -> bool:
    digest = text.removeprefix(_HASH_PREFIX)
    return len(text) == len(_HASH_PREFIX) + 64 and all(c in "0123456789abcdef" for c in digest)


def error_code(status: int) -> str:
    """A failed leg's error as the `hashes` mode stores it: a fixed code of its HTTP status."""
    if status in ERROR_CODES:
        return ERROR_CODES[status]
    return "upstream_rejected" if 400 <= status < 500 else "upstream_failed"


def labels(values: Mapping[str, Any], enums: Enums | None = None) -> dict[str, Any]:
    """The entries of `values` that are labels, not free text.

    Booleans and numbers stay. With a schema (`enums`, from `schema_enums`), a string stays
    only when it is one of its field's enum values; without one, a string of at most 64
    characters is kept as its `sha256:<hex>` digest (equal values still compare equal).
    Anything else (longer strings, lists, objects) goes.

    Example::

        labels({"mood": "happy", "why": "Toby ate it", "n": 2}, {"mood": frozenset({"happy"})})
        # {"mood": "happy", "n": 2}
    """
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, bool | int | float):
            kept[key] = value
        elif not isinstance(value, str):
            continue
        elif enums is not None:
            if value in enums.get(key, ()):
                kept[key] = value
        elif _is_hash(value):
            kept[key] = value
        elif len(value) <= LABEL_MAX_CHARS:
            kept[key] = _HASH_PREFIX + sha256(value)
    return kept


def schema_enums(schema: Mapping[str, Any] | None) -> Enums | None:
    """The strings each top-level field of an object schema allows (`enum`, `const`, through
    local `$ref`s and `anyOf`/`oneOf`/`allOf`); None when there is no schema."""
    if schema is None:
        return None
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {name: frozenset(_choices(schema, node, 0)) for name, node in properties.items()}


def _choices(root: Mapping[str, Any], node: Any, depth: int) -> Iterator[str]:
    if not isinstance(node, dict) or depth > _MAX_SCHEMA_DEPTH:
        return
    enum = node.get("enum")
    for value in [*(enum if isinstance(enum, list) else ()), node.get("const")]:
        if isinstance(value, str):
            yield value
    ref = node.get("$ref")
    if isinstance(ref, str):
        yield from _choices(root, _resolve(root, ref), depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        branches = node.get(key)
        for branch in branches if isinstance(branches, list) else ():
            yield from _choices(root, branch, depth + 1)


def _resolve(root: Mapping[str, Any], ref: str) -> Any:
    """A local JSON pointer (`#/$defs/Mood`); None for anything else."""
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for part in ref[2:].split("/"):
        key = part.replace("~1", "/").replace("~0", "~")
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _as_is(record: PairRecord) -> PairRecord:
    return record


class Recorder:
    """The batch writer between the shadow leg and a `RecordStore`, off the hot path.

    `record` appends to a bounded queue (full: the pair is dropped and counted). A task started
    on the first record writes batches of up to `records_batch` pairs, or what is queued after
    `flush_interval` seconds; a failed batch is retried (bounded, jittered), then counted lost.
    Counters for metrics: `written`, `dropped`, `failed` (pairs), and `pending`.
    """

    def __init__(
        self,
        store: RecordStore,
        settings: Settings,
        *,
        flush_interval: float = 0.2,
        attempts: int = 4,
        max_backoff: float = 2.0,
    ) -> None:
        self.store = store
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._capacity = settings.records_queue
        self._batch = settings.records_batch
        self._prepare = redact if settings.records_text == "hashes" else _as_is
        self._interval = flush_interval
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._queue: deque[PairRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def record(self, pair: PairRecord) -> None:
        """Accepts `pair` for writing, or drops and counts it. Call from the event loop."""
        if self._closing or len(self._queue) >= self._capacity:
            self.dropped += 1
            return
        self._queue.append(pair)
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no loop running here: close() drains
                self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) == 1 or len(self._queue) >= self._batch:
            self._wake.set()

    async def close(self) -> None:
        """Writes everything accepted (or counts it lost), then closes the store."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        # Shielded: a cancelled shutdown must not cancel the writes already under way.
        await asyncio.shield(self._task)
        await self.store.close()
        log.info(
            "records: %d written, %d dropped, %d lost", self.written, self.dropped, self.failed
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._interval
        while self._queue or not self._closing:
            if not self._queue:
                await self._wake.wait()
                self._wake.clear()
                deadline = loop.time() + self._interval  # the first pair starts the clock
                continue
            self._wake.clear()
            if len(self._queue) < self._batch and not self._closing and loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await self._wake.wait()  # set early by a full batch or by close()
                continue
            count = min(self._batch, len(self._queue))
            stored = await self._write([self._queue.popleft() for _ in range(count)])
            if not stored and self._closing:
                self._give_up()
            if count < self._batch:
                deadline = loop.time() + self._interval

    def _give_up(self) -> None:
        # The store just lost a batch after its retries; at shutdown, trying the rest would
        # outlast any grace period, so they are counted lost at once.
        lost = len(self._queue)
        self._queue.clear()
        if lost:
            self.failed += lost
            log.warning("records: store down at shutdown, %d more lost", lost)

    async def _write(self, batch: list[PairRecord]) -> bool:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_backoff),
            retry=retry_if_exception_type(StoreError),
            reraise=True,
        )
        try:
            prepared = [self._prepare(pair) for pair in batch]
            async for attempt in retrying:
                with attempt:
                    await self.store.write_batch(prepared)
        except StoreError as exc:
            self.failed += len(batch)
            log.warning("records: lost %d after %d attempts: %s", len(batch), self._attempts, exc)
            return False
        except Exception as exc:  # a bug must not stop the writer; the content is never logged
            self.failed += len(batch)
            log.error("records: lost %d: %s", len(batch), type(exc).__name__)
            return True  # the store itself may be fine
        self.written += len(batch)
        return True
