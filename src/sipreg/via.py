"""Where a response goes: RFC 3261 sections 18.2.1/18.2.2 with RFC 3581 rport."""

from __future__ import annotations

import ipaddress

from ._scan import split_commas
from .errors import ParseError
from .headers import Headers, parse_via
from .uri import canonical_host


def _same_address(host: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def stamp_received(headers: Headers, source: tuple[str, int]) -> None:
    """Add ``received`` (and fill in ``rport``) on the top Via, as a server must.

    ``received`` is added when the sent-by host is not the source address, or
    when the client asked for ``rport`` (RFC 3581 section 4).  A ``received``
    or ``rport`` value the client wrote itself is replaced: only the address the
    request came from may steer the response.  Nothing changes if the Via is
    unreadable.
    """
    lines = headers.get_all("via")
    if not lines:
        return
    try:
        first_line = split_commas(lines[0], "Via")
        via = parse_via(first_line[0])
    except ParseError:
        return
    ip, port = source
    value = first_line[0]
    rport = via.param("rport")
    if via.param("received") is not None:
        value = _drop_param(value, "received")
    if rport is not None:
        value = _drop_param(value, "rport") + f";rport={port}"
    if rport is not None or not _same_address(via.host, ip):
        # via-received is a bare IPv6address (RFC 3261 section 25); RFC 5118 section 4.5
        # has receivers accept the bracketed form too.
        value += f";received={ip}"
    if value == first_line[0]:
        return
    first_line[0] = value
    headers.replace_first("via", ", ".join(first_line))


def _drop_param(value: str, name: str) -> str:
    parts = value.split(";")
    return ";".join(
        p for i, p in enumerate(parts) if i == 0 or p.split("=")[0].strip().lower() != name
    )


def response_destination(headers: Headers, source: tuple[str, int]) -> tuple[str, int]:
    """The address a response over an unreliable transport is sent to (section 18.2.2).

    With ``rport`` the reply goes to the source address and port; otherwise to
    ``received`` (or the source address) and the sent-by port, 5060 by default.
    An unreadable Via falls back to the source address.
    """
    try:
        via = parse_via(split_commas(headers.get_all("via")[0], "Via")[0])
    except (ParseError, IndexError):
        return source
    received = canonical_host(via.param("received") or source[0]).strip("[]")
    rport = via.param("rport")
    if rport is not None:
        if rport.isdigit() and rport.isascii() and 0 < int(rport) < 65536:
            return received, int(rport)
        return source  # not filled in (or nonsense): the source is all we know
    return received, via.port or 5060
