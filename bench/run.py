"""sipreg against Kamailio on loopback: server CPU per REGISTER, rates, latency, memory, start-up.

    make bench                        # 3 rounds, memory sizes 10k, 100k and 1M
    make bench ARGS="--quick"         # 1 round, sizes 10k and 100k, shorter runs
    .venv/bin/python bench/run.py --help

It builds ``bench/sipload.c`` (a C REGISTER generator, see its header) into
``bench/build/``, starts each server on a free 127.0.0.1 port, waits until it
answers OPTIONS and drives it with sipload.  The servers alternate, round after
round (sipreg, Kamailio, sipreg, ...), and the table shows the median of each.

The figure that matters is **server CPU microseconds per REGISTER**: the
server's utime + stime from ``/proc/PID/stat`` (every process of its session,
so all of Kamailio's), read just before and just after the measured phase and
divided by the REGISTERs answered in it.  Wall time does not enter it, so a
busy machine changes it less than it changes the rates.

Rows, each for sipreg and, where Kamailio can do the same, for Kamailio (a plain
``save("location")`` registrar, usrloc in memory, one UDP worker:
``bench/kamailio.cfg``):

1. memory store, ``initial`` (each user's first REGISTER) and ``refresh`` (the
   same Call-ID, CSeq + 1) with 10,000 users: CPU per REGISTER, the closed-loop
   rate with no failure (the first window of 256, 128, 64, 32 without one; what
   failed in the windows before it, by status, is kept and noted beside the rate),
   p50/p99 latency at half that rate (paced by sipload's rate limit; of the 2xx
   answers, and what failed in that run is noted beside it).
2. the SQLite store, the same figures (sipreg only: Kamailio keeps usrloc in memory).
3. Digest on (``--realm``, 10,000 users written straight into the users file):
   refresh CPU per REGISTER, sipload reusing each nonce with nc + 1, over the
   same without authentication.
4. ``sipreg serve --workers 2`` over one worker, both on SQLite, when sipreg has the flag:
   the closed-loop refresh rate, from 64 of the generator's sockets in both runs.  The
   kernel spreads SO_REUSEPORT traffic by flow (addresses and ports), not by datagram;
   thousands of phones are thousands of flows, but the generator's usual 4 sockets are
   4, and those land 2 and 2 on the workers in only 3 runs out of 8.
5. the Redis store (``--store redis://``), each case on a redis-server of its own
   started on a free loopback port in the temp dir (``--save ""``) and stopped by
   PID: one node, the figures of rows 1-2 (the same users and runs), with
   redis-server's CPU per REGISTER (its ``/proc`` utime + stime) beside sipreg's;
   one node on an append-only file fsynced before every reply (``--appendonly yes
   --appendfsync always``, the durable setting to set beside SQLite's), refresh;
   two sipreg nodes on one Redis, sipload's users split between them, the
   closed-loop refresh rate over one node's.  The refresh CPU of each, sipreg's
   alone and with redis-server's, over the memory and SQLite stores'.
   (redis-server is apt-installed as root when missing; without it, no Redis rows.)
6. resident memory per binding after 10k, 100k and 1M distinct users (expires
   3600), from the processes' Pss (``/proc/PID/smaps_rollup``; for one process it
   moves as VmRSS does, and it does not count Kamailio's shared memory once per
   process).  sipreg's includes what its transaction cache held (the answers of
   the last 32 s, Timer J, about 410 bytes each, entry included): the answers
   of the load itself, which ran at full speed, as in a storm.
   After each size, the refresh CPU per REGISTER of --users more users: the cost
   of a refresh with that many bindings stored; the next size is loaded once
   the server has let that run's answers go (32 s for sipreg), so that its
   figure does not hold them.
7. a durable soak: SQLite, refreshes paced at 1,500/s for 60 s: p50/p99 latency.
8. sipreg's start-up time on a SQLite file with the largest size of bindings,
   written through sipreg's own store API (``bench/fill_store.py``).
9. a registration storm: 100,000 new phones, 1,000 in flight, RFC 3261 timers
   (T1 500 ms doubling to T2 4 s, 7 sends): the time until every one has its 200,
   the failures, the retransmissions, and the datagrams the kernel dropped for a
   full receive buffer (RcvbufErrors, machine-wide), beside each server's buffer.

``--only redis`` (any of memory, sqlite, auth, workers, redis, storm, bindings,
soak, startup, comma-separated) runs those parts alone, with the parts their
ratios are taken over (auth: memory; redis: memory and sqlite).

Results go to ``bench/results/<UTC time>.json`` and ``latest.json``, a chart to
``latest.png`` (matplotlib).  Everything runs on loopback only; every load and
wait is bounded, and every server is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import importlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BUILD = BENCH / "build"
RESULTS = BENCH / "results"
SIPLOAD_C = BENCH / "sipload.c"
KAMAILIO_CFG = BENCH / "kamailio.cfg"
FILL_STORE = BENCH / "fill_store.py"

DOMAIN = "example.com"
REALM = "example.com"
PASSWORD = "bench-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: How long a server may take to answer its first OPTIONS.
START_TIMEOUT = 120.0
#: How long SIGTERM may take before SIGKILL.
STOP_TIMEOUT = 20.0
#: Closed-loop windows tried in turn until a run has no failure.  A server whose UDP
#: receive buffer is the kernel's default (208 KiB: some 90 requests, counted as the
#: kernel charges them) drops part of a larger burst, which the retransmissions show.
WINDOWS = (256, 128, 64, 32)
#: The window of the rate-limited latency runs (the rate, not the window, paces them).
LATENCY_WINDOW = 256
#: Refresh runs are bounded by time; this only bounds their count.
MAX_REQUESTS = 50_000_000
#: The generator's sockets in the workers row: flows enough to spread (64 is its most).
WORKER_SOCKETS = 64
#: The parts of the benchmark, in the order they run; --only picks some of them.
PARTS = ("memory", "sqlite", "auth", "workers", "redis", "storm", "bindings", "soak", "startup")
#: The parts whose figures a part's ratios are taken over: --only runs them too.
NEEDS = {"auth": ("memory",), "redis": ("memory", "sqlite")}
#: The parts measured in each round of sipreg, and of Kamailio; all Kamailio takes part in.
ROUND_PARTS = frozenset(("memory", "sqlite", "auth", "workers", "redis", "storm"))
KAMAILIO_ROUND_PARTS = frozenset(("memory", "storm"))
KAMAILIO_PARTS = KAMAILIO_ROUND_PARTS | {"bindings"}


Metrics = dict[str, float]


class BenchError(RuntimeError):
    """A step of the benchmark that could not be done; its message says why."""


# ---- the machine and the tools ----


@dataclass(frozen=True)
class Tools:
    """The programs the benchmark runs."""

    sipload: Path
    sipreg: Path
    sipreg_python: Path
    kamailio: Path | None
    redis: Path | None
    workers: bool  # sipreg serve has --workers


def build_sipload() -> Path:
    """Compile bench/sipload.c into bench/build/ unless the binary is newer."""
    binary = BUILD / "sipload"
    if binary.exists() and binary.stat().st_mtime >= SIPLOAD_C.stat().st_mtime:
        return binary
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler (cc): apt-get install gcc libssl-dev")
    if not Path("/usr/include/openssl/evp.h").exists():
        apt_install(["libssl-dev"], "sipload links OpenSSL's libcrypto")
    BUILD.mkdir(exist_ok=True)
    cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(binary), str(SIPLOAD_C), "-lcrypto"]
    print("building:", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or done.stderr.strip():
        sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise BenchError("sipload.c did not compile")
    return binary


def apt_install(packages: Sequence[str], why: str) -> bool:
    """apt-get install ``packages`` as root; False (having said how) when not root."""
    names = " ".join(packages)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"{why}: install it with  apt-get install -y --no-install-recommends {names}")
        return False
    print(f"{why}: apt-get install {names}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            print(f"apt-get install {names} failed:\n{done.stderr[-2000:]}")
            return False
    return True


def find_program(name: str, package: str, wanted: bool, without: str) -> Path | None:
    """The binary ``name``, apt-installed from ``package`` as root when missing; None
    (having printed ``without``, what the run does instead) when it is not wanted or
    cannot be had."""
    if not wanted:
        return None
    path = "/usr/sbin:/sbin:/usr/bin"
    found = shutil.which(name) or shutil.which(name, path=path)
    if found is None and apt_install([package], f"{name} is not installed"):
        found = shutil.which(name, path=path)
    if found is None:
        print(without)
        return None
    return Path(found)


def find_tools(args: argparse.Namespace) -> Tools:
    """Build sipload and find sipreg (this venv's unless --sipreg) and Kamailio."""
    sipreg = Path(args.sipreg).absolute() if args.sipreg else Path(sys.prefix) / "bin" / "sipreg"
    if not sipreg.exists():
        raise BenchError(f"no sipreg at {sipreg} (make .venv/.installed, or --sipreg PATH)")
    python = sipreg.parent / "python"
    helped = run_text([str(sipreg), "serve", "--help"])
    return Tools(
        sipload=build_sipload(),
        sipreg=sipreg,
        sipreg_python=python if python.exists() else Path(sys.executable),
        kamailio=find_program(
            "kamailio",
            "kamailio",
            not args.no_kamailio and bool(KAMAILIO_PARTS.intersection(args.only)),
            "running sipreg alone",
        ),
        redis=find_program("redis-server", "redis-server", "redis" in args.only, "no Redis rows"),
        workers="--workers" in helped,
    )


def run_text(cmd: Sequence[str], cwd: Path | None = None) -> str:
    """The output of ``cmd`` (stdout, then stderr), or "" when it cannot run."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout + done.stderr).strip()


def machine_info(tools: Tools) -> dict[str, Any]:
    """What the figures were measured on, and with which versions."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    probe = (
        "import os, platform, sipreg\n"
        "try:\n import uvloop; loop = 'uvloop ' + uvloop.__version__\n"
        "except ImportError:\n loop = 'asyncio'\n"
        "print(platform.python_version(), loop, os.path.dirname(sipreg.__file__), sep='|')"
    )
    parts = run_text([str(tools.sipreg_python), "-c", probe]).split("|")
    py, loop, package = parts if len(parts) == 3 else ("", "", "")
    source = Path(package) if package else ROOT
    commit = run_text(["git", "rev-parse", "HEAD"], cwd=source)
    dirty = bool(run_text(["git", "status", "--porcelain", "--", "."], cwd=source))
    kamailio = run_text([str(tools.kamailio), "-v"]).splitlines() if tools.kamailio else []
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "driver_python": platform.python_version(),
        "sipreg": run_text([str(tools.sipreg), "--version"]),
        "sipreg_binary": str(tools.sipreg),
        "sipreg_python": py,
        "sipreg_event_loop": loop,
        "sipreg_source": str(source),
        "sipreg_commit": commit + ("-dirty" if dirty else "") if commit else "",
        "sipreg_workers_flag": tools.workers,
        "kamailio": kamailio[0].removeprefix("version:").strip() if kamailio else "not run",
        "redis": run_text([str(tools.redis), "--version"]) if tools.redis else "not run",
        "bench_commit": run_text(["git", "rev-parse", "HEAD"], cwd=BENCH),
        "cc": run_text(["cc", "--version"]).splitlines()[0:1],
        "openssl": run_text(["openssl", "version"]),
    }


