"""What ``--admin`` adds to a server: metrics wired to its pieces, the listener, webhooks.

:class:`AdminService` is made before the registrar (its outcome listener goes
into the front) and started once the server listens.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..auth.step import Authorize
from ..auth.users import too_open
from ..config import Config
from ..keyfile import load_or_create_secret
from ..metrics import Metrics
from ..outcome import Outcome, OutcomeLog
from ..registrar.facade import Registrar
from ..store.base import BindingStore
from ..store.redis import RedisStore
from ..store.sqlite import SqliteStore
from ..store.timed import TimedStore
from ..transport.stream import StreamListener
from ..transport.udp import UdpLeg
from .listener import AdminListener
from .relay import EventRelay
from .webhooks import Webhooks

log = logging.getLogger("sipreg.admin")

TRANSPORTS = ("tcp", "tls", "ws", "wss")


class AdminService:
    """The metrics, admin listener and webhooks of one server (``config.admin`` set)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.listener: AdminListener | None = None
        self.relay: EventRelay | None = None
        self.webhooks = Webhooks(config.webhooks, timeout=config.webhook_timeout)
        self._log = OutcomeLog()

    def on_outcome(self, outcome: Outcome) -> None:
        """The front's outcome listener: the log line, then the counts."""
        self._log(outcome)
        self.metrics.observe(outcome)

    def timed(self, store: BindingStore) -> BindingStore:
        """``store`` as the registrar should use it: timed, and its commits counted."""
        if isinstance(store, SqliteStore):
            store.on_commit = self.metrics.observe_commit
        return TimedStore(store, self.metrics.observe_store)

    async def start(
        self,
        registrar: Registrar,
        authorize: Authorize | None,
        bound: list[str],
        udp: list[UdpLeg],
        streams: list[StreamListener],
    ) -> None:
        """Count the registrar's events and bans, then listen on ``config.admin``."""
        config, metrics = self.config, self.metrics
        registrar.events.listen(metrics.observe_event)
        if authorize is not None:
            authorize.on_ban = lambda ban: metrics.observe_ban()
        metrics.add_collector(lambda: _transport_metrics(udp, streams))
        token, made = self._token()

        def describe() -> dict[str, Any]:
            return {
                "store": config.store_name,
                "node": config.node_id,
                "listeners": list(bound),
                "connections": _connections(streams),
            }

        store = registrar.store.inner if isinstance(registrar.store, TimedStore) else None
        if isinstance(store, RedisStore):  # the other nodes' events too
            self.relay = EventRelay(store, config.node_id or "")
            registrar.events.listen(self.relay.publish)
            await self.relay.start()
        listener = AdminListener(registrar, metrics, token, describe, relay=self.relay)
        address = config.admin_address
        assert address is not None
        try:
            await listener.start(*address)
        except OSError as err:
            raise OSError(f"cannot listen on the admin address {config.admin}: {err}") from err
        self.listener = listener
        if config.webhooks:
            await self.webhooks.start()
            registrar.events.listen(self.webhooks)
        host, port = listener.address
        url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
        if made:  # shown once, as Jupyter does; later starts name the file instead
            log.info("status page: %s#token=%s", url, token)
        else:
            log.info("status page: %s (token in %s)", url, config.admin_token_path)

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self.relay is not None:
            await self.relay.stop()
        await self.webhooks.stop()

    def _token(self) -> tuple[str, bool]:
        """The bearer token, and whether it was made just now (no token file given)."""
        path = self.config.admin_token_path
        if self.config.admin_token_file is not None:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
            if len(token) < 16:
                raise ValueError(f"admin token file {path}: the token needs 16 characters or more")
            if too_open(path):
                log.warning(
                    "admin token file %s can be read by others: it is a secret (chmod 600)", path
                )
            return token, False
        existed = os.path.exists(path)
        made = load_or_create_secret(
            path, lambda: secrets.token_urlsafe(32).encode(), "admin token"
        )
        return made.decode().strip(), not existed


def _connections(streams: list[StreamListener]) -> dict[str, int]:
    counts = dict.fromkeys(TRANSPORTS, 0)
    for listener in streams:
        counts[listener.kind] = counts.get(listener.kind, 0) + len(listener.connections)
    return counts


def _transport_metrics(udp: list[UdpLeg], streams: list[StreamListener]) -> Iterable[Metric]:
    """What the transports know at scrape time: open connections, and what they dropped."""
    open_ = GaugeMetricFamily(
        "sipreg_connections", "Open connections by transport", labels=["transport"]
    )
    for transport, count in _connections(streams).items():
        open_.add_metric([transport], count)
    yield open_
    dropped = CounterMetricFamily(
        "sipreg_connections_dropped",
        "Connections refused or closed by a limit, by transport and limit",
        labels=["transport", "reason"],
    )
    totals: dict[tuple[str, str], int] = {}
    for listener in streams:
        for reason, count in listener.drops.items():
            key = (listener.kind, reason)
            totals[key] = totals.get(key, 0) + count
    for (transport, reason), count in sorted(totals.items()):
        dropped.add_metric([transport, reason], count)
    yield dropped
    datagrams = CounterMetricFamily(
        "sipreg_datagrams_dropped",
        "UDP datagrams dropped unread because too many requests were in progress",
    )
    datagrams.add_metric([], sum(leg.dropped for leg in udp))
    yield datagrams
