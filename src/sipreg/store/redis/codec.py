"""How a binding, an AOR's hash and a name look in Redis: bytes, whatever came on the wire."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ...registrar.binding import AorState, Binding


def to_bytes(text: str) -> bytes:
    """``text`` as Redis keeps it: UTF-8, the bytes that were not UTF-8 on the wire as they were."""
    return text.encode("utf-8", "surrogateescape")


def to_text(raw: bytes) -> str:
    """What :func:`to_bytes` made ``raw`` from."""
    return raw.decode("utf-8", "surrogateescape")


def state_of(aor: str, fields: Mapping[Any, Any]) -> AorState:
    """The state of ``aor`` from its hash's fields (bytes: replies are not decoded)."""
    version = fields.get(b"v")
    bindings = sorted(
        (decode(blob) for field, blob in fields.items() if field.startswith(b"b")),
        key=lambda b: b.key,
    )
    return AorState(aor, tuple(bindings), int(version) if version is not None else 0)


def encode(b: Binding) -> bytes:
    """A binding as the bytes Redis keeps: a JSON array, every field in order.

    Text that was not UTF-8 on the wire (surrogate escapes) round-trips exactly.
    """
    fields = (
        b.aor, b.key, b.contact, b.expires_at, b.call_id, b.cseq, b.q, b.params,
        b.registered_at, b.source, b.transport, b.local, b.user_agent, b.instance,
        b.reg_id, b.path, b.connection, b.node,
    )  # fmt: skip
    return json.dumps(fields, separators=(",", ":")).encode("ascii")


def decode(blob: bytes) -> Binding:
    """The binding :func:`encode` made ``blob`` from."""
    (
        aor, key, contact, expires_at, call_id, cseq, q, params, registered_at, source,
        transport, local, user_agent, instance, reg_id, path, connection, node,
    ) = json.loads(blob)  # fmt: skip
    return Binding(
        aor=aor,
        key=key,
        contact=contact,
        expires_at=float(expires_at),
        call_id=call_id,
        cseq=cseq,
        q=None if q is None else float(q),
        params=tuple((name, value) for name, value in params),
        registered_at=float(registered_at),
        source=(source[0], source[1]),
        transport=transport,
        local=(local[0], local[1]),
        user_agent=user_agent,
        instance=instance,
        reg_id=reg_id,
        path=tuple(path),
        connection=connection,
        node=node,
    )