# ---- servers ----


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A UDP (or ``kind``) port on 127.0.0.1 that nothing holds now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def options(port: int, local_port: int, n: int) -> bytes:
    """An OPTIONS request: what the readiness probe sends."""
    return (
        f"OPTIONS sip:{DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};rport;branch=z9hG4bK-probe-{port}-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{DOMAIN}>;tag=probe{n}\r\n"
        f"To: <sip:{DOMAIN}>\r\n"
        f"Call-ID: probe-{port}-{n}@127.0.0.1\r\n"
        f"CSeq: {n} OPTIONS\r\n"
        "User-Agent: sipload-probe\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Server:
    """A server process in its own session, stopped by :meth:`stop` whatever happens."""

    name: str
    argv: list[str]
    port: int
    log: Path
    cwd: Path
    proc: subprocess.Popen[bytes] | None = None
    probes: int = 0
    #: Seconds the server keeps each answer for retransmissions (sipreg: Timer J).
    answers_kept: float = 0.0

    def start(self) -> float:
        """Start it; the seconds until it answered an OPTIONS."""
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(started)
        return time.perf_counter() - started

    def wait_ready(self, started: float) -> None:
        """Probe with OPTIONS every 10 ms until a response comes, or fail."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.01)
            local = s.getsockname()[1]
            while time.perf_counter() - started < START_TIMEOUT:
                if self.proc is None or self.proc.poll() is not None:
                    raise BenchError(f"{self.name} exited at start:\n{self.log_tail()}")
                self.probes += 1
                with contextlib.suppress(ConnectionRefusedError):
                    s.sendto(options(self.port, local, self.probes), ("127.0.0.1", self.port))
                try:
                    if s.recv(65535).startswith(b"SIP/2.0 "):
                        return
                except (TimeoutError, ConnectionRefusedError):
                    continue
        raise BenchError(f"{self.name} did not answer within {START_TIMEOUT:.0f} s")

    def stop(self) -> float:
        """SIGTERM the whole session, SIGKILL it after STOP_TIMEOUT; the seconds taken."""
        proc, self.proc = self.proc, None
        if proc is None:
            return 0.0
        started = time.perf_counter()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{self.name}: no exit {STOP_TIMEOUT:.0f} s after SIGTERM; SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children that outlived their parent
        proc.wait(STOP_TIMEOUT)
        return time.perf_counter() - started

    def pids(self) -> list[int]:
        """Every live process of its session."""
        if self.proc is None:
            return []
        sid = self.proc.pid
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat_fields(int(entry))
                if fields is not None and int(fields[3]) == sid:
                    found.append(int(entry))
        return found

    def cpu_seconds(self) -> float:
        """utime + stime of every process of its session (threads included), in seconds."""
        ticks = 0
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields is not None:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / CLK_TCK

    def memory_kib(self) -> dict[str, int]:
        """The sum over its processes of VmRSS (status) and Pss (smaps_rollup), in KiB."""
        rss = pss = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
        return {"rss_kib": rss, "pss_kib": pss}

    def receive_buffer(self) -> int | None:
        """The receive buffer of its UDP socket in bytes, as ``ss`` shows it (rb)."""
        text = run_text(["ss", "-uamnH", f"sport = :{self.port}"])
        for word in text.replace("(", ",").replace(")", ",").split(","):
            if word.startswith("rb") and word[2:].isdigit():
                return int(word[2:])
        return None

    def log_tail(self, lines: int = 20) -> str:
        """The end of its log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class RedisServer(Server):
    """A redis-server, ready when the server answering INFO on its port has its PID."""

    @property
    def url(self) -> str:
        """The store URL sipreg is given: ``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def wait_ready(self, started: float) -> None:
        """Ask INFO every 10 ms until this process (not another on the port) answers, or fail."""
        while time.perf_counter() - started < START_TIMEOUT:
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited at start:\n{self.log_tail()}")
            self.probes += 1
            with contextlib.suppress(OSError):
                if f"process_id:{self.proc.pid}\r\n" in _redis_info(self.port):
                    return
            time.sleep(0.01)
        raise BenchError(f"{self.name} did not answer within {START_TIMEOUT:.0f} s")


def _redis_info(port: int) -> str:
    """The reply of ``INFO server`` on 127.0.0.1:``port``: a bulk string, read whole, or
    the one line of an error (``-LOADING`` while the server reads its files)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
        s.sendall(b"INFO server\r\n")
        reply = b""
        while True:
            head, crlf, body = reply.partition(b"\r\n")
            size = head[1:]
            if crlf and not (head.startswith(b"$") and size.isdigit() and len(body) < int(size)):
                return reply.decode(errors="replace")
            chunk = s.recv(65536)
            if not chunk:
                return reply.decode(errors="replace")
            reply += chunk


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


_S = TypeVar("_S", bound=Server)


@contextlib.contextmanager
def running(server: _S) -> Iterator[_S]:
    """Start ``server``, yield it, and stop it whatever happens."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Lab:
    """Where servers get their ports, files and logs; the tools and the run's settings."""

    tools: Tools
    tmp: Path
    args: argparse.Namespace
    counter: int = 0
    users_file: Path | None = None

    def _name(self, base: str) -> str:
        self.counter += 1
        return f"{self.counter:03d}-{base}"

    def sipreg(self, store: str = "memory:", *, auth: bool = False, workers: int = 1) -> Server:
        """A sipreg on a free port; ``store`` "sqlite" means a new file in the temp dir."""
        name = self._name("sipreg")
        port = free_port()
        if store == "sqlite":
            store = f"sqlite:{self.tmp / (name + '.db')}"
        argv = [
            str(self.tools.sipreg), "serve",
            "--listen", f"udp:127.0.0.1:{port}",
            "--store", store,
            "--data-dir", str(self.tmp),
            "--domain", DOMAIN,
            "--max-expires", "3600",
            "--log-level", "warning",
        ]  # fmt: skip
        if auth:
            argv += ["--realm", REALM, "--users", str(self.auth_users())]
        if workers > 1:
            argv += ["--workers", str(workers)]
        return Server("sipreg", argv, port, self.tmp / f"{name}.log", self.tmp, answers_kept=32.0)

    def kamailio(self) -> Server:
        """A Kamailio on a free port with shared memory for the largest size."""
        assert self.tools.kamailio is not None
        name = self._name("kamailio")
        port = free_port()
        shm_mb = 256 + max(self.args.sizes) * 2048 // 2**20
        argv = [
            str(self.tools.kamailio), "-f", str(KAMAILIO_CFG), "-DD", "-E",
            "-l", f"udp:127.0.0.1:{port}", "-m", str(shm_mb), "-M", "16", "-w", str(self.tmp),
        ]  # fmt: skip
        return Server("kamailio", argv, port, self.tmp / f"{name}.log", self.tmp)

    def redis(self, *, durable: bool = False) -> RedisServer:
        """A redis-server on a free TCP port, its files in a directory of its own.

        Nothing is persisted, or with ``durable`` every write is in the append-only
        file, fsynced, before its reply (``--appendfsync always``): what SQLite's
        durable commit is to be compared with.
        """
        assert self.tools.redis is not None
        name = self._name("redis")
        port = free_port(socket.SOCK_STREAM)
        home = self.tmp / name
        home.mkdir()
        persistence = ["--appendonly", "no"]
        if durable:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        argv = [
            str(self.tools.redis),
            "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--dir", str(home), "--daemonize", "no", "--logfile", "", "--save", "",
            *persistence,
        ]  # fmt: skip
        return RedisServer("redis-server", argv, port, self.tmp / f"{name}.log", home)

    def auth_users(self) -> Path:
        """The users file, written once with mode 0600: auth0, auth1, ... for every window."""
        if self.users_file is None:
            path = self.tmp / "users"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                for n in range(self.args.users * len(WINDOWS)):
                    name = f"auth{n}"
                    a1 = f"{name}:{REALM}:{PASSWORD}".encode()
                    md5 = hashlib.md5(a1).hexdigest()
                    sha = hashlib.sha256(a1).hexdigest()
                    out.write(f"{name}:{REALM}:{md5}:{sha}\n")
            self.users_file = path
        return self.users_file


# ---- load ----


def udp_drops() -> int:
    """The machine's UDP datagrams dropped for a full receive buffer (RcvbufErrors) so far."""
    with contextlib.suppress(OSError, ValueError):
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()]
        heads = [ln for ln in lines if ln and ln[0] == "Udp:"]
        if len(heads) == 2 and "RcvbufErrors" in heads[0]:
            return int(heads[1][heads[0].index("RcvbufErrors")])
    return 0


