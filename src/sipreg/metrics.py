"""Prometheus metrics, counted from the outcome records and the binding events.

:class:`Metrics` is an outcome listener and a binding event listener: the front
and the registrar tell it what happened, and nothing else in the request path
counts.  Every label takes a bounded set of values (methods outside
:data:`METHODS` count as ``other``); no AOR, user or address is ever a label.
What only the server knows at scrape time (the bindings stored, open
connections, what the transports dropped) is read by the collector the server
registers (:meth:`Metrics.add_collector`).

It also keeps the last ten minutes of REGISTERs and authentication failures in
ten-second buckets, for the status page's chart (:meth:`Metrics.history`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from . import __version__
from .outcome import Outcome
from .registrar.events import BindingEvent

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: unread

#: The methods counted by name; any other is ``other`` (a client chooses the method).
METHODS = frozenset(
    ("REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY", "MESSAGE",
     "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH")
)  # fmt: skip
#: How ``Context.auth`` values count in ``sipreg_auth_total``.
AUTH_RESULTS = {
    "ok": "succeeded",
    "challenged": "challenged",
    "failed": "failed",
    "stale": "stale",
    "replayed": "replayed",
    "invalid": "invalid",
    "banned": "banned",
    "forbidden": "forbidden",
}
#: Seconds of one bucket of :meth:`Metrics.history`, and how many are kept.
HISTORY_STEP = 10
HISTORY_BUCKETS = 60
_DURATIONS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_GROUPS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass
class Totals:
    """Counts since start, for ``/api/stats`` and ``sipreg status``."""

    registers: int = 0
    accepted: int = 0
    challenges: int = 0
    auth_failures: int = 0
    retransmissions: int = 0
    dropped: int = 0


class Metrics:
    """The metrics of one server, in a registry of their own (``registry``)."""

    def __init__(self, *, started: float | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time() if started is None else started
        self.totals = Totals()
        r = self.registry
        self._requests = Counter(
            "sipreg_requests", "Requests received, retransmissions included, by method and"
            " the status sent (none: no answer)", ["method", "status"], registry=r,
        )  # fmt: skip
        self._registers = Counter(
            "sipreg_registers", "REGISTER transactions by result: accepted (200), challenged"
            " (401), refused (other 3xx-6xx but 5xx), failed (5xx), dropped (no answer)",
            ["result"], registry=r,
        )  # fmt: skip
        self._auth = Counter(
            "sipreg_auth", "Digest authentication outcomes", ["result"], registry=r
        )
        self._bans = Counter(
            "sipreg_auth_bans", "Brute-force bans begun (an address, or an address and user)",
            registry=r,
        )  # fmt: skip
        self._retransmissions = Counter(
            "sipreg_retransmissions", "Retransmitted requests absorbed or answered again",
            registry=r,
        )  # fmt: skip
        self._dropped = Counter(
            "sipreg_dropped", "Requests dropped unanswered, by reason", ["reason"], registry=r
        )
        self._rate_limited = Counter(
            "sipreg_rate_limited", "Requests over a source's rate limit, by the action taken",
            ["action"], registry=r,
        )  # fmt: skip
        self._events = Counter(
            "sipreg_binding_events", "Binding changes by type", ["type"], registry=r
        )
        self._duration = Histogram(
            "sipreg_request_duration_seconds", "Seconds from a request's arrival to its answer",
            ["method"], buckets=_DURATIONS, registry=r,
        )  # fmt: skip
        self._store = Histogram(
            "sipreg_store_operation_seconds", "Seconds a store operation took",
            ["operation"], buckets=_DURATIONS, registry=r,
        )  # fmt: skip
        self._groups = Histogram(
            "sipreg_sqlite_commit_group_size", "Changes committed in one SQLite transaction",
            buckets=_GROUPS, registry=r,
        )  # fmt: skip
        self._aors = Gauge("sipreg_aors", "AORs with stored bindings", registry=r)
        self._bindings = Gauge(
            "sipreg_bindings", "Stored bindings (expired ones not yet swept included)", registry=r
        )
        Gauge("sipreg_start_time_seconds", "When the server started (Unix time)", registry=r).set(
            self.started
        )
        Gauge("sipreg_info", "The sipreg version", ["version"], registry=r).labels(__version__).set(
            1
        )
        # Children by label values: labels() on every request costs more than counting.
        self._children: dict[tuple[object, ...], Callable[[], None]] = {}
        self._history: dict[int, list[int]] = {}  # bucket -> [registers, auth failures]

    def observe(self, outcome: Outcome) -> None:
        """Count one outcome record (a front's ``on_outcome``)."""
        method = outcome.method
        name = "unparseable" if method is None else method if method in METHODS else "other"
        status = "none" if outcome.status is None else str(outcome.status)
        self._count(self._requests, name, status)
        if outcome.retransmission:
            self.totals.retransmissions += 1
            self._count(self._retransmissions)
            return
        if outcome.status is not None:
            self._duration.labels(name).observe(outcome.duration)
        if outcome.status is None and outcome.reason.startswith("dropped"):
            self.totals.dropped += 1
            self._count(self._dropped, _drop_reason(outcome))
        if outcome.guard == "rate limit":
            self._count(self._rate_limited, "503" if outcome.status is not None else "drop")
        auth = AUTH_RESULTS.get(outcome.auth or "")
        if auth is not None:
            self._count(self._auth, auth)
        if method == "REGISTER":
            self._register(outcome, auth)

    def _register(self, outcome: Outcome, auth: str | None) -> None:
        totals, status = self.totals, outcome.status
        totals.registers += 1
        bucket = self._bucket(outcome.at)
        bucket[0] += 1
        if status is None:
            result = "dropped"
        elif status < 300:
            result = "accepted"
            totals.accepted += 1
        elif status == 401 and auth in ("challenged", "stale", "replayed", "invalid"):
            result = "challenged"
            totals.challenges += 1
        else:
            result = "failed" if status >= 500 else "refused"
        if auth in ("failed", "banned"):
            totals.auth_failures += 1
            bucket[1] += 1
        self._count(self._registers, result)

    def observe_event(self, event: BindingEvent) -> None:
        """Count one binding event (an ``Events`` listener)."""
        self._count(self._events, event.type)

    def observe_ban(self) -> None:
        """Count a new brute-force ban."""
        self._count(self._bans)

    def observe_store(self, operation: str, seconds: float) -> None:
        """Time one store operation (``load``, ``apply``, ``expire``...)."""
        self._store.labels(operation).observe(seconds)

    def observe_commit(self, changes: int) -> None:
        """Count one SQLite commit of ``changes`` changes."""
        self._groups.observe(changes)

    def set_counts(self, aors: int, bindings: int) -> None:
        """The AORs and bindings the store holds now (read at each scrape)."""
        self._aors.set(aors)
        self._bindings.set(bindings)

    def add_collector(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Have ``collect`` yield more metric families at every scrape."""
        self.registry.register(_Collector(collect))

    def history(self, now: float) -> tuple[list[int], list[int]]:
        """REGISTERs and auth failures in each of the last buckets, oldest first.

        ``now`` is on the clock of the outcome records' ``at`` (monotonic).
        """
        last = int(now // HISTORY_STEP)
        rows = [self._history.get(b, [0, 0]) for b in range(last - HISTORY_BUCKETS + 1, last + 1)]
        return [r[0] for r in rows], [r[1] for r in rows]

    def _bucket(self, at: float) -> list[int]:
        index = int(at // HISTORY_STEP)
        bucket = self._history.get(index)
        if bucket is None:
            bucket = self._history[index] = [0, 0]
            for old in [b for b in self._history if b <= index - HISTORY_BUCKETS]:
                del self._history[old]
        return bucket

    def _count(self, counter: Counter, *labels: str) -> None:
        key = (id(counter), *labels)
        inc = self._children.get(key)
        if inc is None:
            inc = self._children[key] = (counter.labels(*labels) if labels else counter).inc
        inc()


def _drop_reason(outcome: Outcome) -> str:
    """A bounded name for why a request went unanswered."""
    if outcome.guard is not None:
        return outcome.guard.replace(" ", "_")
    return "unparseable" if outcome.method is None else "other"


class _Collector(Collector):
    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()
