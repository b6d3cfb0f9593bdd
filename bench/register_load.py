"""REGISTER load generator: distinct users over UDP against a running sipreg.

    python bench/register_load.py --target 127.0.0.1:5060 --users 5000 --window 64

Sends one REGISTER per user with at most ``--window`` outstanding, retransmits
after ``--timeout`` seconds (at most 3 tries), and prints throughput and latency
percentiles.  Only loopback targets are accepted.  Without ``--target`` it
starts ``python -m sipreg serve`` itself on a free loopback port with a
temporary SQLite store and stops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator


def register(user: int, port: int, domain: str) -> bytes:
    """One REGISTER for user ``user`` from local port ``port``."""
    return (
        f"REGISTER sip:{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-bench-{user};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:user{user}@{domain}>\r\n"
        f"From: <sip:user{user}@{domain}>;tag=b{user}\r\n"
        f"Call-ID: bench-{user}@127.0.0.1\r\n"
        "CSeq: 1 REGISTER\r\n"
        f"Contact: <sip:user{user}@127.0.0.1:{port}>\r\n"
        "Expires: 300\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class Client(asyncio.DatagramProtocol):
    """Matches responses to users by Call-ID."""

    def __init__(self) -> None:
        self.waiting: dict[str, asyncio.Future[int]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        m = re.search(rb"\r\nCall-ID: *bench-(\d+)@", data, re.I)
        fut = self.waiting.get(m.group(1).decode()) if m else None
        if fut is not None and not fut.done():
            fut.set_result(int(data[8:11]))


async def run(target: tuple[str, int], users: int, window: int, timeout: float) -> int:
    """Send the load; print the figures; return the number of non-200 answers."""
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(
        Client, local_addr=(target[0], 0), remote_addr=target
    )
    port = transport.get_extra_info("sockname")[1]
    latencies: list[float] = []
    failures = 0
    slots = asyncio.Semaphore(window)

    async def one(user: int) -> None:
        nonlocal failures
        async with slots:
            fut: asyncio.Future[int] = loop.create_future()
            client.waiting[str(user)] = fut
            started = time.perf_counter()
            for _ in range(3):
                transport.sendto(register(user, port, "example.com"))
                try:
                    code = await asyncio.wait_for(asyncio.shield(fut), timeout)
                except TimeoutError:
                    continue
                latencies.append(time.perf_counter() - started)
                failures += code != 200
                break
            else:
                failures += 1
            del client.waiting[str(user)]

    started = time.perf_counter()
    await asyncio.gather(*(one(u) for u in range(users)))
    elapsed = time.perf_counter() - started
    transport.close()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(f"users={users} window={window} elapsed={elapsed:.2f}s rate={users / elapsed:.0f}/s")
    print(f"latency ms: p50={q[49] * 1e3:.1f} p90={q[89] * 1e3:.1f} p99={q[98] * 1e3:.1f}")
    print(f"answered={len(latencies)} non-200 or lost={failures}")
    return failures


@contextlib.asynccontextmanager
async def own_server() -> AsyncIterator[tuple[str, int]]:
    """Run ``python -m sipreg serve`` on a free loopback port with a temporary store."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipreg", "serve", "--listen", "udp:127.0.0.1:0",
            "--store", f"sqlite:{os.path.join(tmp, 'bench.db')}", "--log-level", "info",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        drain: asyncio.Task[bytes] | None = None
        try:
            port = None
            for _ in range(50):
                line = await asyncio.wait_for(proc.stderr.readline(), 10)
                m = re.search(rb"listening on udp:127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                    break
            if port is None:
                raise RuntimeError("the server did not report its port")
            drain = asyncio.create_task(proc.stderr.read())  # keep its log pipe flowing
            yield "127.0.0.1", port
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
            if drain is not None:
                await drain


async def main() -> int:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="HOST:PORT of a running sipreg (loopback only)")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    if args.target is None:
        async with own_server() as target:
            return await run(target, args.users, args.window, args.timeout)
    host, _, port = args.target.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        parser.error("--target must be a loopback address")
    return await run((host.strip("[]"), int(port)), args.users, args.window, args.timeout)


if __name__ == "__main__":
    sys.exit(1 if asyncio.run(main()) else 0)