@dataclass(frozen=True)
class Nodes:
    """Registrar nodes sharing one store server: sipload splits its users across the
    nodes (at most 4: its 4 sockets spread over them), and the CPU of the store server
    is read apart from theirs."""

    servers: tuple[Server, ...]
    store: Server | None = None


@dataclass
class Load:
    """One sipload run against a server (or nodes): its JSON, the server's CPU over the
    phase (every node's), the store server's, and the datagrams the machine dropped
    meanwhile (anyone's: the other load shows too)."""

    result: dict[str, Any]
    server_cpu_s: float
    drops: int = 0
    store_cpu_s: float | None = None  # with a store server only

    @property
    def measured(self) -> dict[str, Any]:
        phase: dict[str, Any] = self.result["measured"]
        return phase

    def get(self, key: str) -> float:
        return float(self.measured[key])

    @property
    def answered(self) -> int:
        return int(self.measured["answered"])

    @property
    def failures(self) -> int:
        return int(self.measured["failures"])

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per answered REGISTER."""
        return self.server_cpu_s * 1e6 / self.answered if self.answered else float("nan")

    @property
    def generator_cpu_us(self) -> float:
        phase = self.measured
        cpu = float(phase["cpu_user_s"]) + float(phase["cpu_sys_s"])
        return cpu * 1e6 / self.answered if self.answered else float("nan")

    def latency(self, q: str) -> float:
        return float(self.measured["latency_ms"][q])


@dataclass
class Users:
    """Hands out ranges of user numbers, so that no two runs on a server share an AOR."""

    next: int = 0

    def take(self, n: int) -> int:
        first, self.next = self.next, self.next + n
        return first


def sipload(
    lab: Lab,
    server: Server | Nodes,
    *,
    mode: str,
    users: int,
    first: int,
    window: int,
    duration: float,
    rate: float = 0.0,
    expires: int = 300,
    auth: bool = False,
    tries: int = 3,
    sockets: int = 4,
) -> Load:
    """Run sipload against ``server``; server CPU is read around the measured phase only."""
    nodes = server if isinstance(server, Nodes) else Nodes((server,))
    store = nodes.store

    def cpu() -> tuple[float, float | None]:
        servers = sum(node.cpu_seconds() for node in nodes.servers)
        return servers, store.cpu_seconds() if store is not None else None

    argv = [str(lab.tools.sipload)]
    for node in nodes.servers:
        argv += ["--target", f"127.0.0.1:{node.port}"]
    argv += [
        "--mode", mode,
        "--users", str(users),
        "--first-user", str(first),
        "--window", str(window),
        "--duration", f"{duration:.3f}",
        "--warmup-duration", str(max(120.0, users / 200)),
        "--expires", str(expires),
        "--tries", str(tries),
        "--sockets", str(sockets),
        "--domain", DOMAIN,
    ]  # fmt: skip
    if mode == "refresh":
        argv += ["--requests", str(MAX_REQUESTS), "--pause"]
    if rate > 0:
        argv += ["--rate", f"{rate:.1f}"]
    if auth:
        argv += ["--user-prefix", "auth", "--password", PASSWORD]
    bound = duration + max(120.0, users / 200) + 120
    with subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            deadline = time.monotonic() + bound
            before = cpu()
            drops = udp_drops()
            if mode == "refresh":
                line = proc.stdout.readline()  # {"warmup_done":true}
                if not line.startswith('{"warmup_done"'):
                    raise BenchError(f"sipload did not pause: {line!r}")
                before = cpu()
                drops = udp_drops()
                proc.stdin.write("go\n")
                proc.stdin.flush()
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            after = cpu()
            drops = udp_drops() - drops
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0 or not out.strip():
        raise BenchError(f"sipload failed ({proc.returncode}): {err.strip()}")
    stored = None if after[1] is None or before[1] is None else after[1] - before[1]
    return Load(json.loads(out.strip().splitlines()[-1]), after[0] - before[0], drops, stored)


def closed_loop(
    run: Callable[[int], list[Load]], windows: Sequence[int] = WINDOWS
) -> tuple[list[Load], int, dict[int, list[Load]]]:
    """Runs of ``run(window)`` for each window in turn until one has no failure; the
    runs of the windows given up on before it, by window."""
    loads: list[Load] = []
    given_up: dict[int, list[Load]] = {}
    for window in windows:
        loads = run(window)
        if sum(load.failures for load in loads) == 0:
            return loads, window, given_up
        given_up[window] = loads
    given_up.pop(windows[-1])
    return loads, windows[-1], given_up


def failed(key: str, loads: Sequence[Load]) -> Metrics:
    """What failed in ``loads``: ``key.failures``, ``key.timeouts``, and ``key.status.CODE``
    the count of each final status that was not a 2xx (a 401 that sipload answered
    with credentials is not one)."""
    out: Metrics = {
        f"{key}.failures": float(sum(load.failures for load in loads)),
        f"{key}.timeouts": sum(load.get("timeouts") for load in loads),
    }
    for load in loads:
        for code, n in load.measured["status"].items():
            if int(code) >= 300 and not (code == "401" and load.result.get("auth")):
                out[f"{key}.status.{code}"] = out.get(f"{key}.status.{code}", 0.0) + n
    return out


def given_up(prefix: str, windows: dict[int, list[Load]]) -> Metrics:
    """What failed in the windows a closed loop gave up on, as ``prefix.wWINDOW.*``."""
    out: Metrics = {}
    for window, loads in windows.items():
        out |= failed(f"{prefix}.w{window}", loads)
    return out


def summarise(prefix: str, loads: Sequence[Load], window: int) -> Metrics:
    """Figures of closed-loop runs taken together: CPU per REGISTER, rate, failures."""
    answered = sum(load.answered for load in loads)
    elapsed = sum(load.get("elapsed_s") for load in loads)
    cpu = sum(load.server_cpu_s for load in loads)
    gen = sum(load.generator_cpu_us * load.answered for load in loads)
    stored = [load.store_cpu_s for load in loads if load.store_cpu_s is not None]
    out: Metrics = {}
    if stored:  # the store server's CPU, beside the registrar's
        out[f"{prefix}.store_cpu_us"] = sum(stored) * 1e6 / answered if answered else float("nan")
    return out | {
        f"{prefix}.cpu_us": cpu * 1e6 / answered if answered else float("nan"),
        f"{prefix}.rate": answered / elapsed if elapsed else 0.0,
        f"{prefix}.failures": float(sum(load.failures for load in loads)),
        f"{prefix}.retransmissions": sum(load.get("retransmissions") for load in loads),
        f"{prefix}.udp_drops": float(sum(load.drops for load in loads)),
        f"{prefix}.window": float(window),
        f"{prefix}.answered": float(answered),
        f"{prefix}.generator_cpu_us": gen / answered if answered else float("nan"),
    }


def latency_metrics(prefix: str, load: Load) -> Metrics:
    """Figures of a rate-limited run (its latencies are those of the 2xx answers)."""
    return failed(f"{prefix}.latency", [load]) | {
        f"{prefix}.p50_ms": load.latency("p50"),
        f"{prefix}.p90_ms": load.latency("p90"),
        f"{prefix}.p99_ms": load.latency("p99"),
        f"{prefix}.latency_rate": load.get("rate"),
    }


def measure(
    lab: Lab,
    server: Server | Nodes,
    prefix: str,
    mode: str,
    users: Users,
    *,
    auth: bool = False,
    latency: bool = True,
    sockets: int = 4,
) -> Metrics:
    """``mode`` (initial or refresh) on one running server: CPU per REGISTER and the
    closed-loop rate of the first window without a failure; with ``latency``, then
    p50/p99 of a run paced at half that rate.  An initial figure sums
    --initial-batches runs of --users new users; a refresh figure is one run of
    --duration s."""
    a = lab.args
    batches, duration = (
        (a.initial_batches, a.duration * 10) if mode == "initial" else (1, a.duration)
    )
    key = f"{prefix}.{mode}"

    def one(window: int, rate: float = 0.0) -> Load:
        return sipload(
            lab,
            server,
            mode=mode,
            users=a.users,
            first=users.take(a.users),
            window=window,
            duration=duration,
            rate=rate,
            auth=auth,
            sockets=sockets,
        )

    loads, window, failed = closed_loop(lambda window: [one(window) for _ in range(batches)])
    out = summarise(key, loads, window) | given_up(key, failed)
    if latency:
        out |= latency_metrics(key, one(LATENCY_WINDOW, out[f"{key}.rate"] / 2))
    return out


def profile(lab: Lab, server: Server | Nodes, prefix: str, *, auth: bool = False) -> Metrics:
    """Initial and refresh on one running server: CPU, closed-loop rate, latency at half rate."""
    users = Users()
    out = measure(lab, server, prefix, "initial", users, auth=auth)
    return out | measure(lab, server, prefix, "refresh", users, auth=auth)


def refresh_only(
    lab: Lab, server: Server | Nodes, prefix: str, *, auth: bool = False, sockets: int = 4
) -> Metrics:
    """The closed-loop refresh figures alone, from ``sockets`` of the generator's."""
    return measure(
        lab, server, prefix, "refresh", Users(), auth=auth, latency=False, sockets=sockets
    )


