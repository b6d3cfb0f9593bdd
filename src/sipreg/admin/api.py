"""The admin API's JSON: bindings, events, page cursors and query parameters.

Pure functions, so that what the API says is tested without a listener.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import format_address
from ..registrar.binding import Binding
from ..registrar.events import BindingEvent

#: The most bindings one page holds, and the default.
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100


def binding_json(binding: Binding, now: float) -> dict[str, Any]:
    """A binding as ``/api/bindings`` lists it."""
    return {
        "aor": binding.aor,
        "contact": binding.contact,
        "key": binding.key,
        "expires": binding.expires_at,
        "expires_in": binding.remaining(now),
        "q": binding.q,
        "call_id": binding.call_id,
        "cseq": binding.cseq,
        "user_agent": binding.user_agent,
        "source": _source(binding),
        "transport": binding.transport,
        "connection": binding.connection,
        "node": binding.node,
        "registered_at": binding.registered_at,
    }


def event_json(event: BindingEvent) -> dict[str, Any]:
    """A binding event as ``/api/events`` and the webhooks send it."""
    binding = event.binding
    gone = event.type in ("removed", "expired", "evicted")
    return {
        "id": event.id,
        "type": event.type,
        "cause": event.cause,
        "aor": binding.aor,
        "contact": binding.contact,
        "key": binding.key,
        "at": event.at,
        "expires": None if gone else binding.expires_at,
        "source": _source(binding),
        "user_agent": binding.user_agent,
        "node": binding.node,
    }


def sse(event: BindingEvent) -> bytes:
    """One server-sent event (``event: binding``) for ``event``."""
    data = json.dumps(event_json(event), separators=(",", ":"))
    return f"id: {event.id}\nevent: binding\ndata: {data}\n\n".encode()


def remote_sse(event: dict[str, Any]) -> bytes:
    """One server-sent event for another node's ``event`` (its JSON): no id, numbered there."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: binding\ndata: {data}\n\n".encode()


def _source(binding: Binding) -> str | None:
    host, port = binding.source
    return format_address(binding.transport, host, port) if host else None


@dataclass(frozen=True)
class PageQuery:
    """What ``GET /api/bindings`` asks: one AOR, or a page of those with a prefix."""

    aor: str | None = None
    prefix: str = ""
    limit: int = DEFAULT_LIMIT
    after: tuple[str, str] | None = None


def page_query(params: Mapping[str, str]) -> PageQuery:
    """The query of ``params``; raises ``ValueError`` saying what is wrong."""
    unknown = sorted(set(params) - {"aor", "prefix", "limit", "cursor"})
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(unknown)}")
    try:
        limit = int(params.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise ValueError("limit: expected a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit: must be between 1 and {MAX_LIMIT}")
    cursor = params.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    aor = params.get("aor") or None
    return PageQuery(aor=aor, prefix=params.get("prefix", ""), limit=limit, after=after)


def encode_cursor(binding: Binding) -> str:
    """The cursor of the page that follows ``binding``."""
    raw = json.dumps([binding.aor, binding.key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The ``(aor, key)`` a cursor stands for; raises ``ValueError`` for a forged one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        aor, key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError("cursor: not one this server gave") from None
    if not isinstance(aor, str) or not isinstance(key, str):
        raise ValueError("cursor: not one this server gave")
    return aor, key
