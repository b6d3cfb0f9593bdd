"""The README's library example runs as written and does what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_library_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (example,) = [b for b in blocks if "Registrar(" in b]
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "SIP/2.0 200 OK" in done.stdout
    assert "Contact: <sip:alice@192.0.2.7:5060>;expires=120" in done.stdout
    assert done.stdout.rstrip().endswith("200 ['sip:alice@192.0.2.7:5060']")
    assert (tmp_path / "bindings.db").exists()


def test_chain_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    (example,) = [b for b in blocks if "Chain([" in b]
    script = tmp_path / "chain.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "SIP/2.0 401 Unauthorized",
        "401",
        "SIP/2.0 403 Register from the office network",
        "403",
    ]
