"""Whether the tests run in CI, where what a test needs must be there: no skipping."""

from __future__ import annotations

import os


def in_ci() -> bool:
    """True when the environment says this is CI (``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}
