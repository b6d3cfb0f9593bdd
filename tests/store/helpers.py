"""Bindings and stores for the store tests."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from sipreg.registrar.binding import Binding
from sipreg.store.base import BindingStore
from sipreg.store.memory import MemoryStore
from sipreg.store.sqlite import SqliteStore
from sipreg.store.timed import TimedStore

ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"

# Every backend under test, built for a scratch directory.
BACKENDS: dict[str, Callable[[str | os.PathLike[str]], BindingStore]] = {
    "memory": lambda _: MemoryStore(),
    "sqlite": lambda directory: SqliteStore(os.path.join(directory, "bindings.db")),
    "sqlite-uncached": lambda d: SqliteStore(os.path.join(d, "bindings.db"), cache_size=0),
    # As --workers runs it: every read from the file, refreshes planned on what it wrote.
    "sqlite-shared": lambda d: SqliteStore(os.path.join(d, "bindings.db"), shared=True),
    # What the server's registrar writes through: the metrics' timing wrapper.
    "timed": lambda d: TimedStore(SqliteStore(os.path.join(d, "bindings.db")), _ignore),
}


def _ignore(operation: str, seconds: float) -> None:
    """A timing nobody reads."""


def binding(
    aor: str = ALICE,
    contact: str = "sip:alice@192.0.2.1",
    expires_at: float = 1000.0,
    **fields: Any,
) -> Binding:
    """A binding with plausible defaults; ``fields`` override the rest."""
    fields.setdefault("call_id", "call-1")
    fields.setdefault("cseq", 1)
    return Binding(aor=aor, contact=contact, expires_at=expires_at, **fields)
