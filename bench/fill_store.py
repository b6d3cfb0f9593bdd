"""Fill a SQLite store with bindings through sipreg's own store API.

    python bench/fill_store.py --db /tmp/x.db --users 1000000

The start-up row of ``bench/run.py`` needs a file with a million bindings; sending a
million REGISTERs over the wire takes minutes, writing them through
:class:`~sipreg.store.sqlite.SqliteStore` (load, then ``apply`` a ``Change``, as the
registrar does) takes far less and follows the schema whatever it becomes.  The
bindings are those ``bench/sipload.c`` would make: ``sip:PREFIXn@DOMAIN`` bound to
``sip:PREFIXn@127.0.0.1:5060`` for ``--expires`` seconds.  Prints one JSON line:
the bindings written, the AORs the store then lists, and the seconds it took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from sipreg.errors import StoreConflict
from sipreg.registrar.binding import Binding, Change
from sipreg.store.base import MAX_CONFLICT_RETRIES
from sipreg.store.sqlite import SqliteStore

#: Changes in flight at once: the group commit puts those queued together in one
#: transaction, so this bounds both the memory held and the size of a transaction.
CONCURRENCY = 5000


async def fill(path: str, users: int, first: int, domain: str, prefix: str, expires: int) -> int:
    """Bind ``users`` AORs in the store at ``path``; how many AORs it then holds."""
    store = SqliteStore(path)
    await store.open()
    now = time.time()
    slots = asyncio.Semaphore(CONCURRENCY)

    async def bind(n: int) -> None:
        aor = f"sip:{prefix}{n}@{domain}"
        contact = f"sip:{prefix}{n}@127.0.0.1:5060"
        binding = Binding(
            aor=aor,
            contact=contact,
            expires_at=now + expires,
            call_id=f"{n}-fill@127.0.0.1",
            cseq=1,
            registered_at=now,
            source=("127.0.0.1", 5060),
            transport="udp",
            local=("127.0.0.1", 5060),
            user_agent="sipload",
        )
        async with slots:
            # An AOR never written reports version 0 in a new file: try that first and
            # load the real version only on a conflict (a file that held bindings).
            version = 0
            for _ in range(MAX_CONFLICT_RETRIES):
                try:
                    await store.apply(Change(aor=aor, version=version, upsert=(binding,)))
                except StoreConflict:
                    version = (await store.load(aor)).version
                    continue
                return
        raise StoreConflict(f"{aor}: kept conflicting")

    try:
        for start in range(first, first + users, CONCURRENCY * 4):
            stop = min(first + users, start + CONCURRENCY * 4)
            await asyncio.gather(*(bind(n) for n in range(start, stop)))
        return len(await store.aors())
    finally:
        await store.close()


def main() -> int:
    """Parse the flags, fill, print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the SQLite file (created if missing)")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--first-user", type=int, default=0)
    parser.add_argument("--domain", default="example.com")
    parser.add_argument("--user-prefix", default="user")
    parser.add_argument("--expires", type=int, default=3600)
    args = parser.parse_args()
    started = time.perf_counter()
    stored = asyncio.run(
        fill(args.db, args.users, args.first_user, args.domain, args.user_prefix, args.expires)
    )
    elapsed = time.perf_counter() - started
    print(json.dumps({"written": args.users, "stored_aors": stored, "elapsed_s": elapsed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
