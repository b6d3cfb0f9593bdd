"""A store that times every operation of another: what the store latency metric reads."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..registrar.binding import AorState, Binding, Change
from .base import BindingStore


class TimedStore(BindingStore):
    """``inner``, telling ``observe(operation, seconds)`` how long each call took.

    Failed calls are timed too.  Opening and closing it opens and closes ``inner``.
    """

    def __init__(self, inner: BindingStore, observe: Callable[[str, float], None]) -> None:
        self.inner = inner
        self.observe = observe

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def load(self, aor: str) -> AorState:
        start = time.perf_counter()
        try:
            return await self.inner.load(aor)
        finally:
            self.observe("load", time.perf_counter() - start)

    def remembered(self, aor: str) -> AorState | None:
        return self.inner.remembered(aor)

    async def apply(self, change: Change) -> None:
        start = time.perf_counter()
        try:
            await self.inner.apply(change)
        finally:
            self.observe("apply", time.perf_counter() - start)

    async def expire(self, now: float) -> list[Binding]:
        start = time.perf_counter()
        try:
            return await self.inner.expire(now)
        finally:
            self.observe("expire", time.perf_counter() - start)

    async def aors(self) -> list[str]:
        return await self.inner.aors()

    async def connection_bound(self, node: str | None = None) -> list[Binding]:
        return await self.inner.connection_bound(node)

    async def counts(self) -> tuple[int, int]:
        start = time.perf_counter()
        try:
            return await self.inner.counts()
        finally:
            self.observe("counts", time.perf_counter() - start)

    async def page(
        self, *, after: tuple[str, str] | None = None, prefix: str = "", limit: int = 100
    ) -> list[Binding]:
        start = time.perf_counter()
        try:
            return await self.inner.page(after=after, prefix=prefix, limit=limit)
        finally:
            self.observe("page", time.perf_counter() - start)
