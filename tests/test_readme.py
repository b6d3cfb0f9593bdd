"""The README's examples run as written and do what their comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def run_example(marker: str, tmp_path: Path) -> str:
    """Run the README's one python block containing ``marker``; its standard output."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    (example,) = [b for b in blocks if marker in b]
    script = tmp_path / "example.py"
    script.write_text(example)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_library_example_runs_and_runs_again(tmp_path: Path) -> None:
    for _ in range(2):
        out = run_example("Registrar(", tmp_path)
        assert "SIP/2.0 200 OK" in out
        assert "Contact: <sip:alice@192.0.2.7:5060>;expires=120" in out
        assert out.rstrip().endswith("200 ['sip:alice@192.0.2.7:5060']")
        assert [p.name for p in tmp_path.iterdir()] == ["example.py"]  # it leaves nothing behind


def test_readme_names_nothing_outside_the_repository() -> None:
    text = README.read_text()
    for outside in ("STYLE rule", "the issue that", "/work/", "issues show"):
        assert outside not in text, outside


def test_chain_example_runs(tmp_path: Path) -> None:
    assert run_example("Chain([", tmp_path).splitlines() == [
        "SIP/2.0 401 Unauthorized",
        "401",
        "SIP/2.0 403 Register from the office network",
        "403",
    ]
