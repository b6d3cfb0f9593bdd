"""The child process that syncs a SQLite log (WalSync)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sipreg.errors import StoreOpenError, StoreUnavailable
from sipreg.store.wal_sync import WalSync


async def test_it_answers_every_ask_and_stops_when_closed(tmp_path: Path) -> None:
    log = tmp_path / "x.db-wal"
    log.write_bytes(b"frames")
    wal = WalSync(str(log))
    await wal.start()
    async with asyncio.timeout(5):
        await asyncio.gather(*(wal.sync() for _ in range(50)))  # answered in batches
        await wal.sync()
    await wal.close()
    await wal.close()
    with pytest.raises(StoreUnavailable, match=r"cannot sync .*x\.db-wal"):
        await wal.sync()


async def test_a_log_it_cannot_open_is_refused_at_start(tmp_path: Path) -> None:
    wal = WalSync(str(tmp_path / "missing-wal"))
    with pytest.raises(StoreOpenError, match=r"cannot sync .*missing-wal: the sync process"):
        await wal.start()
