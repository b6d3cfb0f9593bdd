"""The admin HTTP listener (aiohttp, on the registrar's event loop).

Open: ``/`` (the status page, which holds no data), ``/health``, ``/ready`` and
``/metrics``.  Every ``/api/...`` endpoint needs ``Authorization: Bearer
TOKEN``, compared in constant time.  ``/api/events`` streams binding events as
server-sent events; a consumer that falls :data:`EVENT_BACKLOG` events behind
is cut off rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import importlib.resources
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import ParseError, StoreConflict, StoreUnavailable
from ..metrics import HISTORY_STEP, Metrics
from ..registrar.facade import Registrar
from .api import binding_json, encode_cursor, page_query, remote_sse, sse
from .relay import EventRelay

log = logging.getLogger("sipreg.admin")

#: Events a stream consumer may fall behind before it is cut off.
EVENT_BACKLOG = 1000
#: Seconds between keep-alive comments on a quiet event stream.
KEEPALIVE = 15.0
#: Seconds ``/ready`` waits for the store.
READY_TIMEOUT = 2.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminListener:
    """The admin API of one server: start with :meth:`start`, end with :meth:`stop`.

    ``describe`` gives the server's own part of ``/api/stats`` (listeners,
    connections by transport, the store URL).
    """

    def __init__(
        self,
        registrar: Registrar,
        metrics: Metrics,
        token: str,
        describe: Callable[[], dict[str, Any]],
        *,
        event_backlog: int = EVENT_BACKLOG,
        keepalive: float = KEEPALIVE,
        relay: EventRelay | None = None,
    ) -> None:
        self.registrar = registrar
        self.relay = relay
        self.metrics = metrics
        self.describe = describe
        self.event_backlog = event_backlog
        self.keepalive = keepalive
        self.address: tuple[str, int] = ("", 0)
        self._token = token.encode()
        self._wakes: set[asyncio.Event] = set()  # one per event stream
        self._stopping = False
        self._runner: web.AppRunner | None = None
        app = web.Application(middlewares=[self._errors])
        app.router.add_get("/", self._page)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/stats", self._guarded(self._stats))
        app.router.add_get("/api/bindings", self._guarded(self._bindings))
        app.router.add_delete("/api/bindings/{aor}", self._guarded(self._remove))
        app.router.add_get("/api/events", self._guarded(self._stream))
        self.app = app

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host``:``port`` (0: a free one; :attr:`address` tells which)."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server  # aiohttp keeps the asyncio server here, and names no address
        sockets = getattr(server, "sockets", None) or ()
        self.address = tuple(sockets[0].getsockname()[:2]) if sockets else (host, port)

    async def stop(self) -> None:
        """End the event streams and close the listener."""
        self._stopping = True
        for wake in self._wakes:
            wake.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- open endpoints -------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.StreamResponse:
        page = importlib.resources.files("sipreg.admin").joinpath("page.html")
        try:
            body = page.read_bytes()
        except FileNotFoundError:
            body = b"<!doctype html><title>sipreg</title><p>The API is under /api/."
        return web.Response(
            body=body, content_type="text/html", charset="utf-8", headers=_PAGE_HEADERS
        )

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def _ready(self, request: web.Request) -> web.StreamResponse:
        try:
            await asyncio.wait_for(self.registrar.store.counts(), READY_TIMEOUT)
        except (StoreUnavailable, TimeoutError, OSError) as err:
            reason = str(err) or type(err).__name__
            return web.Response(status=503, text=f"store unavailable: {reason}\n")
        return web.Response(text="ready\n")

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        await self._count_store()
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _count_store(self) -> tuple[int, int]:
        """The AORs and bindings stored, set on their gauges too."""
        aors, bindings = await self.registrar.store.counts()
        self.metrics.set_counts(aors, bindings)
        return aors, bindings

    # --- the API --------------------------------------------------------------------------

    def _guarded(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                token.strip().encode(), self._token
            ):
                return _error(401, "a bearer token is needed", WWW_Authenticate="Bearer")
            return await handler(request)

        return guarded

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        aors, bindings = await self._count_store()
        metrics = self.metrics
        registers, failures = metrics.history(time.monotonic())
        now = time.time()
        stats = {
            "version": __version__,
            "started": metrics.started,
            "uptime": round(now - metrics.started, 3),
            "bindings": bindings,
            "aors": aors,
            **self.describe(),
            "totals": metrics.totals(),
            "history": {
                "step": HISTORY_STEP,
                "until": now,
                "registers": registers,
                "auth_failures": failures,
            },
        }
        return web.json_response(stats)

    async def _bindings(self, request: web.Request) -> web.StreamResponse:
        try:
            query = page_query(request.query)
        except ValueError as err:
            return _error(400, str(err))
        registrar, now = self.registrar, self.registrar.clock()
        if query.aor is not None:
            found = await registrar.bindings(query.aor)
            page, following = found, None
        else:
            page = await registrar.store.page(
                after=query.after, prefix=query.prefix, limit=query.limit
            )
            following = encode_cursor(page[-1]) if len(page) == query.limit else None
            page = [b for b in page if not b.is_expired(now)]
        return web.json_response(
            {"bindings": [binding_json(b, now) for b in page], "next": following}
        )

    async def _remove(self, request: web.Request) -> web.StreamResponse:
        aor = request.match_info["aor"]
        contact = request.query.get("contact")
        try:
            removed = await self.registrar.remove(aor, contact)
        except StoreConflict:
            return _error(409, "the AOR kept changing; try again")
        if not removed:
            return _error(404, "no such binding", removed=0)
        log.info("admin: removed %d binding(s) of %s", removed, aor)
        return web.json_response({"removed": removed})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        backlog: collections.deque[bytes] = collections.deque()
        wake = asyncio.Event()
        behind = False

        def enqueue(frame: bytes) -> None:
            nonlocal behind
            if len(backlog) >= self.event_backlog:
                behind = True
            else:
                backlog.append(frame)
            wake.set()

        stop_listening = self.registrar.events.listen(lambda event: enqueue(sse(event)))
        stop_relay = (
            None if self.relay is None else self.relay.listen(lambda e: enqueue(remote_sse(e)))
        )
        self._wakes.add(wake)
        response = web.StreamResponse(headers=_STREAM_HEADERS)
        try:
            await response.prepare(request)
            await response.write(b": events of sipreg\n\n")
            while not self._stopping:
                try:
                    await asyncio.wait_for(wake.wait(), self.keepalive)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                wake.clear()
                if behind:
                    log.info("admin: an event stream fell %d events behind: cut off", len(backlog))
                    await response.write(b"event: overflow\ndata: {}\n\n")
                    break
                while backlog:
                    await response.write(backlog.popleft())  # waits while the peer is slow
        except ConnectionError:
            pass
        finally:
            stop_listening()
            if stop_relay is not None:
                stop_relay()
            self._wakes.discard(wake)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as err:
            return _error(503, f"store unavailable: {err}", Retry_After="5")
        except ParseError as err:  # an AOR or contact that is no URI
            return _error(400, f"not a SIP URI: {err.reason}")


def _error(status: int, message: str, **extra: Any) -> web.Response:
    headers = {k.replace("_", "-"): str(v) for k, v in extra.items() if k[0].isupper()}
    body = {"error": message, **{k: v for k, v in extra.items() if not k[0].isupper()}}
    return web.Response(
        status=status, text=json.dumps(body), content_type="application/json", headers=headers
    )


_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline';"
    " style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
