"""The pairs a gateway stored, read back for a test to count itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.records.store import open_store
from gateway.shadow.pairs import PairRecord


def stored_pairs(store: Path | str) -> list[PairRecord]:
    """Every pair in `store` (a SQLite file, or a records URL), in the order the store reads
    them."""
    url = f"sqlite:///{store}" if isinstance(store, Path) else store

    async def run() -> list[PairRecord]:
        records = open_store(url)
        try:
            return await records.read()
        finally:
            await records.close()

    return asyncio.run(run())