def storm(lab: Lab, server: Server) -> Metrics:
    """100,000 new phones at once, a bounded number in flight, RFC 3261 retransmissions."""
    a = lab.args
    load = sipload(
        lab,
        server,
        mode="initial",
        users=a.storm,
        first=0,
        window=a.storm_window,
        duration=600.0,
        tries=7,
    )
    return {
        "storm.time_s": load.get("elapsed_s"),
        "storm.failures": float(load.failures),
        "storm.retransmissions": load.get("retransmissions"),
        "storm.udp_drops": float(load.drops),
        "storm.rate": load.get("rate"),
        "storm.p99_ms": load.latency("p99"),
        "storm.cpu_us": load.cpu_us,
    }


def sipreg_round(lab: Lab) -> Metrics:
    """One round of sipreg: memory, SQLite, auth, workers, Redis, storm (those of --only),
    each on a fresh server."""
    parts = lab.args.only
    out: Metrics = {}
    if "memory" in parts:
        with running(lab.sipreg("memory:")) as server:
            out |= profile(lab, server, "memory")
    if "sqlite" in parts:
        with running(lab.sipreg("sqlite")) as server:
            out |= profile(lab, server, "sqlite")
    if "auth" in parts:
        with running(lab.sipreg("memory:", auth=True)) as server:
            out |= refresh_only(lab, server, "auth", auth=True)
        out["auth.ratio"] = out["auth.refresh.cpu_us"] / out["memory.refresh.cpu_us"]
    if "workers" in parts and lab.tools.workers:
        # Workers share a SQLite file (memory: is refused with workers).  Many flows, so
        # that the kernel's SO_REUSEPORT hash can spread them (see the header).
        with running(lab.sipreg("sqlite")) as server:
            out |= refresh_only(lab, server, "workers1", sockets=WORKER_SOCKETS)
        with running(lab.sipreg("sqlite", workers=2)) as server:
            out |= refresh_only(lab, server, "workers2", sockets=WORKER_SOCKETS)
        out["workers.ratio"] = out["workers2.refresh.rate"] / out["workers1.refresh.rate"]
    if "redis" in parts and lab.tools.redis:
        out |= redis_round(lab, out)
    if "storm" in parts:
        with running(lab.sipreg("memory:")) as server:
            out |= storm(lab, server)
    return out


