"""A ``sipreg serve`` subprocess on loopback for the end-to-end tests.

Its ports are read from the ``listening on`` lines it logs (text or JSON); a
thread keeps its log pipe flowing so a chatty server never blocks on a full pipe.
``capture_stdout`` keeps its standard output in a pipe (the server should write nothing there).
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

TIMEOUT: Final = 10.0


class SipregProcess:
    """``python -m sipreg serve`` on UDP and TCP 127.0.0.1, port 0, for example.com.

    ``python`` replaces ``[sys.executable, "-m", "sipreg"]``; ``args`` are more flags;
    ``listen`` replaces the two listen specs.  ``ports`` maps each transport to the port
    it got (``addresses`` to its host and port).  ``domain`` None leaves the served
    domains to ``args`` (a config file, say).
    """

    def __init__(
        self,
        store: str,
        cwd: Path,
        args: Sequence[str] = (),
        python: Sequence[str] | None = None,
        listen: Sequence[str] = ("udp:127.0.0.1:0", "tcp:127.0.0.1:0"),
        domain: str | None = "example.com",
        capture_stdout: bool = False,
    ) -> None:
        argv = [
            *(python or [sys.executable, "-m", "sipreg"]), "serve",
            *(flag for spec in listen for flag in ("--listen", spec)),
            "--store", store, *(["--domain", domain] if domain else []), *args,
        ]  # fmt: skip
        self.store = store
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture_stdout else subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.ports: dict[str, int] = {}
        self.addresses: dict[str, tuple[str, int]] = {}
        try:
            while not re.search(r"(?<!was )\bready\b", self.next_line()):  # text or JSON
                pass
        except BaseException:  # never ready: leave no server behind
            self.proc.kill()
            self.proc.wait(TIMEOUT)
            raise
        assert len(self.addresses) == len(listen), self.log
        self.udp = self.addresses.get("udp", ("127.0.0.1", 0))
        self.tcp = self.addresses.get("tcp", ("127.0.0.1", 0))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def next_line(self) -> str:
        """The next line of the server's log; fails if it exits or stays silent."""
        line = self._lines.get(timeout=TIMEOUT)
        assert line is not None, "the server exited:\n" + "".join(self.log)
        self.log.append(line)
        m = re.search(r"listening on (\w+):\[?([0-9a-f.:]+?)\]?:(\d+)(\"\})?$", line.rstrip())
        if m:
            self.ports[m.group(1)] = int(m.group(3))
            self.addresses[m.group(1)] = (m.group(2), int(m.group(3)))
        return line

    def wait_for(self, pattern: str) -> str:
        """The next log line matching ``pattern``."""
        while True:
            line = self.next_line()
            if re.search(pattern, line):
                return line

    def logged(self) -> str:
        """What the server has logged so far."""
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.log.append(line)
        return "".join(self.log)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum``; the exit status."""
        self.proc.send_signal(signum)
        return self.proc.wait(TIMEOUT)

    def rest_of_log(self) -> str:
        """Everything the server logged, up to its exit."""
        while True:
            line = self._lines.get(timeout=TIMEOUT)
            if line is None:
                return "".join(self.log)
            self.log.append(line)
