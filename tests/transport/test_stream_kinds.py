"""TLS, WS and WSS listeners on real loopback sockets, IPv4 and IPv6, with real clients.

The WebSocket client is the ``websockets`` library; TLS clients are Python's ``ssl``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from certs import Certs, make_certs
from ci import in_ci
from sipreg.framing import KeepAlive, StreamFramer
from sipreg.registrar.facade import Registrar
from sipreg.store.memory import MemoryStore
from sipreg.transport.base import Connection, InFlight
from sipreg.transport.stream import ContentLengthFramer, Framer, StreamListener
from sipreg.transport.tls import server_context
from sipreg.transport.websocket import WebSocketFramer

from .helpers import TIMEOUT, host_port, ipv6_loopback, register, status

HOSTS = [
    "127.0.0.1",
    pytest.param(
        "::1", marks=pytest.mark.skipif(not ipv6_loopback() and not in_ci(), reason="no IPv6")
    ),
]


Start = Callable[..., Awaitable[StreamListener]]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def registrar() -> Registrar:
    return Registrar(domains=["example.com"], store=MemoryStore(), mode="redirect")


class Events:
    """Connection events, as a list."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def opened(self, connection: Connection) -> None:
        self.seen.append(("opened", connection.connection_id))

    def closed(self, connection: Connection) -> None:
        self.seen.append(("closed", connection.connection_id))


@pytest.fixture
async def start(registrar: Registrar, certs: Certs) -> AsyncIterator[Start]:
    listeners: list[StreamListener] = []

    async def make(
        kind: str,
        host: str = "127.0.0.1",
        *,
        ca: bool = False,
        origins: tuple[str, ...] = (),
        max_size: int = 4096,
        idle_timeout: float = 300.0,
        events: Events | None = None,
    ) -> StreamListener:
        framer: Callable[[int], Framer] = ContentLengthFramer
        if kind in ("ws", "wss"):
            framer = lambda size: WebSocketFramer(size, origins)  # noqa: E731
        tls = None
        if kind in ("tls", "wss"):
            tls = server_context(str(certs.cert), str(certs.key), str(certs.ca) if ca else None)
        listener = StreamListener(
            registrar, InFlight(), kind=kind, framer=framer, tls=tls, max_size=max_size,
            idle_timeout=idle_timeout, events=events,
        )  # fmt: skip
        await listener.listen(host, 0)
        listeners.append(listener)
        return listener

    yield make
    for listener in listeners:
        listener.stop_reading()
        listener.close()


def client_context(certs: Certs, *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


async def tls_ask(
    listener: StreamListener, certs: Certs, data: bytes, *, with_cert: bool = False
) -> bytes:
    host, port = listener.local
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=client_context(certs, with_cert=with_cert), server_hostname="localhost"
        ),
        TIMEOUT,
    )
    try:
        writer.write(data)
        framer = StreamFramer()
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), TIMEOUT)
            assert chunk, "connection closed before an answer"
            messages = [m for m in framer.feed(chunk) if isinstance(m, bytes)]
            if messages:
                return messages[0]
    finally:
        writer.close()


def ws_url(listener: StreamListener) -> str:
    scheme = "wss" if listener.kind == "wss" else "ws"
    return f"{scheme}://{host_port(*listener.local)}/"


def ws_connect(listener: StreamListener, certs: Certs, **kw: object) -> connect:
    kw.setdefault("subprotocols", [Subprotocol("sip")])
    if listener.kind == "wss":
        kw["ssl"] = client_context(certs)
        kw["server_hostname"] = "localhost"
    return connect(ws_url(listener), open_timeout=TIMEOUT, **kw)  # type: ignore[arg-type]


async def ws_ask(ws: ClientConnection, data: bytes) -> bytes:
    await ws.send(data.decode())
    answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
    return answer.encode() if isinstance(answer, str) else answer


# --- TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_register_over_tls(
    start: Start, certs: Certs, registrar: Registrar, host: str
) -> None:
    listener = await start("tls", host)
    answer = await tls_ask(listener, certs, register(via=host_port(host, 9), transport="TLS"))
    assert status(answer) == 200
    [binding] = await registrar.bindings("sip:alice@example.com")
    assert binding.transport == "tls" and binding.source[0] == host


