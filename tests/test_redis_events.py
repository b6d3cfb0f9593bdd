"""The event stream of one node shows the changes every node sharing its Redis makes."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from redis_servers import RedisServer
from sipreg_process import TIMEOUT, SipregProcess
from test_admin_server import TOKEN, admin_url
from test_auth_server import Phone


def next_binding_event(stream: Any) -> tuple[dict[str, str], dict[str, Any]]:
    """The fields and data of the next ``binding`` event of an SSE stream."""
    fields: dict[str, str] = {}
    while True:
        line = stream.readline().decode().rstrip("\n")
        if not line:
            if fields.get("event") == "binding":
                return fields, json.loads(fields["data"])
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


def test_a_node_streams_the_other_node_s_changes(tmp_path: Path, redis_db: RedisServer) -> None:
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        args = ["--node-id", name, "--admin", "127.0.0.1:0", "--admin-token-file", str(token)]
        nodes.append(SipregProcess(redis_db.url, tmp_path / name, args))
    a, b = nodes
    phone = Phone(a, "udp")
    try:
        streams = []
        for node in (a, b):
            request = urllib.request.Request(
                admin_url(node) + "api/events", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            streams.append(urllib.request.urlopen(request, timeout=TIMEOUT))
            assert streams[-1].readline() == b": events of sipreg\n"
        on_a, on_b = streams
        assert phone.send(contact="<sip:alice@192.0.2.7>").status == 200
        assert phone.send(contact="<sip:alice@192.0.2.7>", expires=0).status == 200
        mine = [next_binding_event(on_a) for _ in range(2)]
        theirs = [next_binding_event(on_b) for _ in range(2)]
        assert [(e["type"], e["node"]) for _, e in mine] == [("added", "a"), ("removed", "a")]
        assert [int(f["id"]) for f, _ in mine] == [1, 2]  # numbered by the node that made them
        assert [(e["type"], e["node"], e["aor"]) for _, e in theirs] == [
            ("added", "a", "sip:alice@example.com"),
            ("removed", "a", "sip:alice@example.com"),
        ]
        assert all("id" not in f for f, _ in theirs)  # B's own numbers are not A's
        for stream in streams:
            stream.close()
    finally:
        phone.close()
        for node in nodes:
            assert node.stop() == 0
