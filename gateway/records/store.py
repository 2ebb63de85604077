"""Where paired records go: a `RecordStore` (SQLite or PostgreSQL), fed off the hot path.

Example::

    recorder = Recorder(open_store("sqlite:///var/shadow.db"), settings.recorder_options())
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from gateway.metrics import Count, RecordCounts
from gateway.numbers import LocalNumbers
from gateway.records.base import RecordStore, StoreError, StoreUnavailable
from gateway.records.redaction import redact
from gateway.records.sqlite import SqliteStore
from gateway.shadow.pairs import PairRecord

log = logging.getLogger("gateway.records.store")


def _sqlite(url: str) -> RecordStore:
    return SqliteStore(Path(url.removeprefix("sqlite:///")))


def _postgres(url: str) -> RecordStore:
    try:
        from gateway.records.postgres import PostgresStore
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


def _as_is(record: PairRecord) -> PairRecord:
    return record


@dataclass(frozen=True, slots=True)
class RecorderOptions:
    """How much may wait and how it is kept (`GATEWAY_RECORDS_*`, `Settings.recorder_options`)."""

    queue: int  # pairs waiting to be written; beyond it new pairs are dropped and counted
    batch: int  # most pairs written in one transaction
    keep_text: bool  # False: `redact` every pair first (the `hashes` text mode)


class Recorder:
    """The batch writer between the shadow leg and a `RecordStore`, off the hot path.

    `record` appends to a bounded queue (full: the pair is dropped and counted). A task started
    on the first record writes batches of up to ``batch` pairs, or what is queued after
    `flush_interval` seconds; a failed batch is retried (bounded, jittered), then counted lost.
    While the store is unavailable (down, restarting, out of disk) the batch in hand is kept
    and tried again every `outage_retry` seconds, however long it takes, and new pairs wait in
    the queue: nothing is lost but what the queue cannot hold, counted as dropped. At shutdown
    an unavailable store gets the bounded retries, then what is left is counted lost.
    Counters for metrics: `written`, `dropped`, `failed` (pairs), `pending`, and `store_up`.
    """

    def __init__(
        self,
        store: RecordStore,
        options: RecorderOptions,
        *,
        flush_interval: float = 0.2,
        attempts: int = 4,
        max_backoff: float = 2.0,
        outage_retry: float = 1.0,
        counts: RecordCounts | None = None,
    ) -> None:
        self.store = store
        # The metrics' numbers (summed over a group's workers), or plain ones of its own.
        self.counts = counts if counts is not None else RecordCounts(_local_count)
        self._capacity = options.queue
        self._batch = options.batch
        self._prepare = _as_is if options.keep_text else redact
        self._interval = flush_interval
        self._attempts = attempts
        self._max_backoff = max_backoff
        self._outage_retry = outage_retry
        self._held = 0  # pairs of the batch being written, out of the queue
        self._queue: deque[PairRecord] = deque()
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def pending(self) -> int:
        return len(self._queue) + self._held

    @property
    def written(self) -> int:
        return int(self.counts.written.value)

    @property
    def dropped(self) -> int:
        return int(self.counts.dropped.value)

    @property
    def failed(self) -> int:
        return int(self.counts.failed.value)

    @property
    def store_up(self) -> bool:
        return not self.counts.store_down.value

    @store_up.setter
    def store_up(self, up: bool) -> None:
        self.counts.store_down.set(0.0 if up else 1.0)

    def _queued(self) -> None:
        self.counts.pending.set(self.pending)

    def record(self, pair: PairRecord) -> None:
        """Accepts `pair` for writing, or drops and counts it. Call from the event loop."""
        if self._closing or len(self._queue) >= self._capacity:
            self.counts.dropped.inc()
            return
        self._queue.append(pair)
        self._queued()
        if self._task is None:
            with contextlib.suppress(RuntimeError):  # no loop running here: close() drains
                self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._queue) == 1 or len(self._queue) >= self._batch:
            self._wake.set()

    async def close(self) -> None:
        """Writes everything accepted (or counts it lost), then closes the store."""
        self._closing = True
        self._wake.set()
        self._closed.set()
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
        self._queued()
        if lost:
            self.counts.failed.inc(lost)
            log.warning("records: store down at shutdown, %d more lost", lost)

    async def _write(self, batch: list[PairRecord]) -> bool:
        self._held = len(batch)
        self._queued()
        try:
            prepared = [self._prepare(pair) for pair in batch]
            while True:
                try:
                    await self._attempts_at(prepared)
                    break
                except StoreUnavailable as exc:
                    if self._closing:
                        raise
                    self._went_down(exc)
                    with contextlib.suppress(TimeoutError):  # close() ends the wait early
                        await asyncio.wait_for(self._closed.wait(), self._outage_retry)
        except StoreError as exc:
            self.counts.failed.inc(len(batch))
            log.warning("records: lost %d after %d attempts: %s", len(batch), self._attempts, exc)
            return False
        except Exception as exc:  # a bug must not stop the writer; the content is never logged
            self.counts.failed.inc(len(batch))
            log.error("records: lost %d: %s", len(batch), type(exc).__name__)
            return True  # the store itself may be fine
        finally:
            self._held = 0
            self._queued()
        self.counts.written.inc(len(batch))
        if not self.store_up:
            self.store_up = True
            log.warning("records: the store is back; %d pairs waiting to be written", self.pending)
        return True

    async def _attempts_at(self, prepared: list[PairRecord]) -> None:
        """One write, retried (bounded, jittered) on any store error."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_random_exponential(multiplier=0.1, max=self._max_backoff),
            retry=retry_if_exception_type(StoreError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.store.write_batch(prepared)

    def _went_down(self, exc: StoreError) -> None:
        if self.store_up:
            self.store_up = False
            log.warning(
                "records: the store is unavailable (%s); pairs wait in the queue (%d now, "
                "GATEWAY_RECORDS_QUEUE=%d) and are written when it is back",
                exc, self.pending, self._capacity,
            )  # fmt: skip


def _local_count(*key: str) -> Count:
    return Count(LocalNumbers().cells(key, 1))
