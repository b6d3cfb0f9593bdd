"""A fixed clock, an in-memory leg and request builders for the registrar tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipreg.leg import Capabilities
from sipreg.message import Request, Response, parse_message
from sipreg.registrar.facade import Registrar
from sipreg.registrar.policy import Policy
from sipreg.uri import NameAddr, parse_name_addr

START = 1_000_000.0
SERVER_IP = "192.0.2.1"
CLIENT = ("198.51.100.7", 5062)
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"

_branches = itertools.count(1)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeLeg:
    """A socket that collects what is sent through it."""

    transport: str = "udp"
    local: tuple[str, int] = (SERVER_IP, 5060)
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    connection_id: str | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities.of(self.transport)

    def deliver(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def responses(self) -> list[Response]:
        """Everything sent, parsed; each must be a response."""
        out = []
        for data, _ in self.sent:
            message = parse_message(data)
            assert isinstance(message, Response), data
            out.append(message)
        return out

    def last(self) -> Response:
        """The last response sent."""
        assert self.sent, "nothing was sent"
        return self.responses()[-1]


def branch() -> str:
    """A fresh RFC 3261 branch, so each request is a new transaction."""
    return f"z9hG4bK-test-{next(_branches)}"


def build(
    method: str,
    ruri: str,
    *,
    to: str | None = ALICE,
    from_: str | None = None,
    call_id: str | None = "call-1@client.example.net",
    cseq: int | str | None = 1,
    cseq_method: str | None = None,
    via: str | None = None,
    contacts: Sequence[str] = (),
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> bytes:
    """A request's wire form; a None field is left out."""
    lines = [f"{method} {ruri} SIP/2.0"]
    lines.append(f"Via: {via or f'SIP/2.0/UDP {CLIENT[0]}:{CLIENT[1]};branch={branch()}'}")
    lines.append("Max-Forwards: 70")
    if to is not None:
        lines.append(f"To: <{to}>")
    if from_ is not None or to is not None:
        lines.append(f"From: <{from_ or to}>;tag=from-tag-1")
    if call_id is not None:
        lines.append(f"Call-ID: {call_id}")
    if cseq is not None:
        lines.append(f"CSeq: {cseq} {cseq_method or method}")
    lines.extend(f"Contact: {c}" for c in contacts)
    lines.extend(f"{name}: {value}" for name, value in extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def register(
    *contacts: str,
    aor: str = ALICE,
    ruri: str = "sip:example.com",
    expires: int | str | None = None,
    **kw: Any,
) -> bytes:
    """A REGISTER for ``aor`` binding ``contacts`` (a query when there are none)."""
    extra = list(kw.pop("extra", ()))
    if expires is not None:
        extra.append(("Expires", str(expires)))
    return build("REGISTER", ruri, to=aor, contacts=contacts, extra=extra, **kw)


def request(data: bytes) -> Request:
    """Parse a request built by :func:`build`."""
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def contacts_of(response: Response) -> list[NameAddr]:
    """The Contact values of a response."""
    return [parse_name_addr(v, "Contact") for v in response.headers.values("contact")]


def listed(response: Response) -> dict[str, int]:
    """Contact URI -> its ``expires`` parameter, as a 200 or 302 lists them."""
    out = {}
    for c in contacts_of(response):
        expires = c.param("expires")
        assert expires is not None and expires.isdigit(), c
        out[str(c.uri)] = int(expires)
    return out


def make_registrar(clock: Clock | None = None, **kw: Any) -> Registrar:
    """A registrar for example.com (and subdomains) at 192.0.2.1 on one fixed clock."""
    kw.setdefault("domains", ["example.com"])
    kw.setdefault("identities", [SERVER_IP, "registrar.example.net"])
    clock = clock or Clock()
    return Registrar(clock=clock, timer_clock=clock, **kw)


def policy(**kw: Any) -> Policy:
    """The policy of :func:`make_registrar`."""
    kw.setdefault("domains", ("example.com",))
    kw.setdefault("identities", (SERVER_IP, "registrar.example.net"))
    return Policy(**kw)
