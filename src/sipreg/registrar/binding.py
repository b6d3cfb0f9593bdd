"""The binding model: a Contact bound to an AOR, an AOR's stored state, and a change to it."""

from __future__ import annotations

import math
from typing import Final

from .._value import Value
from ..errors import ParseError
from ..uri import parse_uri, uri_equal


class Binding(Value):
    """A contact address bound to an AOR until ``expires_at`` (seconds since the epoch).

    ``contact`` is the contact URI as the client sent it.  ``key`` tells the
    AOR's bindings apart: the contact URI itself (two bindings of one AOR never
    hold URIs equal by RFC 3261 section 19.1.4), or, for an outbound binding
    (RFC 5626 section 6), its instance and reg-id (:func:`outbound_key`).
    ``params`` are the Contact header parameters other than ``expires`` and
    ``q``, in order, so the 200 OK can list them back.  ``source``,
    ``transport`` and ``local`` say where the REGISTER came from and on which
    socket; ``connection`` names the connection it came over when the binding
    lives only as long as that connection does (WebSocket, or TCP/TLS with
    ``bind_to_connection``).  ``node`` names the registrar node that took it
    (:attr:`~sipreg.registrar.policy.Policy.node`): nodes sharing a store tell
    their own bindings from the others'.
    """

    __slots__ = (
        "aor",
        "call_id",
        "connection",
        "contact",
        "cseq",
        "expires_at",
        "instance",
        "key",
        "local",
        "node",
        "params",
        "path",
        "q",
        "reg_id",
        "registered_at",
        "source",
        "transport",
        "user_agent",
    )
    aor: Final[str]
    contact: Final[str]
    expires_at: Final[float]
    call_id: Final[str]
    cseq: Final[int]
    q: Final[float | None]
    params: Final[tuple[tuple[str, str | None], ...]]
    registered_at: Final[float]
    source: Final[tuple[str, int]]
    transport: Final[str]
    local: Final[tuple[str, int]]
    user_agent: Final[str | None]
    instance: Final[str | None]
    reg_id: Final[int | None]
    path: Final[tuple[str, ...]]
    key: Final[str]
    connection: Final[str | None]
    node: Final[str]

    def __init__(
        self,
        *,
        aor: str,
        contact: str,
        expires_at: float,
        call_id: str,
        cseq: int,
        q: float | None = None,
        params: tuple[tuple[str, str | None], ...] = (),
        registered_at: float = 0.0,
        source: tuple[str, int] = ("", 0),
        transport: str = "udp",
        local: tuple[str, int] = ("", 0),
        user_agent: str | None = None,
        instance: str | None = None,
        reg_id: int | None = None,
        path: tuple[str, ...] = (),
        key: str = "",
        connection: str | None = None,
        node: str = "",
    ) -> None:
        self.aor = aor
        self.contact = contact
        self.expires_at = expires_at
        self.call_id = call_id
        self.cseq = cseq
        self.q = q
        self.params = params
        self.registered_at = registered_at
        self.source = source
        self.transport = transport
        self.local = local
        self.user_agent = user_agent
        self.instance = instance
        self.reg_id = reg_id
        self.path = path
        self.key = key or contact
        self.connection = connection
        self.node = node

    def remaining(self, now: float) -> int:
        """Whole seconds left before expiry, rounded up: a live binding never shows 0."""
        return max(0, math.ceil(self.expires_at - now))

    def preference(self) -> tuple[float, float]:
        """Sort key, best first: highest q (no q counts as 1.0), then most recently registered."""
        return (-(1.0 if self.q is None else self.q), -self.registered_at)

    def is_expired(self, now: float) -> bool:
        """True once ``now`` has reached the expiry time."""
        return self.expires_at <= now

    def names(self, contact: str) -> bool:
        """True when ``contact`` (``<>`` allowed) is this binding's key or names its contact.

        Contact URIs compare by RFC 3261 section 19.1.4.
        """
        text = contact.strip().removeprefix("<").removesuffix(">")
        if text == self.key:
            return True
        try:
            return uri_equal(parse_uri(self.contact), parse_uri(text))
        except ParseError:
            return self.contact == text


class AorState(Value):
    """An AOR's stored bindings (expired ones included, sorted by key) and its version.

    The version is 0 exactly while the AOR has no bindings.  Every successful
    ``apply`` or ``expire`` that leaves it bindings gives it a version it never
    had before, so a change planned on any earlier state with bindings
    conflicts.  A change planned on the empty state applies whenever the AOR
    is empty again: it was planned on the same content, so it is as valid as if
    it had waited its turn.  Nothing but a change to the AOR moves its version.
    """

    __slots__ = ("aor", "bindings", "version")
    aor: Final[str]
    bindings: Final[tuple[Binding, ...]]
    version: Final[int]

    def __init__(self, aor: str, bindings: tuple[Binding, ...], version: int) -> None:
        self.aor = aor
        self.bindings = bindings
        self.version = version


class Change(Value):
    """What one REGISTER does to one AOR: remove these bindings, then upsert those.

    ``remove`` holds stored ``Binding.key`` strings.  ``upsert`` replaces a
    binding with the same ``key`` or adds one.  ``version`` is the version
    the change was planned against.  Raises ``ValueError`` if a binding to
    upsert belongs to another AOR.
    """

    __slots__ = ("aor", "remove", "upsert", "version")
    aor: Final[str]
    version: Final[int]
    remove: Final[tuple[str, ...]]
    upsert: Final[tuple[Binding, ...]]

    def __init__(
        self, aor: str, version: int, remove: tuple[str, ...] = (), upsert: tuple[Binding, ...] = ()
    ) -> None:
        strangers = [b.contact for b in upsert if b.aor != aor]
        if strangers:
            raise ValueError(f"change for {aor!r} upserts other AORs' bindings: {strangers}")
        self.aor = aor
        self.version = version
        self.remove = remove
        self.upsert = upsert

    @property
    def empty(self) -> bool:
        """True when the change writes nothing."""
        return not self.remove and not self.upsert

    def applied_to(self, before: AorState, version: int) -> AorState:
        """The state this change makes of ``before`` (the state it was planned on).

        ``version`` is the one the store stamped; with no binding left it is 0.
        """
        kept = {b.key: b for b in before.bindings if b.key not in self.remove}
        kept.update((b.key, b) for b in self.upsert)
        return AorState(self.aor, tuple(kept[k] for k in sorted(kept)), version if kept else 0)


def outbound_key(instance: str, reg_id: int) -> str:
    """The key of an outbound binding: its ``+sip.instance`` and ``reg-id`` (RFC 5626 6).

    No contact URI starts with ``<``, so no URI-keyed binding has this key.
    """
    return f"<{instance}>;reg-id={reg_id}"
