"""Make a SQLite write-ahead log durable from a child process.

Waiting for the disk on a thread of our own costs more than the wait: when the
fsync returns, the thread must take the interpreter lock back to say so, and it
queues for that lock behind the busy event loop, woken and sent back to sleep
each time the loop lets the lock go (for every datagram).  A child process
waits instead: it holds the log open and answers each :meth:`WalSync.sync`
with one ``fdatasync``; asks that arrive while one runs are answered by the
next, which covers them all.  The event loop only writes a byte to a pipe and
reads one back.

The store commits with ``synchronous = OFF`` (no sync in the commit) and
answers no change before its sync: what SQLite's ``FULL`` does, one sync for a
whole group, and without holding the write lock during it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque

from ..errors import StoreOpenError, StoreUnavailable

# The child: one fdatasync per batch of asks, a byte back per ask ("!" if it failed).
_CHILD = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(1, b"+")
sync = getattr(os, "fdatasync", os.fsync)
while True:
    asked = os.read(0, 65536)
    if not asked:
        break
    try:
        sync(fd)
        answer = b"." * len(asked)
    except OSError:
        answer = b"!" * len(asked)
    os.write(1, answer)
"""


class WalSync:
    """Syncs the file at ``path`` on demand, from a child process (see the module)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._child: asyncio.subprocess.Process | None = None
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._failed: str | None = None

    async def start(self) -> None:
        """Start the child and wait for it to open the file, which must exist.

        Raises StoreOpenError if it cannot.
        """
        self._child = child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            "-c",
            _CHILD,
            self.path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdout is not None
        if await child.stdout.read(1) != b"+":
            await self.close()
            raise StoreOpenError(f"cannot sync {self.path}: the sync process did not start")
        self._reader = asyncio.create_task(self._read_answers())

    async def sync(self) -> None:
        """Return once everything written to the file so far is on the disk.

        Raises StoreUnavailable if it may not be: then no later sync is trusted
        either (the kernel may have dropped the pages it could not write).
        """
        child = self._child
        if self._failed is not None or child is None or child.stdin is None:
            raise self._error(self._failed or "not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        child.stdin.write(b"s")
        await done

    async def close(self) -> None:
        """Stop the child once it has answered every ask; safe to call again."""
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        await child.wait()
        if self._reader is not None:
            await self._reader

    async def _read_answers(self) -> None:
        child = self._child
        assert child is not None and child.stdout is not None
        stdout = child.stdout
        while True:
            answers = await stdout.read(65536)
            if not answers:
                break
            for answer in answers:
                if answer != ord(".") and self._failed is None:
                    self._failed = "fdatasync failed"
                done = self._waiting.popleft()
                if done.done():
                    continue
                if self._failed is None:
                    done.set_result(None)
                else:
                    done.set_exception(self._error(self._failed))
        self._failed = self._failed or "the sync process ended"
        while self._waiting:
            done = self._waiting.popleft()
            with contextlib.suppress(asyncio.InvalidStateError):
                done.set_exception(self._error(self._failed))

    def _error(self, why: str) -> StoreUnavailable:
        return StoreUnavailable(f"store unavailable: cannot sync {self.path}: {why}")
