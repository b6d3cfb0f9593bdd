"""Webhooks: each binding event POSTed as JSON to every configured URL.

Events wait in a bounded queue that the REGISTER path only ever appends to
without waiting; when it is full the newest events are dropped, counted and
logged (throttled).  Each POST is tried :data:`ATTEMPTS` times, with a growing
pause, and a bounded timeout.  A 2xx answer is a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse

import aiohttp

from ..registrar.events import BindingEvent
from ..throttle import Throttle
from .api import event_json

log = logging.getLogger("sipreg.webhooks")

#: Events waiting to be sent, at most.
QUEUE = 10_000
#: Tries of one POST, and the pause before the second (doubled for each next).
ATTEMPTS = 3
FIRST_PAUSE = 0.5


class Webhooks:
    """Posts binding events to ``urls``; start with :meth:`start`, end with :meth:`stop`."""

    def __init__(
        self, urls: tuple[str, ...], *, timeout: float = 5.0, queue: int = QUEUE,
        first_pause: float = FIRST_PAUSE,
    ) -> None:  # fmt: skip
        self.urls = urls
        self.timeout = timeout
        self.first_pause = first_pause
        self.dropped = 0  # events the full queue had no room for
        self.failed = 0  # deliveries given up after every attempt
        self.delivered = 0
        self._queue: asyncio.Queue[BindingEvent] = asyncio.Queue(queue)
        self._throttle = Throttle(0.1)
        self._sender: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def __call__(self, event: BindingEvent) -> None:
        """Queue ``event`` (an ``Events`` listener); never waits."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            allowed, held = self._throttle.allow(asyncio.get_running_loop().time())
            if allowed:
                log.warning("webhooks: queue full, events dropped (%d so far)", self.dropped + held)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "sipreg-webhooks"},
        )
        self._sender = asyncio.create_task(self._send_all())

    async def stop(self) -> None:
        """Stop sending; what is still queued is not sent."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._session is not None:
            await self._session.close()

    async def _send_all(self) -> None:
        while True:
            event = await self._queue.get()
            body = event_json(event)
            for url in self.urls:
                await self._post(url, body)

    async def _post(self, url: str, body: dict[str, object]) -> None:
        assert self._session is not None
        pause = self.first_pause
        problem = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(pause)
                pause *= 2
            try:
                async with self._session.post(url, json=body) as answer:
                    if 200 <= answer.status < 300:
                        self.delivered += 1
                        return
                    problem = f"HTTP {answer.status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                problem = str(err) or type(err).__name__
        self.failed += 1
        log.warning("webhook %s: event %s not delivered: %s", shown(url), body["id"], problem)


def shown(url: str) -> str:
    """``url`` fit for a log: without a user, password or query, which may hold secrets."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