def redis_round(lab: Lab, base: Metrics) -> Metrics:
    """sipreg on the Redis store, each case on a fresh redis-server: one node (initial
    and refresh, as the memory and SQLite rows), one node on an fsync-always AOF
    (refresh), two nodes on one Redis (the closed-loop refresh, the load split across
    them); the ratios to the memory and SQLite figures of ``base``."""
    out: Metrics = {}
    with running(lab.redis()) as redis, running(lab.sipreg(redis.url)) as node:
        out |= profile(lab, Nodes((node,), redis), "redis")
    with running(lab.redis(durable=True)) as redis, running(lab.sipreg(redis.url)) as node:
        out |= measure(lab, Nodes((node,), redis), "redis_aof", "refresh", Users())
    with (
        running(lab.redis()) as redis,
        running(lab.sipreg(redis.url)) as first,
        running(lab.sipreg(redis.url)) as second,
    ):
        out |= refresh_only(lab, Nodes((first, second), redis), "redis2")
    out["redis2.ratio"] = out["redis2.refresh.rate"] / out["redis.refresh.rate"]
    for prefix in ("redis", "redis_aof", "redis2"):
        sipreg = out[f"{prefix}.refresh.cpu_us"]
        both = sipreg + out[f"{prefix}.refresh.store_cpu_us"]
        for store in ("memory", "sqlite"):
            out[f"{prefix}.refresh.cpu_ratio.{store}"] = sipreg / base[f"{store}.refresh.cpu_us"]
            out[f"{prefix}.refresh.total_ratio.{store}"] = both / base[f"{store}.refresh.cpu_us"]
    return out


def kamailio_round(lab: Lab) -> Metrics:
    """One round of Kamailio: memory (usrloc db_mode=0) and the storm (those of --only)."""
    out: Metrics = {}
    if "memory" in lab.args.only:
        with running(lab.kamailio()) as server:
            out |= profile(lab, server, "memory")
    if "storm" in lab.args.only:
        with running(lab.kamailio()) as server:
            out |= storm(lab, server)
    return out


def memory_row(lab: Lab, server: Server) -> Metrics:
    """Pss and VmRSS per binding after loading each size of distinct users (expires 3600)."""
    out: Metrics = {}
    with running(server):
        time.sleep(0.5)
        rcvbuf = server.receive_buffer()
        if rcvbuf is not None:
            out["udp_rcvbuf"] = float(rcvbuf)
        empty = server.memory_kib()
        out["rss.empty_kib"] = float(empty["pss_kib"])
        loaded = 0
        extra = 0  # the bindings of the refresh runs, beside the loaded ones
        for index, size in enumerate(sorted(lab.args.sizes)):
            users = size - loaded
            load = sipload(
                lab,
                server,
                mode="initial",
                users=users,
                first=loaded,
                window=64,
                duration=60 + users / 200,
                expires=3600,
                tries=7,
            )
            loaded = size
            now = server.memory_kib()
            key = f"rss.{size}"
            out[f"{key}.failures"] = float(load.failures)
            out[f"{key}.load_rate"] = load.get("rate")
            held = size + extra
            out[f"{key}.pss_bytes"] = (now["pss_kib"] - empty["pss_kib"]) * 1024 / held
            out[f"{key}.vmrss_bytes"] = (now["rss_kib"] - empty["rss_kib"]) * 1024 / held
            out[f"{key}.bytes"] = out[f"{key}.pss_bytes"]
            # Refresh cost with that many bindings stored: new users, past every size.
            first = max(lab.args.sizes) + index * lab.args.users
            refresh = sipload(
                lab, server, mode="refresh", users=lab.args.users, first=first, window=64,
                duration=lab.args.duration,
            )  # fmt: skip
            extra += lab.args.users
            if index + 1 < len(lab.args.sizes):
                # The next size holds the answers of its own load, not this run's.
                time.sleep(server.answers_kept)
            out[f"scale.{size}.cpu_us"] = refresh.cpu_us
            out[f"scale.{size}.failures"] = float(refresh.failures)
            print(
                f"  {server.name} {size:>9,} bindings: {out[f'{key}.bytes']:,.0f} B each"
                f" (load {load.get('rate'):,.0f}/s, {load.failures} failures),"
                f" refresh {refresh.cpu_us:,.1f} us",
                flush=True,
            )
    return out


def soak_row(lab: Lab) -> Metrics:
    """SQLite, durable: refreshes paced at --soak-rate for --soak-duration; the latency."""
    a = lab.args
    with running(lab.sipreg("sqlite")) as server:
        load = sipload(
            lab, server, mode="refresh", users=a.users, first=0, window=LATENCY_WINDOW,
            duration=a.soak_duration, rate=a.soak_rate,
        )  # fmt: skip
    return {
        "soak.rate": load.get("rate"),
        "soak.p50_ms": load.latency("p50"),
        "soak.p99_ms": load.latency("p99"),
        "soak.failures": float(load.failures),
        "soak.cpu_us": load.cpu_us,
    }


