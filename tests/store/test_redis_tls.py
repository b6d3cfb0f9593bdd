"""The Redis store over TLS (``rediss://``): the server verified, a client certificate given."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import Certs, make_certs
from redis_servers import HOST, binary, free_ports
from sipreg.errors import StoreUnavailable
from sipreg.store.base import Change
from sipreg.store.redis import RedisStore

from .helpers import ALICE, binding


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Certs]]:
    """A redis-server that speaks only TLS and asks clients for a certificate: its port."""
    certs = make_certs(tmp_path)
    (port,) = free_ports(1)
    log = tmp_path / "redis.log"
    proc = subprocess.Popen(
        [binary("redis-server"), "--port", "0", "--tls-port", str(port), "--bind", HOST,
         "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
         "--tls-ca-cert-file", str(certs.ca), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while b"Ready to accept connections" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield port, certs
    finally:
        proc.kill()
        proc.wait()


async def test_a_store_over_tls_with_a_client_certificate(tls_redis: tuple[int, Certs]) -> None:
    port, certs = tls_redis
    files = f"ca={certs.ca}&cert={certs.client_cert}&key={certs.client_key}"
    store = RedisStore(f"rediss://localhost:{port}/0?{files}")
    await store.open()
    try:
        await store.apply(Change(ALICE, 0, upsert=(binding(),)))
        assert (await store.load(ALICE)).bindings == (binding(),)
    finally:
        await store.close()


@pytest.mark.parametrize(
    "query",
    ["ca={ca}", "cert={cert}&key={key}"],  # no client certificate; the server not trusted
    ids=["no-client-certificate", "server-not-verified"],
)
async def test_a_store_over_tls_refuses_what_does_not_check_out(
    tls_redis: tuple[int, Certs], query: str
) -> None:
    port, certs = tls_redis
    files = query.format(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
    store = RedisStore(f"rediss://localhost:{port}/0?{files}&timeout=1")
    with pytest.raises(StoreUnavailable):
        await store.open()


def test_tls_files_need_tls_and_each_other() -> None:
    with pytest.raises(ValueError, match="for TLS: rediss://"):
        RedisStore("redis://h:1/0?ca=/x.pem")
    with pytest.raises(ValueError, match="needs both cert and key"):
        RedisStore("rediss://h:1/0?cert=/x.pem")
