"""What a store of pairs is: the `RecordStore` protocol its implementations meet, and the one
error they raise. Implementations: `gateway.records.sqlite`, `gateway.records.postgres`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.probes import ProbeResult
from gateway.shadow.pairs import PairRecord


class StoreError(Exception):
    """A store could not read or write."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or has no room (a database down or restarting, a disk
    full): the same write may succeed later, unlike one the store refused."""


class RecordStore(Protocol):
    """Durable storage for pairs. Implementations: `sqlite`, `postgres`."""

    async def write_batch(self, records: Sequence[PairRecord]) -> None:
        """Stores all of `records` or none; a pair id already stored is skipped (retries)."""

    async def read(self, since: float | None = None) -> list[PairRecord]:
        """Pairs created at or after `since` (all when None), oldest first."""

    async def purge(self, older_than: float) -> int:
        """Deletes pairs created before `older_than` (unix seconds); returns how many."""

    async def write_probes(self, results: Sequence[ProbeResult]) -> None:
        """Keeps each (backend, check)'s latest conformance probe result."""

    async def read_probes(self) -> list[ProbeResult]:
        """The latest result of every (backend, check) probed."""

    async def close(self) -> None: ...