def startup_row(lab: Lab) -> Metrics:
    """sipreg's start-up on an empty SQLite file and on one holding the largest size."""
    size = max(lab.args.sizes)
    out: Metrics = {"startup.bindings": float(size)}
    empty = lab.sipreg("sqlite")
    out["startup.empty_s"] = empty.start()
    empty.stop()
    filled = lab.sipreg("sqlite")
    db = filled.argv[filled.argv.index("--store") + 1].removeprefix("sqlite:")
    fill = [str(lab.tools.sipreg_python), str(FILL_STORE), "--db", db, "--users", str(size)]
    done = subprocess.run(fill, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise BenchError(f"fill_store.py failed: {done.stderr.strip()[-2000:]}")
    filled_info = json.loads(done.stdout.strip().splitlines()[-1])
    out["startup.fill_s"] = float(filled_info["elapsed_s"])
    out["startup.stored_aors"] = float(filled_info["stored_aors"])
    times = []
    for _ in range(lab.args.restarts + 1):  # the first opens a file nobody served before
        try:
            times.append(filled.start())
        finally:
            out["startup.stop_s"] = filled.stop()
    out["startup.first_s"] = times[0]
    out["startup.filled_s"] = statistics.median(times[1:]) if len(times) > 1 else times[0]
    return out


# ---- the run ----


@dataclass
class Report:
    """Everything measured, as it goes to the JSON file."""

    machine: dict[str, Any]
    settings: dict[str, Any]
    rounds: dict[str, list[Metrics]] = field(default_factory=dict)
    once: dict[str, Metrics] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def summary(self, server: str) -> Metrics:
        """The median over the rounds of each figure, and the figures measured once."""
        rounds = self.rounds.get(server, [])
        keys = sorted({k for r in rounds for k in r})
        out = {k: statistics.median(r[k] for r in rounds if k in r) for k in keys}
        out |= self.once.get(server, {})
        return out


def run_step(report: Report, what: str, step: Callable[[], Metrics]) -> Metrics | None:
    """Run one step; a failure is recorded and printed, and the run goes on."""
    started = time.perf_counter()
    print(f"- {what} ...", flush=True)
    try:
        got = step()
    except BenchError as err:
        report.errors.append(f"{what}: {err}")
        print(f"  FAILED: {err}", flush=True)
        return None
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    return got


def run(args: argparse.Namespace) -> Report:
    """Every row of --only, the servers alternating round after round."""
    tools = find_tools(args)
    servers = ["sipreg"] + (["kamailio"] if tools.kamailio else [])
    rounds = {"sipreg": ROUND_PARTS, "kamailio": KAMAILIO_ROUND_PARTS}
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    report = Report(machine_info(tools), settings)
    print(
        f"sipreg: {report.machine['sipreg']} ({tools.sipreg}), "
        f"kamailio: {report.machine['kamailio']}, redis: {report.machine['redis']}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sipreg-bench-") as tmp:
        lab = Lab(tools, Path(tmp), args)
        for r in range(args.rounds):
            for name in servers:
                if not rounds[name].intersection(args.only):
                    continue
                step = sipreg_round if name == "sipreg" else kamailio_round
                what = f"round {r + 1}/{args.rounds}: {name}"
                got = run_step(report, what, functools.partial(step, lab))
                if got is not None:
                    report.rounds.setdefault(name, []).append(got)
        for name in servers if "bindings" in args.only else []:
            server = lab.sipreg("memory:") if name == "sipreg" else lab.kamailio()
            sizes = ", ".join(f"{s:,}" for s in sorted(args.sizes))
            what = f"memory: {name}, {sizes} bindings"
            run_once(report, name, what, functools.partial(memory_row, lab, server))
        if "soak" in args.only:
            what = f"soak: sipreg, SQLite, {args.soak_rate:,.0f}/s for {args.soak_duration:.0f} s"
            run_once(report, "sipreg", what, lambda: soak_row(lab))
        if "startup" in args.only:
            what = f"start-up: sipreg, SQLite with {max(args.sizes):,} bindings"
            run_once(report, "sipreg", what, lambda: startup_row(lab))
    report.machine["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return report


def run_once(report: Report, server: str, what: str, step: Callable[[], Metrics]) -> None:
    """Run a step measured once (not in rounds); its figures go to ``server``'s."""
    got = run_step(report, what, step)
    if got is not None:
        report.once.setdefault(server, {}).update(got)


# ---- output ----


@dataclass(frozen=True)
class Row:
    """A line of the table: a label, the figures it shows and how, the part it is of."""

    label: str
    keys: tuple[str, ...]
    fmt: str = "{:,.1f}"
    kamailio: str | None = None  # why Kamailio has no figure here
    note: Callable[[Metrics], str] | None = None
    part: str = "memory"  # the rows of parts not run (--only) are left out


def _ratio_note(*ratios: tuple[str, str], lead: str = "") -> Callable[[Metrics], str]:
    """A note of those of ``ratios`` (key, what) measured: ``lead`` "what 1.23x, what 0.45x"."""

    def note(s: Metrics) -> str:
        found = [f"{what} {s[key]:.2f}x" for key, what in ratios if key in s]
        return lead + ", ".join(found) if found else ""

    return note


def _failed_text(s: Metrics, key: str) -> str:
    """What :func:`failed` found under ``key``: "12 failed (503 x 10, 2 timeouts)"."""
    why = [
        f"{n:,.0f} x {k.rpartition('.')[2]}" for k, n in s.items() if k.startswith(f"{key}.status.")
    ]
    if s.get(f"{key}.timeouts"):
        why.append(f"{s[f'{key}.timeouts']:,.0f} timeouts")
    return f"{s[f'{key}.failures']:,.0f} failed ({', '.join(why) or 'unfinished'})"


def _given_up_note(key: str) -> Callable[[Metrics], str]:
    """The windows the closed loop of ``key`` gave up on, and what failed in each."""

    def note(s: Metrics) -> str:
        found = [
            f"window {window}: {_failed_text(s, f'{key}.w{window}')}"
            for window in WINDOWS
            if f"{key}.w{window}.failures" in s
        ]
        return "; ".join(found)

    return note


def _latency_note(key: str) -> Callable[[Metrics], str]:
    """What failed in the run at half rate of ``key``, if anything did."""

    def note(s: Metrics) -> str:
        if not s.get(f"{key}.latency.failures"):
            return ""
        return f"at half rate {_failed_text(s, f'{key}.latency')}; latency of the 2xx"

    return note


def _notes(*notes: Callable[[Metrics], str] | None) -> Callable[[Metrics], str]:
    """The notes of ``notes`` there are, joined."""

    def note(s: Metrics) -> str:
        return "; ".join(text for n in notes if n is not None and (text := n(s)))

    return note


def _case_rows(
    key: str,
    title: str,
    part: str,
    kamailio: str | None = None,
    *,
    latency: bool = True,
    cpu_note: Callable[[Metrics], str] | None = None,
    rate_note: Callable[[Metrics], str] | None = None,
) -> list[Row]:
    """The rows of a closed-loop case ``key`` ("memory.refresh"): CPU, rate (and the
    windows given up on), latency."""
    rate_note = _notes(rate_note, _given_up_note(key))
    out = [
        Row(f"{title}: CPU us/REGISTER", (f"{key}.cpu_us",), kamailio=kamailio, note=cpu_note),
        Row(f"{title}: rate, 0 failures (/s)", (f"{key}.rate",), "{:,.0f}", kamailio, rate_note),
    ]
    if latency:
        out.append(
            Row(
                f"{title}: p50 / p99 at half (ms)",
                (f"{key}.p50_ms", f"{key}.p99_ms"),
                "{:,.2f}",
                kamailio,
                _latency_note(key),
            )
        )
    return [replace(row, part=part) for row in out]


def _redis_rows(key: str, title: str, *, latency: bool = True) -> list[Row]:
    """A Redis case's rows: sipreg's CPU over the memory and SQLite stores' (refresh),
    redis-server's CPU, and sipreg's and redis-server's together over those."""

    def over(ratio: str) -> tuple[tuple[str, str], ...]:
        return ((f"{key}.{ratio}.memory", "over memory"), (f"{key}.{ratio}.sqlite", "over SQLite"))

    no = "n/a (usrloc in memory)"
    rate_note = _ratio_note(("redis2.ratio", "over 1 node")) if key.startswith("redis2.") else None
    out = _case_rows(
        key, title, "redis", no,
        latency=latency, cpu_note=_ratio_note(*over("cpu_ratio")), rate_note=rate_note,
    )  # fmt: skip
    store = Row(
        f"{title}: redis-server us/REGISTER",
        (f"{key}.store_cpu_us",),
        kamailio=no,
        note=_ratio_note(*over("total_ratio"), lead="sipreg + redis-server "),
        part="redis",
    )
    return [out[0], store, *out[1:]]


def rows(report: Report) -> list[Row]:
    """The table's rows."""
    no_sqlite = "n/a (usrloc in memory)"
    out = []
    for store, title in (("memory", "memory"), ("sqlite", "SQLite")):
        for mode in ("initial", "refresh"):
            k = None if store == "memory" else no_sqlite
            out += _case_rows(f"{store}.{mode}", f"{title} {mode}", store, k)
    out.append(
        Row(
            "auth refresh: CPU us/REGISTER",
            ("auth.refresh.cpu_us",),
            kamailio="n/a (no auth)",
            note=_ratio_note(("auth.ratio", "on/off")),
            part="auth",
        )
    )
    if report.machine.get("sipreg_workers_flag"):
        out.append(
            Row(
                "1 worker refresh (SQLite, 64 sockets): rate (/s)",
                ("workers1.refresh.rate",),
                "{:,.0f}",
                kamailio="n/a",
                part="workers",
            )
        )
        out.append(
            Row(
                "2 workers refresh (SQLite, 64 sockets): rate (/s)",
                ("workers2.refresh.rate",),
                "{:,.0f}",
                kamailio="n/a",
                note=_ratio_note(("workers.ratio", "2/1 workers on SQLite")),
                part="workers",
            )
        )
    else:
        out.append(
            Row(
                "2 workers: rate",
                (),
                kamailio="n/a",
                note=lambda _: "n/a (no --workers)",
                part="workers",
            )
        )
    out += _redis_rows("redis.initial", "Redis initial")
    out += _redis_rows("redis.refresh", "Redis refresh")
    out += _redis_rows("redis_aof.refresh", "Redis AOF always refresh")
    out += _redis_rows("redis2.refresh", "Redis 2 nodes refresh", latency=False)
    sizes = sorted(report.settings["sizes"])
    for size in sizes:
        out.append(
            Row(
                f"memory per binding, {size:,} (B)",
                (f"rss.{size}.bytes",),
                "{:,.0f}",
                part="bindings",
            )
        )
    for size in sizes:

        def scale(s: Metrics, size: int = size) -> str:
            low, here = s.get(f"scale.{sizes[0]}.cpu_us"), s.get(f"scale.{size}.cpu_us")
            return f"{here / low:.2f}x of {sizes[0]:,}" if low and here and size != sizes[0] else ""

        out.append(
            Row(
                f"refresh CPU us, {size:,} stored",
                (f"scale.{size}.cpu_us",),
                note=scale,
                part="bindings",
            )
        )
    out.append(
        Row(
            f"SQLite soak {report.settings['soak_rate']:,.0f}/s: p50 / p99 (ms)",
            ("soak.p50_ms", "soak.p99_ms"),
            "{:,.2f}",
            kamailio="n/a",
            note=lambda s: (
                f"{s.get('soak.failures', 0):.0f} failures" if "soak.p99_ms" in s else ""
            ),
            part="soak",
        )
    )
    biggest = max(report.settings["sizes"])
    out.append(
        Row(
            f"start-up, SQLite {biggest:,} bindings (s)",
            ("startup.filled_s",),
            "{:,.2f}",
            kamailio="n/a",
            note=lambda s: (
                f"empty file {s.get('startup.empty_s', 0):.2f} s,"
                f" filled via store API in {s.get('startup.fill_s', 0):.0f} s"
            ),
            part="startup",
        )
    )
    n = report.settings["storm"]
    out += [
        Row(f"storm {n:,} new: time to all 200 (s)", ("storm.time_s",), "{:,.1f}", part="storm"),
        Row(f"storm {n:,} new: failures", ("storm.failures",), "{:,.0f}", part="storm"),
        Row(
            f"storm {n:,} new: retransmissions",
            ("storm.retransmissions",),
            "{:,.0f}",
            part="storm",
        ),
        Row(
            f"storm {n:,} new: UDP drops, full buffer",
            ("storm.udp_drops",),
            "{:,.0f}",
            note=lambda _: "RcvbufErrors of the whole machine",
            part="storm",
        ),
        Row("UDP receive buffer (bytes)", ("udp_rcvbuf",), "{:,.0f}", part="bindings"),
        Row("generator CPU us/REGISTER (refresh)", ("memory.refresh.generator_cpu_us",)),
    ]
    return out


def _cell(summary: Metrics, keys: Sequence[str], fmt: str) -> str:
    if not keys or any(k not in summary for k in keys):
        return "-"
    text = " / ".join(fmt.format(summary[k]) for k in keys)
    failures = summary.get(keys[0].rsplit(".", 1)[0] + ".failures", 0.0)
    if keys[0].endswith(".rate") and failures:
        text += f" ({failures:.0f} failures)"
    return text


def table(report: Report) -> str:
    """rows x {sipreg, kamailio, sipreg/kamailio, note} as plain text."""
    sip, kam = report.summary("sipreg"), report.summary("kamailio")
    have_kam = "kamailio" in report.rounds or "kamailio" in report.once
    lines = [["", "sipreg", "kamailio", "sipreg/kamailio", ""]]
    parts = report.settings.get("only", PARTS)
    for row in (row for row in rows(report) if row.part in parts):
        k_text = row.kamailio or (_cell(kam, row.keys, row.fmt) if have_kam else "not run")
        ratio = "-"
        if row.kamailio is None and row.keys and all(k in sip and k in kam for k in row.keys):
            ratio = " / ".join(f"{sip[k] / kam[k]:.2f}" if kam[k] else "-" for k in row.keys)
        note = row.note(sip) if row.note else ""
        lines.append([row.label, _cell(sip, row.keys, row.fmt), k_text, ratio, note])
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    text = []
    for n, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:4], widths[1:4], strict=True)
        ]
        text.append("  ".join([*cells, line[4]]).rstrip())
        if n == 0:
            text.append("-" * len(text[0]))
    return "\n".join(text)


