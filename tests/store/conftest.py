"""The ``store`` fixture: each contract test runs once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipreg.store.base import BindingStore
from sipreg.store.redis import RedisStore

from .helpers import BACKENDS

#: The Redis backends, by the fixture that gives each an empty server (``url``).
REDIS_BACKENDS = {"redis": "redis_db", "redis-cluster": "redis_cluster_db"}


@pytest.fixture(params=sorted(BACKENDS) + sorted(REDIS_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BindingStore]:
    """An open, empty store of each backend, closed after the test."""
    if request.param in REDIS_BACKENDS:
        backend: BindingStore = RedisStore(
            request.getfixturevalue(REDIS_BACKENDS[request.param]).url
        )
    else:
        backend = BACKENDS[request.param](tmp_path)
    await backend.open()
    yield backend
    await backend.close()
