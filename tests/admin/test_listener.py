"""The admin listener in process: event backlogs, readiness, webhooks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sipreg.admin.listener import AdminListener
from sipreg.admin.webhooks import Webhooks, shown
from sipreg.errors import StoreUnavailable
from sipreg.metrics import Metrics
from sipreg.registrar.binding import Binding
from sipreg.registrar.events import BindingEvent
from sipreg.registrar.facade import Registrar
from sipreg.store.memory import MemoryStore

TOKEN = "token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def event(n: int) -> BindingEvent:
    binding = Binding(
        aor="sip:alice@example.com", contact=f"sip:alice@192.0.2.{n % 250}", expires_at=9e9,
        call_id="c", cseq=n,
    )  # fmt: skip
    return BindingEvent(type="added", cause="register", binding=binding, at=1.0)


@pytest.fixture
async def listener() -> AsyncIterator[AdminListener]:
    registrar = Registrar(domains=["example.com"])
    admin = AdminListener(registrar, Metrics(), TOKEN, dict, event_backlog=5, keepalive=0.2)
    await admin.start("127.0.0.1", 0)
    yield admin
    await admin.stop()


def url(admin: AdminListener, path: str) -> str:
    return f"http://127.0.0.1:{admin.address[1]}{path}"


async def test_a_consumer_that_falls_behind_is_cut_off(listener: AdminListener) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(listener, "/api/events"), headers=AUTH) as stream,
    ):
        assert await stream.content.readline() == b": events of sipreg\n"
        assert await stream.content.readline() == b"\n"
        listener.registrar.events.publish([event(1)])
        lines = [await stream.content.readline() for _ in range(4)]
        assert lines[0] == b"id: 1\n" and json.loads(lines[2][6:])["id"] == 1
        # Published faster than it can be sent: past the backlog of 5, it is cut off.
        listener.registrar.events.publish(event(n) for n in range(2, 100))
        rest = await asyncio.wait_for(stream.content.read(), 5)
    assert rest.endswith(b"event: overflow\ndata: {}\n\n")
    assert rest.count(b"event: binding") <= 5
    assert not listener.registrar.events.listening  # it no longer listens


async def test_a_quiet_stream_gets_keep_alives(listener: AdminListener) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url(listener, "/api/events"), headers=AUTH) as stream,
    ):
        await stream.content.readline()
        await stream.content.readline()
        assert await asyncio.wait_for(stream.content.readline(), 2) == b": keep-alive\n"


async def test_ready_is_503_while_the_store_is_unavailable(listener: AdminListener) -> None:
    store = listener.registrar.store
    assert isinstance(store, MemoryStore)

    async def unavailable() -> tuple[int, int]:
        raise StoreUnavailable("the store is closed")

    store.counts = unavailable  # type: ignore[method-assign]
    async with aiohttp.ClientSession() as session:
        async with session.get(url(listener, "/ready")) as answer:
            assert answer.status == 503
            assert await answer.text() == "store unavailable: the store is closed\n"
        async with session.get(url(listener, "/api/stats"), headers=AUTH) as answer:
            assert answer.status == 503 and answer.headers["Retry-After"] == "5"


class Receiver:
    """An HTTP server that fails the first ``failures`` POSTs, then keeps what it gets."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.got: list[dict[str, Any]] = []
        self.tries = 0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.tries += 1
        if self.tries <= self.failures:
            return web.Response(status=500)
        self.got.append(await request.json())
        self.arrived.set()
        return web.Response(status=204)


async def test_webhooks_retry_and_deliver_in_order() -> None:
    receiver = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hooks = Webhooks((f"http://127.0.0.1:{port}/hook",), timeout=2.0, first_pause=0.01)
    await hooks.start()
    try:
        for n in (1, 2, 3):
            hooks(dataclasses.replace(event(n), id=n))
        for _ in range(200):
            if len(receiver.got) == 3:
                break
            await asyncio.sleep(0.02)
    finally:
        await hooks.stop()
        await runner.cleanup()
    assert [body["id"] for body in receiver.got] == [1, 2, 3]
    assert receiver.tries == 5 and hooks.delivered == 3 and hooks.failed == 0
    assert receiver.got[0]["type"] == "added" and receiver.got[0]["aor"] == "sip:alice@example.com"


async def test_a_full_webhook_queue_drops_and_never_waits() -> None:
    hooks = Webhooks(("http://127.0.0.1:9/",), queue=3)
    for n in range(10):
        hooks(event(n))  # not started: nothing drains the queue
    assert hooks.dropped == 7


def test_a_webhook_url_is_logged_without_its_secrets() -> None:
    assert shown("https://user:pw@hooks.example.com:8443/in?key=s3cret") == (
        "https://hooks.example.com:8443/in"
    )
    assert shown("http://[::1]/x") == "http://[::1]/x"
