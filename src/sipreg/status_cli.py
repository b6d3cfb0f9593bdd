"""``sipreg status``: a running server's ``/api/stats``, asked of its admin listener.

Only the standard library (urllib): the command needs nothing the server does not.
The token is sent and never printed, not even in an error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Final

DEFAULT_ADMIN: Final = "http://127.0.0.1:8080"
#: Seconds to wait for the admin listener's answer.
TIMEOUT: Final = 5.0


class StatusError(Exception):
    """No summary: the one line why (unreachable, refused, not sipreg)."""


class Unauthorized(StatusError):
    """The listener answered 401: no token, or not its token."""


def read_token(path: str) -> str | None:
    """The token in the file at ``path``, stripped; None when there is no such file."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StatusError(f"cannot read the token file {path}: {err.strerror}") from None


def fetch_stats(admin: str, token: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """``GET /api/stats`` of the admin listener at ``admin`` (a URL, or HOST:PORT)."""
    base = (admin if "://" in admin else f"http://{admin}").rstrip("/")
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(f"{base}/api/stats", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            stats = json.load(response)
    except urllib.error.HTTPError as err:
        if err.code == 401:
            said = "without a token" if token is None else "refused the token"
            raise Unauthorized(f"{base} answered 401 Unauthorized: {said}") from None
        raise StatusError(f"{base} answered {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise StatusError(f"cannot reach {base}: {err.reason}") from None
    except (OSError, ValueError) as err:  # a timeout, a reset, a body that is not JSON
        raise StatusError(f"no answer from {base}: {err}") from None
    if not isinstance(stats, dict):
        raise StatusError(f"{base} answered no stats object")
    return stats


def summary(stats: dict[str, Any]) -> list[str]:
    """The lines ``sipreg status`` prints for ``stats`` (the ``/api/stats`` object)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stats["started"]))
    connections: dict[str, int] = stats["connections"]
    by_transport = ", ".join(f"{name} {n}" for name, n in connections.items())
    t, history = stats["totals"], stats["history"]
    recent = max(1, round(60 / history["step"]))
    return [
        f"sipreg {stats['version']}, up {duration(stats['uptime'])} (since {started})",
        f"store        {stats['store']}",
        f"node         {stats['node']}",
        f"listeners    {' '.join(stats['listeners'])}",
        f"bindings     {stats['bindings']} of {stats['aors']} AOR(s)",
        f"connections  {sum(connections.values())} ({by_transport or 'none'})",
        f"totals       {t['registers']} REGISTERs: {t['accepted']} accepted,"
        f" {t['challenges']} challenges, {t['auth_failures']} auth failures;"
        f" {t['retransmissions']} retransmissions, {t['dropped']} dropped",
        f"last minute  {sum(history['registers'][-recent:])} REGISTERs,"
        f" {sum(history['auth_failures'][-recent:])} auth failures",
    ]


def status(admin: str, token_file: str) -> list[str]:
    """The summary of the server whose admin listener is at ``admin``; raises StatusError."""
    token = read_token(token_file)
    try:
        stats = fetch_stats(admin, token)
    except Unauthorized as err:
        if token is None:
            raise Unauthorized(f"{err}: there is no {token_file} (see --token-file)") from None
        raise
    try:
        return summary(stats)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        what = f"{type(err).__name__}: {err}"
        raise StatusError(f"the answer is not sipreg's stats ({what})") from None


def duration(seconds: float) -> str:
    """``seconds`` as days, hours, minutes and seconds, largest first, zeros left out."""
    rest = max(0, int(seconds))
    parts = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return " ".join([*parts, f"{rest}s"])
