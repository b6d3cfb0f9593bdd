"""Where a response goes: RFC 3261 sections 18.2.1/18.2.2 with RFC 3581 rport."""

from __future__ import annotations

import ipaddress

from ._scan import split_commas
from .errors import ParseError
from .headers import Headers, Via, parse_via
from .message import Request


def _same_address(host: str, ip: str) -> bool:
    if host == ip:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")) == ipaddress.ip_address(ip)
    except ValueError:
        return False


def stamped(via: Via, source: tuple[str, int]) -> Via | None:
    """``via`` with ``received`` (and ``rport`` filled in) as a server must set them.

    ``received`` is added when the sent-by host is not the source address, or
    when the client asked for ``rport`` (RFC 3581 section 4).  A ``received``
    or ``rport`` value the client wrote itself is replaced: only the address the
    request came from may steer the response.  None when nothing changes.
    """
    ip, port = source
    ip = ip.partition("%")[0]  # a link-local source's scope is not part of an address
    rport = via.param("rport")
    if rport is None and via.param("received") is None and _same_address(via.host, ip):
        return None
    params = [(n, v) for n, v in via.params if n.lower() not in ("received", "rport")]
    if rport is not None:
        params.append(("rport", str(port)))
    if rport is not None or not _same_address(via.host, ip):
        # via-received is a bare IPv6address (RFC 3261 section 25); RFC 5118 section 4.5
        # has receivers accept the bracketed form too.
        params.append(("received", ip))
    return Via(via.transport, via.host, via.port, tuple(params))


def stamp_request(request: Request, source: tuple[str, int]) -> None:
    """Stamp the top Via of ``request`` (:func:`stamped`); nothing if it is unreadable."""
    try:
        new = stamped(request.vias[0], source)
        if new is not None:
            request.replace_top_via(new)
    except ParseError:  # say an empty first Via line: its 400 goes to the source
        return


def stamp_received(headers: Headers, source: tuple[str, int]) -> None:
    """Stamp the top Via of bare header fields (a request that did not parse whole)."""
    lines = headers.get_all("via")
    if not lines:
        return
    try:
        first_line = split_commas(lines[0], "Via")
        new = stamped(parse_via(first_line[0]), source)
    except ParseError:
        return
    if new is not None:
        first_line[0] = str(new)
        headers.replace_first("via", ", ".join(first_line))


def via_destination(via: Via, source: tuple[str, int]) -> tuple[str, int]:
    """The address a response over an unreliable transport is sent to (section 18.2.2).

    The host is always the source address, which :func:`stamped` has written into
    ``received`` (kept with its IPv6 scope).  ``maddr`` is deliberately not
    honoured: it would let any request aim this server's responses at a third
    party.  The port is the source port when the client asked for ``rport``
    (RFC 3581), else the sent-by port or 5060.
    """
    if via.param("rport") is not None:
        return source
    return source[0], via.port or 5060


def response_destination(headers: Headers, source: tuple[str, int]) -> tuple[str, int]:
    """:func:`via_destination` of the top Via in ``headers``; the source if unreadable."""
    try:
        via = parse_via(split_commas(headers.get_all("via")[0], "Via")[0])
    except (ParseError, IndexError):
        return source
    return via_destination(via, source)
