"""The pairs a gateway stored in a SQLite records file, read back for a test to count itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.records.store import open_store
from gateway.shadow.pairs import PairRecord


def stored_pairs(store: Path) -> list[PairRecord]:
    """Every pair in the SQLite file `store`, in the order the store reads them."""

    async def run() -> list[PairRecord]:
        records = open_store(f"sqlite:///{store}")
        try:
            return await records.read()
        finally:
            await records.close()

    return asyncio.run(run())
