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

import bisect
import itertools
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from . import __version__
from .outcome import Outcome
from .registrar.events import BindingEvent

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


class _Family:
    """Counts by label values, kept as plain ints: a request costs a dict update."""

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.labels = name, help, labels
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        counts = self.counts
        counts[values] = counts.get(values, 0) + 1

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.help, labels=self.labels)
        counts = self.counts if self.counts or self.labels else {(): 0}  # 0, not absent
        for values, count in sorted(counts.items()):
            family.add_metric(values, count)
        return family


class _Histogram:
    """A histogram by label values: bucket counts and a sum, plain numbers."""

    def __init__(
        self, name: str, help: str, bounds: tuple[float, ...], labels: tuple[str, ...] = ()
    ) -> None:
        self.name, self.help, self.labels, self.bounds = name, help, labels, bounds
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *values: str) -> None:
        series = self.series.get(values)
        if series is None:
            series = self.series[values] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect.bisect_left(self.bounds, value)] += 1
        series[1][0] += value

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.help, labels=self.labels)
        for values, (counts, total) in sorted(self.series.items()):
            cumulative = list(itertools.accumulate(counts))
            buckets = [(_le(b), float(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(values), buckets, total[0])
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


class Metrics:
    """The metrics of one server, in a registry of their own (``registry``).

    Counting is plain arithmetic on the request path; the Prometheus families
    are made only when scraped.
    """

    def __init__(self, *, started: float | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.started = time.time() if started is None else started
        self._requests = _Family(
            "sipreg_requests", "Requests received, retransmissions included, by method and"
            " the status sent (none: no answer)", ("method", "status"),
        )  # fmt: skip
        self._registers = _Family(
            "sipreg_registers", "REGISTER transactions by result: accepted (2xx), challenged"
            " (401), refused (other 3xx-6xx but 5xx), failed (5xx), dropped (no answer)",
            ("result",),
        )  # fmt: skip
        self._auth = _Family("sipreg_auth", "Digest authentication outcomes", ("result",))
        self._bans = _Family(
            "sipreg_auth_bans", "Brute-force bans begun (an address, or an address and user)"
        )
        self._retransmissions = _Family(
            "sipreg_retransmissions", "Retransmitted requests absorbed or answered again"
        )
        self._dropped = _Family(
            "sipreg_dropped", "Requests dropped unanswered, by reason", ("reason",)
        )
        self._rate_limited = _Family(
            "sipreg_rate_limited", "Requests over a source's rate limit, by the action taken",
            ("action",),
        )  # fmt: skip
        self._events = _Family("sipreg_binding_events", "Binding changes by type", ("type",))
        self._duration = _Histogram(
            "sipreg_request_duration_seconds", "Seconds from a request's arrival to its answer",
            _DURATIONS, ("method",),
        )  # fmt: skip
        self._store = _Histogram(
            "sipreg_store_operation_seconds", "Seconds a store operation took",
            _DURATIONS, ("operation",),
        )  # fmt: skip
        self._groups = _Histogram(
            "sipreg_sqlite_commit_group_size", "Changes committed in one SQLite transaction",
            _GROUPS,
        )  # fmt: skip
        self._aors = 0
        self._bindings = 0
        self._history: dict[int, list[int]] = {}  # bucket -> [registers, auth failures]
        self.add_collector(self._collect)

    def _collect(self) -> Iterable[Metric]:
        for family in (
            self._requests, self._registers, self._auth, self._bans, self._retransmissions,
            self._dropped, self._rate_limited, self._events, self._duration, self._store,
            self._groups,
        ):  # fmt: skip
            yield family.collect()
        yield GaugeMetricFamily("sipreg_aors", "AORs with stored bindings", value=self._aors)
        yield GaugeMetricFamily(
            "sipreg_bindings", "Stored bindings (expired ones not yet swept included)",
            value=self._bindings,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "sipreg_start_time_seconds", "When the server started (Unix time)", value=self.started
        )
        info = GaugeMetricFamily("sipreg_info", "The sipreg version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

    def observe(self, outcome: Outcome) -> None:
        """Count one outcome record (a front's ``on_outcome``)."""
        method = outcome.method
        name = "unparseable" if method is None else method if method in METHODS else "other"
        status = "none" if outcome.status is None else str(outcome.status)
        self._requests.inc(name, status)
        if outcome.retransmission:
            self._retransmissions.inc()
            return
        if outcome.status is not None:
            self._duration.observe(outcome.duration, name)
        if outcome.status is None and outcome.reason.startswith("dropped"):
            self._dropped.inc(_drop_reason(outcome))
        if outcome.guard == "rate limit":
            self._rate_limited.inc("503" if outcome.status is not None else "drop")
        auth = AUTH_RESULTS.get(outcome.auth or "")
        if auth is not None:
            self._auth.inc(auth)
            if auth in _FAILURES:
                self._bucket(outcome.at)[1] += 1
        if method == "REGISTER":
            self._bucket(outcome.at)[0] += 1
            self._registers.inc(_register_result(outcome.status, auth))

    def totals(self) -> dict[str, int]:
        """Counts since start, for ``/api/stats`` and ``sipreg status``."""
        registers, auth = self._registers.counts, self._auth.counts
        return {
            "registers": sum(registers.values()),
            "accepted": registers.get(("accepted",), 0),
            "challenges": registers.get(("challenged",), 0),
            "auth_failures": sum(auth.get((r,), 0) for r in _FAILURES),
            "retransmissions": self._retransmissions.counts.get((), 0),
            "dropped": sum(self._dropped.counts.values()),
        }

    def observe_event(self, event: BindingEvent) -> None:
        """Count one binding event (an ``Events`` listener)."""
        self._events.inc(event.type)

    def observe_ban(self) -> None:
        """Count a new brute-force ban."""
        self._bans.inc()

    def observe_store(self, operation: str, seconds: float) -> None:
        """Time one store operation (``load``, ``apply``, ``expire``...)."""
        self._store.observe(seconds, operation)

    def observe_commit(self, changes: int) -> None:
        """Count one SQLite commit of ``changes`` changes."""
        self._groups.observe(changes)

    def set_counts(self, aors: int, bindings: int) -> None:
        """The AORs and bindings the store holds now (read at each scrape)."""
        self._aors, self._bindings = aors, bindings

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


#: The auth results that count as failures (a wrong password, or a banned source).
_FAILURES = ("failed", "banned")


def _register_result(status: int | None, auth: str | None) -> str:
    """What a REGISTER came to, for ``sipreg_registers_total``."""
    if status is None:
        return "dropped"
    if status < 300:
        return "accepted"
    if status == 401 and auth in ("challenged", "stale", "replayed", "invalid"):
        return "challenged"
    return "failed" if status >= 500 else "refused"


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
