"""contrib/grafana/sipreg.json: a dashboard that graphs only metrics sipreg exposes, all of them.

The names are the admin contract's, and a real ``sipreg serve --admin`` must expose
exactly those on ``/metrics``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipreg_process import TIMEOUT, SipregProcess

DASHBOARD = Path(__file__).resolve().parent.parent / "contrib" / "grafana" / "sipreg.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

#: The metrics of the admin contract (issue 9), by type.
METRICS = {
    "sipreg_requests_total": "counter",
    "sipreg_registers_total": "counter",
    "sipreg_auth_total": "counter",
    "sipreg_auth_bans_total": "counter",
    "sipreg_retransmissions_total": "counter",
    "sipreg_dropped_total": "counter",
    "sipreg_rate_limited_total": "counter",
    "sipreg_datagrams_dropped_total": "counter",
    "sipreg_connections_dropped_total": "counter",
    "sipreg_binding_events_total": "counter",
    "sipreg_request_duration_seconds": "histogram",
    "sipreg_store_operation_seconds": "histogram",
    "sipreg_sqlite_commit_group_size": "histogram",
    "sipreg_bindings": "gauge",
    "sipreg_aors": "gauge",
    "sipreg_connections": "gauge",
    "sipreg_start_time_seconds": "gauge",
    "sipreg_info": "gauge",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
QUANTILE = re.compile(r"histogram_quantile\((0\.\d+), sum by \((?:\w+, )*le(?:, \w+)*\) \(rate\(")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the template variables' queries."""
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def metric(name: str) -> str | None:
    """The contract's metric that the series ``name`` belongs to, or None."""
    if METRICS.get(name) in {"counter", "gauge"}:
        return name
    for suffix in HISTOGRAM_SERIES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base) == "histogram":
            return base
    return None


def test_every_metric_it_graphs_is_in_the_contract_and_every_one_is_graphed(
    dashboard: dict[str, Any],
) -> None:
    used = {name for e in expressions(dashboard) for name in re.findall(r"\bsipreg_\w+", e)}
    unknown = sorted(name for name in used if metric(name) is None)
    assert unknown == [], "not metrics sipreg exposes"
    assert {metric(name) for name in used} == set(METRICS)


def test_histograms_are_read_as_quantiles_by_le(dashboard: dict[str, Any]) -> None:
    buckets = [e for e in expressions(dashboard) if "_bucket" in e]
    assert buckets
    assert all(QUANTILE.match(expr) for expr in buckets), buckets
    stores = [e for e in buckets if "sipreg_store_operation_seconds" in e]
    assert {QUANTILE.findall(e)[0] for e in stores} == {"0.5", "0.9", "0.99"}


def test_counters_are_graphed_as_rates(dashboard: dict[str, Any]) -> None:
    for expr in expressions(dashboard):
        for name in re.findall(r"\bsipreg_\w+_total\b", expr):
            assert re.search(rf"(rate|increase)\({name}\{{", expr), expr


def test_datasource_is_the_DS_PROMETHEUS_input(dashboard: dict[str, Any]) -> None:
    [source] = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS", "datasource", "prometheus",
    )  # fmt: skip
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert 'instance=~"$instance"' in target["expr"], target["expr"]


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        x, y, w, h = (panel["gridPos"][k] for k in "xywh")
        assert x + w <= 24, panel["title"]
        mine = {(col, row) for col in range(x, x + w) for row in range(y, y + h)}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_a_running_server_exposes_exactly_the_contracts_metrics(tmp_path: Path) -> None:
    proc = SipregProcess(
        f"sqlite:{tmp_path / 'x.db'}", tmp_path,
        ["--admin", "127.0.0.1:0", "--data-dir", str(tmp_path)],
    )  # fmt: skip
    try:
        found = re.search(r"status page: (http://\S+/)", proc.logged())
        assert found, proc.log
        with urllib.request.urlopen(found[1] + "metrics", timeout=TIMEOUT) as answer:
            exposition = answer.read().decode()
    finally:
        assert proc.stop() == 0
    exposed = dict(re.findall(r"^# TYPE (sipreg_\w+) (\w+)$", exposition, re.M))
    assert exposed == METRICS
