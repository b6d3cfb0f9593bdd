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
    """Add ``received`` (and fill an empty ``rport``) to the top Via, as a server must.

    ``received`` is added when the sent-by host is not the source address, or
    when the client asked for ``rport``.  Nothing changes if the Via is unreadable.
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
    if rport == "":
        value = _drop_param(value, "rport") + f";rport={port}"
    if (rport is not None or not _same_address(via.host, ip)) and via.param("received") is None:
        value += f";received={ip}"
    if value == first_line[0]:
        return
    first_line[0] = value
    headers.replace_first("via", ", ".join(first_line))


def _drop_param(value: str, name: str) -> str:
    parts = value.split(";")
    return ";".join(p for i, p in enumerate(parts) if i == 0 or p.strip().lower() != name)


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
    received = via.param("received") or source[0]
    rport = via.param("rport")
    if rport:
        return received, int(rport)
    if rport == "":
        return source
    port = via.port or 5060
    host = canonical_host(received).strip("[]")
    return host, port
