"""The admin listener of a real ``sipreg serve --admin``: metrics, the API, events, the token."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipreg.registrar.binding import Binding, Change
from sipreg.store.sqlite import SqliteStore
from sipreg_process import TIMEOUT, SipregProcess
from test_auth_server import Phone, add_user

TOKEN = "a-test-token-of-enough-length"


def admin_url(server: SipregProcess) -> str:
    """The base URL the server logged for its status page."""
    m = re.search(r"status page: (http://[^\s#]+/)", "".join(server.log))
    assert m, server.log
    return m.group(1)


def fetch(
    url: str, *, token: str | None = TOKEN, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP request."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def api(server: SipregProcess, path: str, **kw: Any) -> Any:
    status, _, body = fetch(admin_url(server) + path, **kw)
    assert status == 200, (status, body)
    return json.loads(body)


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and sorted labels -> value, from the exposition text."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(tmp_path: Path, token_file: Path) -> Iterator[SipregProcess]:
    users = tmp_path / "users"
    add_user(users, "alice", "wonderland")
    add_user(users, "bob", "b0b")
    proc = SipregProcess(
        "memory:", tmp_path,
        ["--realm", "example.com", "--users", str(users), "--data-dir", str(tmp_path),
         "--admin", "127.0.0.1:0", "--admin-token-file", str(token_file)],
    )  # fmt: skip
    yield proc
    if proc.proc.poll() is None:
        assert proc.stop() == 0


def test_metrics_count_a_known_sequence(server: SipregProcess) -> None:
    alice, bob = Phone(server, "udp"), Phone(server, "udp", "bob")
    try:
        assert alice.login("wonderland").status == 200  # 401, then 200
        assert alice.login("not-it").status == 401  # 401, then a failed 401
        assert bob.login("b0b", aor="sip:alice@example.com").status == 403
        assert alice.login("wonderland").status == 200  # a refresh
        unregistered = alice.send(expires=0)
        assert unregistered.status == 401
    finally:
        alice.close()
        bob.close()
    status, headers, body = fetch(admin_url(server) + "metrics", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    values = metric_values(body.decode())

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("sipreg_requests_total", method="REGISTER", status="401") == 6
    assert value("sipreg_requests_total", method="REGISTER", status="200") == 2
    assert value("sipreg_requests_total", method="REGISTER", status="403") == 1
    assert value("sipreg_registers_total", result="challenged") == 5
    assert value("sipreg_registers_total", result="accepted") == 2
    assert value("sipreg_registers_total", result="refused") == 2  # a wrong password, 403
    assert value("sipreg_auth_total", result="challenged") == 5
    assert value("sipreg_auth_total", result="succeeded") == 2
    assert value("sipreg_auth_total", result="failed") == 1
    assert value("sipreg_auth_total", result="forbidden") == 1
    assert value("sipreg_binding_events_total", type="added") == 1
    assert value("sipreg_binding_events_total", type="refreshed") == 1
    assert value("sipreg_bindings") == 1 and value("sipreg_aors") == 1
    assert value("sipreg_request_duration_seconds_count", method="REGISTER") == 9
    assert value("sipreg_store_operation_seconds_count", operation="apply") == 2
    assert value("sipreg_connections", transport="tcp") == 0
    assert value("sipreg_info", version=_version()) == 1
    assert all("@" not in label for (_, labels) in values for _, label in labels)
    exposed = {f.name for f in text_string_to_metric_families(body.decode())}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    documented = set(re.findall(r"^\| `(sipreg_\w+)`(?:, `(sipreg_\w+)`)?", readme, re.M))
    names = {n.removesuffix("_total") for pair in documented for n in pair if n}
    assert len(names) >= 16 and names == exposed
    stats = api(server, "api/stats")
    assert stats["bindings"] == 1 and stats["aors"] == 1
    assert stats["totals"] == {
        "registers": 9, "accepted": 2, "challenges": 5, "auth_failures": 1,
        "retransmissions": 0, "dropped": 0,
    }  # fmt: skip
    assert sum(stats["history"]["registers"]) == 9
    assert sum(stats["history"]["auth_failures"]) == 1
    assert len(stats["history"]["registers"]) == 60


def _version() -> str:
    from sipreg import __version__

    return __version__


def test_the_api_needs_the_token_and_the_open_endpoints_do_not(server: SipregProcess) -> None:
    base = admin_url(server)
    for path in ("api/stats", "api/bindings", "api/events"):
        for token in (None, "wrong-token-of-some-length", TOKEN[:-1]):
            status, headers, body = fetch(base + path, token=token)
            assert status == 401, (path, token)
            assert headers["WWW-Authenticate"] == "Bearer"
            assert TOKEN not in body.decode()
    status, _, _ = fetch(
        base + "api/bindings/sip%3Aalice%40example.com", token=None, method="DELETE"
    )
    assert status == 401
    assert fetch(base + "health", token=None)[:1] == (200,)
    assert fetch(base + "ready", token=None)[2] == b"ready\n"
    status, headers, page = fetch(base, token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"alice" not in page
    assert TOKEN not in server.logged()


def test_bindings_are_paged_over_ten_thousand(tmp_path: Path, token_file: Path) -> None:
    db = tmp_path / "many.db"
    asyncio.run(_fill(db, 10_000))
    proc = SipregProcess(
        str(db), tmp_path, ["--admin", "127.0.0.1:0", "--admin-token-file", str(token_file)]
    )
    try:
        seen: list[tuple[str, str]] = []
        cursor = ""
        pages = 0
        while True:
            query = urllib.parse.urlencode(
                {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            )
            page = api(proc, f"api/bindings?{query}")
            seen += [(b["aor"], b["key"]) for b in page["bindings"]]
            pages += 1
            if page["next"] is None:
                break
            cursor = page["next"]
        assert len(seen) == 10_000 == len(set(seen)) and seen == sorted(seen)
        assert pages in (10, 11)
        found = api(proc, "api/bindings?prefix=sip:u123")["bindings"]
        assert sorted(b["aor"] for b in found) == sorted(
            f"sip:u{n}@example.com" for n in range(10_000) if str(n).startswith("123")
        )
        one = api(proc, "api/bindings?aor=sip:u42@example.com")["bindings"]
        assert [b["contact"] for b in one] == ["sip:u42@192.0.2.1:5060"]
        assert one[0]["expires_in"] > 0 and one[0]["transport"] == "udp"
        base = admin_url(proc)
        for bad in ("limit=0", "limit=1001", "limit=x", "cursor=!!", "nope=1", "aor=%3Cjunk"):
            status, _, body = fetch(base + "api/bindings?" + bad)
            assert status == 400 and "error" in json.loads(body), bad
    finally:
        assert proc.stop() == 0


async def _fill(path: Path, count: int) -> None:
    store = SqliteStore(path)
    await store.open()
    far = 4_000_000_000.0
    await asyncio.gather(
        *(
            store.apply(
                Change(
                    f"sip:u{n}@example.com",
                    0,
                    upsert=(
                        Binding(
                            aor=f"sip:u{n}@example.com", contact=f"sip:u{n}@192.0.2.1:5060",
                            expires_at=far, call_id=f"c{n}", cseq=1, source=("192.0.2.1", 5060),
                        ),
                    ),
                )
            )
            for n in range(count)
        )
    )  # fmt: skip
    await store.close()


def test_delete_goes_through_the_running_registrar(tmp_path: Path, token_file: Path) -> None:
    proc = SipregProcess(
        "memory:", tmp_path, ["--admin", "127.0.0.1:0", "--admin-token-file", str(token_file)]
    )
    phone = Phone(proc, "udp")
    try:
        assert phone.send(contact="<sip:alice@192.0.2.7>").status == 200
        assert phone.send(contact="<sip:alice@192.0.2.8>").status == 200
        base = admin_url(proc) + "api/bindings/" + urllib.parse.quote("sip:alice@example.com", "")
        status, _, body = fetch(
            base + "?contact=" + urllib.parse.quote("sip:alice@192.0.2.7"), method="DELETE"
        )
        assert (status, json.loads(body)) == (200, {"removed": 1})
        assert phone.send(contact="<sip:alice@192.0.2.9>", expires=300).status == 200
        listed = api(proc, "api/bindings?aor=sip:alice@example.com")["bindings"]
        assert sorted(b["contact"] for b in listed) == [
            "sip:alice@192.0.2.8",
            "sip:alice@192.0.2.9",
        ]
        status, _, body = fetch(base, method="DELETE")
        assert (status, json.loads(body)) == (200, {"removed": 2})
        status, _, body = fetch(base, method="DELETE")
        assert status == 404 and json.loads(body)["removed"] == 0
        junk = admin_url(proc) + "api/bindings/" + urllib.parse.quote("<junk", "")
        assert fetch(junk, method="DELETE")[0] == 400
        assert api(proc, "api/bindings?aor=sip:alice@example.com")["bindings"] == []
        proc.wait_for(r"admin: removed 2 binding\(s\) of sip:alice@example.com")
    finally:
        phone.close()
        assert proc.stop() == 0


def test_the_event_stream_tells_every_change_in_order(tmp_path: Path, token_file: Path) -> None:
    proc = SipregProcess(
        "memory:", tmp_path,
        ["--admin", "127.0.0.1:0", "--admin-token-file", str(token_file), "--min-expires", "1"],
    )  # fmt: skip
    phone = Phone(proc, "tcp")
    url = admin_url(proc) + "api/events"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as stream:
            assert stream.headers["Content-Type"] == "text/event-stream"
            assert stream.readline() == b": events of sipreg\n"
            assert phone.send(contact="<sip:alice@192.0.2.7>").status == 200
            assert phone.send(contact="<sip:alice@192.0.2.7>", expires=600).status == 200
            assert phone.send(contact="<sip:alice@192.0.2.7>", expires=0).status == 200
            events = [_next_event(stream) for _ in range(3)]
        assert [(e["type"], e["cause"]) for e in events] == [
            ("added", "register"), ("refreshed", "register"), ("removed", "unregister"),
        ]  # fmt: skip
        assert [e["id"] for e in events] == [1, 2, 3]
        assert {e["contact"] for e in events} == {"sip:alice@192.0.2.7"}
        assert events[0]["source"].startswith("tcp:127.0.0.1:")
        assert events[2]["expires"] is None and events[1]["expires"] > events[0]["expires"]
    finally:
        phone.close()
        assert proc.stop() == 0


def _next_event(stream: Any) -> dict[str, Any]:
    """The data of the next ``binding`` event on an SSE stream."""
    fields: dict[str, str] = {}
    while True:
        line = stream.readline().decode().rstrip("\n")
        if not line:
            if fields.get("event") == "binding":
                data: dict[str, Any] = json.loads(fields["data"])
                assert int(fields["id"]) == data["id"]
                return data
            fields = {}
            continue
        if not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_a_generated_token_is_0600_and_shown_once(tmp_path: Path) -> None:
    first = SipregProcess(
        "memory:", tmp_path, ["--admin", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    )
    try:
        path = tmp_path / "admin-token"
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
        assert f"#token={token}" in first.logged()
        assert api(first, "api/stats", token=token)["bindings"] == 0
    finally:
        assert first.stop() == 0
    second = SipregProcess(
        "memory:", tmp_path, ["--admin", "127.0.0.1:0", "--data-dir", str(tmp_path)]
    )
    try:
        assert token not in second.logged()
        assert f"token in {path}" in second.logged()
        assert api(second, "api/stats", token=token)["aors"] == 0
    finally:
        assert second.stop() == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--admin", "0.0.0.0:0"], "admin listener on 0.0.0.0:0 is not on a loopback address"),
        (["--admin", "127.0.0.1:0", "--workers", "2", "--store", "sqlite:x.db"], "--workers"),
        (["--admin", "localhost"], "bad address"),
    ],
)
def test_an_admin_listener_that_cannot_be_safe_is_refused(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sipreg", "serve", "--listen", "udp:127.0.0.1:0", *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not os.path.exists(tmp_path / "admin-token")


def test_a_token_file_others_can_read_is_warned_about(tmp_path: Path, token_file: Path) -> None:
    token_file.chmod(0o644)
    proc = SipregProcess(
        "memory:", tmp_path, ["--admin", "127.0.0.1:0", "--admin-token-file", str(token_file)]
    )
    try:
        assert "can be read by others: it is a secret" in proc.logged()
        assert TOKEN not in proc.logged()
    finally:
        assert proc.stop() == 0
