"""Builds the request path's modules with mypyc, from the same typed source.

The compiled modules are those a REGISTER runs through: parsing, the front, the
chain and its steps, the section 10.3 rules, Digest, the memory and SQLite
stores and the UDP leg.  The rest (CLI, config, admin, logs, metrics, the Redis
adapter) stays interpreted: they are not on the hot path, or subclass C types
mypyc cannot.

``SIPREG_PURE=1`` builds the pure-Python package.  So does a machine without
mypyc or without a C compiler: the build falls back instead of failing, and
``sipreg --version`` says which core is installed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "_abnf.py",
    "_scan.py",
    "_value.py",
    "chain.py",
    "framing.py",
    "front.py",
    "guards.py",
    "headers.py",
    "leg.py",
    "message.py",
    "networks.py",
    "outcome.py",
    "responses.py",
    "server.py",
    "status.py",
    "throttle.py",
    "transactions.py",
    "uri.py",
    "via.py",
    "auth/digest.py",
    "auth/guard.py",
    "auth/nonce.py",
    "auth/policy.py",
    "auth/state.py",
    "auth/step.py",
    "auth/users.py",
    "registrar/binding.py",
    "registrar/events.py",
    "registrar/facade.py",
    "registrar/policy.py",
    "registrar/rules.py",
    "registrar/step.py",
    "routing/rules.py",
    "routing/steps.py",
    "store/base.py",
    "store/memory.py",
    "store/sqlite.py",
    "store/timed.py",
    "transport/base.py",
    "transport/udp.py",
]


class BuildExtOrPure(build_ext):
    """Builds the extensions, or leaves the package pure when the compiler fails.

    A failed build removes what it had built, so no module is left half compiled.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as err:
            print(f"sipreg: mypyc build failed ({err}); installing pure Python", file=sys.stderr)
            for ext in self.extensions:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.get_ext_fullpath(ext.name))


def extensions() -> list[Any]:
    """The mypyc extensions, or none for a pure build."""
    if os.environ.get("SIPREG_PURE") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("sipreg: mypyc is not installed; installing pure Python", file=sys.stderr)
        return []
    paths = [os.path.join("src", "sipreg", path) for path in COMPILED]
    return list(mypycify(paths, opt_level="3"))


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtOrPure})