async def test_tls_can_require_a_client_certificate(start: Start, certs: Certs) -> None:
    listener = await start("tls", ca=True)
    data = register(via="127.0.0.1:9", transport="TLS")
    assert status(await tls_ask(listener, certs, data, with_cert=True)) == 200
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        await tls_ask(listener, certs, data)


async def test_tls_sips_registration(start: Start, certs: Certs, registrar: Registrar) -> None:
    """A sips AOR and Request-URI are fine over TLS (RFC 5630)."""
    listener = await start("tls")
    data = (
        register(via="127.0.0.1:9", transport="TLS")
        .replace(b"REGISTER sip:example.com", b"REGISTER sips:example.com")
        .replace(b"<sip:alice@example.com>", b"<sips:alice@example.com>")
    )
    assert status(await tls_ask(listener, certs, data)) == 200
    assert [b.aor for b in await registrar.bindings("sips:alice@example.com")] == [
        "sips:alice@example.com"
    ]


# --- WebSocket ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ws", "wss"])
@pytest.mark.parametrize("host", HOSTS)
async def test_register_over_websocket(
    start: Start, certs: Certs, registrar: Registrar, kind: str, host: str
) -> None:
    events = Events()
    listener = await start(kind, host, events=events)
    async with ws_connect(listener, certs) as ws:
        assert ws.subprotocol == "sip"
        data = register(via=host_port(host, 9), transport=kind.upper())
        # One message a frame: no Content-Length is needed.
        answer = await ws_ask(ws, data.replace(b"Content-Length: 0\r\n", b""))
        assert status(answer) == 200
        assert await ws_ask(ws, b"\r\n\r\n") == b"\r\n"  # a keep-alive, as SIP.js sends it
    [binding] = await registrar.bindings("sip:alice@example.com")
    assert binding.transport == kind
    for _ in range(50):
        if len(events.seen) == 2:
            break
        await asyncio.sleep(0.02)
    assert [e for e, _ in events.seen] == ["opened", "closed"]
    assert events.seen[0][1] == events.seen[1][1]


async def test_websocket_needs_the_sip_subprotocol(start: Start, certs: Certs) -> None:
    listener = await start("ws")
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(listener, certs, subprotocols=["chat"]):
            pass
    assert refused.value.response.status_code == 400


async def test_websocket_origin_allow_list(start: Start, certs: Certs) -> None:
    listener = await start("ws", origins=("https://phone.example.com",))
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(listener, certs, origin="https://evil.example.net"):
            pass
    assert refused.value.response.status_code == 403
    async with ws_connect(listener, certs, origin="https://phone.example.com") as ws:
        assert status(await ws_ask(ws, register(via="127.0.0.1:9", transport="WS"))) == 200


async def test_an_oversized_websocket_message_gets_513_and_a_close(
    start: Start, certs: Certs
) -> None:
    listener = await start("ws", max_size=2048)
    async with ws_connect(listener, certs) as ws:
        big = register(via="127.0.0.1:9", transport="WS", padding=4000)
        answer = await ws_ask(ws, big)
        assert status(answer) == 513
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_quiet_websocket_is_pinged_and_stays_while_it_answers(
    start: Start, certs: Certs
) -> None:
    listener = await start("ws", idle_timeout=0.4)
    async with ws_connect(listener, certs, ping_interval=None) as ws:
        await asyncio.sleep(1.0)  # well past the idle time: the client answered the pings
        assert status(await ws_ask(ws, register(via="127.0.0.1:9", transport="WS"))) == 200


async def test_the_stream_framer_still_answers_keep_alives_over_tcp(
    start: Start,
) -> None:
    listener = await start("tcp")
    reader, writer = await asyncio.open_connection(*listener.local)
    writer.write(b"\r\n\r\n\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(4), TIMEOUT) == b"\r\n\r\n"
    writer.close()
    assert KeepAlive(2).count == 2


def test_a_secure_kind_needs_a_context(registrar: Registrar, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TLS context"):
        StreamListener(registrar, InFlight(), kind="tls")