def chart(report: Report, path: Path) -> bool:
    """A PNG of the main figures; False when matplotlib is missing."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        print("no matplotlib: no chart (make bench installs it)")
        return False
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")
    sip, kam = report.summary("sipreg"), report.summary("kamailio")
    cases = [
        ("memory.initial", "memory\ninitial"),
        ("memory.refresh", "memory\nrefresh"),
        ("sqlite.initial", "SQLite\ninitial"),
        ("sqlite.refresh", "SQLite\nrefresh"),
        ("auth.refresh", "auth\nrefresh"),
        ("redis.refresh", "Redis\nrefresh"),
        ("redis_aof.refresh", "Redis AOF\nrefresh"),
        ("redis2.refresh", "Redis 2\nnodes"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))

    def bars(ax: Any, suffix: str, title: str) -> None:
        xs = range(len(cases))
        ours = [sip.get(f"{c}.{suffix}", 0) for c, _ in cases]
        ax.bar([x - 0.2 for x in xs], ours, 0.4, color="C0", label="sipreg")
        store = [sip.get(f"{c}.store_cpu_us", 0) for c, _ in cases]
        if suffix == "cpu_us" and any(store):
            ax.bar([x - 0.2 for x in xs], store, 0.4, bottom=ours, color="C2", label="redis-server")
        ax.bar(
            [x + 0.2 for x in xs],
            [kam.get(f"{c}.{suffix}", 0) for c, _ in cases],
            0.4,
            color="C1",
            label="kamailio",
        )
        ax.set_xticks(list(xs), [label for _, label in cases])
        ax.set_title(title)
        _legend(ax)

    bars(axes[0][0], "cpu_us", "server CPU µs per REGISTER (lower is better)")
    bars(axes[0][1], "rate", "closed-loop REGISTERs/s with 0 failures")
    ax = axes[1][0]
    lat = [
        ("memory.initial", "mem init"),
        ("memory.refresh", "mem refr"),
        ("sqlite.initial", "sql init"),
        ("sqlite.refresh", "sql refr"),
        ("redis.refresh", "redis refr"),
        ("redis_aof.refresh", "redis AOF"),
    ]
    for i, (c, _) in enumerate(lat):
        for off, s, name in ((-0.2, sip, "sipreg"), (0.2, kam, "kamailio")):
            if f"{c}.p50_ms" in s:
                ax.bar(
                    i + off,
                    s[f"{c}.p99_ms"],
                    0.4,
                    color="C0" if s is sip else "C1",
                    alpha=0.35,
                    label=f"{name} p99" if i == 0 else None,
                )
                ax.bar(
                    i + off,
                    s[f"{c}.p50_ms"],
                    0.4,
                    color="C0" if s is sip else "C1",
                    label=f"{name} p50" if i == 0 else None,
                )
    ax.set_xticks(range(len(lat)), [label for _, label in lat])
    ax.set_yscale("log")
    ax.set_title("latency at half the closed-loop rate (ms)")
    _legend(ax)
    ax = axes[1][1]
    sizes = sorted(report.settings["sizes"])
    for s, name in ((sip, "sipreg"), (kam, "kamailio")):
        ys = [s.get(f"rss.{n}.bytes") for n in sizes]
        if any(y is not None for y in ys):
            ax.plot(sizes, [y if y is not None else float("nan") for y in ys], "o-", label=name)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_title("resident memory per binding (bytes)")
    _legend(ax)
    m = report.machine
    fig.suptitle(
        f"{m['sipreg']} ({m['sipreg_event_loop']}) vs {m['kamailio']}, "
        f"{m['cpu_model']} x{m['cores']}, {report.settings['rounds']} round(s), "
        f"{report.settings['started']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _legend(ax: Any) -> None:
    """The legend of ``ax``, if anything was drawn on it (a part not run draws nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def write(report: Report) -> Path:
    """bench/results/<UTC time>.json and latest.json, latest.png; the JSON's path."""
    RESULTS.mkdir(exist_ok=True)
    data = {
        "machine": report.machine,
        "settings": report.settings,
        "summary": {name: report.summary(name) for name in ("sipreg", "kamailio")},
        "rounds": report.rounds,
        "once": report.once,
        "errors": report.errors,
        "table": table(report).splitlines(),
    }
    text = json.dumps(data, indent=1, sort_keys=True, default=str) + "\n"
    path = RESULTS / f"{report.settings['started']}.json"
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    if chart(report, RESULTS / "latest.png"):
        print(f"chart: {RESULTS / 'latest.png'}")
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags; --quick changes the defaults of the others."""
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, sizes 10k and 100k, shorter runs"
    )
    parser.add_argument("--rounds", type=int, help="rounds of each server (3; quick 1)")
    parser.add_argument(
        "--sizes", type=_sizes, help="memory row sizes (10000,100000,1000000; quick: 10000,100000)"
    )
    parser.add_argument("--users", type=int, default=10_000, help="users of rows 1-3 and 5")
    parser.add_argument("--duration", type=float, help="seconds of each refresh run (10; quick 4)")
    parser.add_argument(
        "--initial-batches", type=int, help="initial runs of --users new users, summed (3; quick 2)"
    )
    parser.add_argument("--storm", type=int, default=100_000, help="phones of the storm")
    parser.add_argument("--storm-window", type=int, default=1000, help="storm: in flight")
    parser.add_argument("--restarts", type=int, default=3, help="start-up row: timed restarts")
    parser.add_argument("--soak-rate", type=float, default=1500.0, help="soak: REGISTERs a second")
    parser.add_argument("--soak-duration", type=float, help="soak: seconds (60; quick 10)")
    parser.add_argument("--sipreg", help="the sipreg to run (default: this venv's)")
    parser.add_argument("--no-kamailio", action="store_true", help="run sipreg alone")
    parser.add_argument(
        "--only",
        type=_parts,
        metavar="PARTS",
        help=(
            f"run only these parts, comma-separated, of {','.join(PARTS)} (default: all);"
            " with those their ratios are taken over (auth: memory;"
            " redis: memory and sqlite)"
        ),
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or PARTS)
    chosen.update(need for part in list(chosen) for need in NEEDS.get(part, ()))
    args.only = [part for part in PARTS if part in chosen]
    quick = args.quick
    if args.rounds is None:
        args.rounds = 1 if quick else 3
    if args.sizes is None:
        args.sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    if args.duration is None:
        args.duration = 4.0 if quick else 10.0
    if args.initial_batches is None:
        args.initial_batches = 2 if quick else 3
    if args.soak_duration is None:
        args.soak_duration = 10.0 if quick else 60.0
    for name in ("rounds", "users", "storm", "storm_window", "initial_batches"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.duration > 3600:
        parser.error("--duration must be from 0 to 3600 seconds")
    args.started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return args


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if not parts or unknown:
        raise argparse.ArgumentTypeError(
            f"not a part: {', '.join(unknown) or repr(text)} (parts: {', '.join(PARTS)})"
        )
    return parts


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1 or max(sizes) > 10_000_000:
        raise argparse.ArgumentTypeError("sizes from 1 to 10,000,000")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the table, write the results; 1 if any step failed."""
    args = parse_args(argv)
    try:
        report = run(args)
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1
    print()
    print(table(report))
    print(f"\nresults: {write(report)}")
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
