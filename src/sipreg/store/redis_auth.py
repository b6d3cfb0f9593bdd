"""Authentication state shared by the nodes of one Redis store: the nonce key, nc counts, bans.

Keys, under the store's prefix:

- ``PREFIX:auth:key``: the nonce key, made once by whichever node comes first
  (``SET NX``).  Every node checks it every :data:`KEY_CHECK` seconds: a
  server that lost its data has no key any more, and a new one is made, so
  the nonces issued before (whose counts are gone too) are refused from then on;
- ``PREFIX:nc:NONCE``: the highest nc used with a nonce, until the nonce is stale;
- ``PREFIX:g:{SOURCE}:...``: the failures and bans of one source (its address,
  or its IPv6 /64), every key of a source in its slot: failure times per user
  (a sorted set), the users that failed (a hash), the bans (expiring strings).

Every key expires by itself once it no longer matters.  The rules are those of
:class:`~sipreg.auth.guard.Guard` and :class:`~sipreg.auth.nonce.NonceCounts`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from typing import Any

from ..auth.guard import NAME_LENGTH, Ban, source_key
from ..auth.nonce import CLOCK_SKEW
from ..auth.policy import AuthPolicy
from ..keyfile import KEY_BYTES
from .redis import RedisStore

#: Seconds between two looks at the shared nonce key.
KEY_CHECK = 1.0

# KEYS[1]: a nonce's count.  ARGV: the nc, milliseconds it matters.  1 if used, 0 if replayed.
_USE = """
local seen = redis.call("GET", KEYS[1])
if seen and tonumber(seen) >= tonumber(ARGV[1]) then
    return 0
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
return 1
"""

# KEYS: the user's failure times, the source's users, the user's ban, the source's ban.
# ARGV: now, window, max failures, max users, ban time, user, a unique member.
# Returns nil, or {ban until, failures, 1 if the whole source is banned}.
_FAILED = """
local now, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local ms = math.ceil(window * 1000)
redis.call("ZADD", KEYS[1], now, ARGV[7])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now - window)
redis.call("PEXPIRE", KEYS[1], ms)
local failures = redis.call("ZCARD", KEYS[1])
redis.call("HSET", KEYS[2], ARGV[6], ARGV[1])
local users = 0
local seen = redis.call("HGETALL", KEYS[2])
for i = 1, #seen, 2 do
    if tonumber(seen[i + 1]) <= now - window then
        redis.call("HDEL", KEYS[2], seen[i])
    else
        users = users + 1
    end
end
redis.call("PEXPIRE", KEYS[2], ms)
local ban_ms = math.ceil(tonumber(ARGV[5]) * 1000)
local expiry = string.format("%.3f", now + tonumber(ARGV[5]))
if users >= tonumber(ARGV[4]) then
    redis.call("DEL", KEYS[2])
    redis.call("SET", KEYS[4], expiry .. " " .. ARGV[4], "PX", ban_ms)
    return {expiry, ARGV[4], 1}
end
if failures >= tonumber(ARGV[3]) then
    redis.call("DEL", KEYS[1])
    redis.call("SET", KEYS[3], expiry .. " " .. failures, "PX", ban_ms)
    return {expiry, tostring(failures), 0}
end
return nil
"""


class RedisAuthState:
    """The :class:`~sipreg.auth.state.AuthState` of the nodes sharing ``store``'s server."""

    def __init__(self, store: RedisStore, auth: AuthPolicy, clock: Any = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self.configure(auth)
        prefix = store.target.prefix
        self._key = f"{prefix}:auth:key"
        self._nc = f"{prefix}:nc:"
        self._source = f"{prefix}:g:"
        self.key = b""
        self._checked = -math.inf

    def configure(self, auth: AuthPolicy) -> None:
        self.auth = auth

    async def nonce_key(self) -> bytes:
        """The shared nonce key, made now if there is none (a new or emptied server)."""
        fresh = secrets.token_bytes(KEY_BYTES)

        async def get_or_make() -> Any:
            client = self.store.client
            await client.set(self._key, fresh, nx=True)
            return await client.get(self._key)

        key = await self.store.run(get_or_make)
        if not isinstance(key, bytes) or len(key) < 16:
            raise ValueError(f"{self._key} holds no nonce key: delete it")
        self.key, self._checked = key, self.clock()
        return key

    async def key_changed(self) -> bytes | None:
        """The shared key if it changed since last seen (looked at once a KEY_CHECK), else None."""
        if self.clock() - self._checked < KEY_CHECK:
            return None
        before = self.key
        key = await self.nonce_key()
        return key if key != before else None

    @staticmethod
    def epoch(key: bytes) -> bytes:
        """The nonce epoch of ``key``: every node issues nonces in it, and counts them here."""
        return hashlib.sha256(b"sipreg nonce epoch\x00" + key).digest()[:4]

    async def banned(self, address: str, user: str | None, now: float) -> Ban | None:
        source = source_key(address)
        who = [None] if user is None else [None, user[:NAME_LENGTH]]
        keys = [self._ban(source, name) for name in who]
        found: list[Any] = await self.store.run(lambda: self.store.client.mget(keys))
        for name, value in zip(who, found, strict=True):
            if value is not None:
                until, _, failures = bytes(value).decode().partition(" ")
                if float(until) > now:
                    return Ban(source, name, float(until), int(failures))
        return None

    async def failed(self, address: str, user: str, now: float) -> Ban | None:
        source, name = source_key(address), user[:NAME_LENGTH]
        auth = self.auth
        keys = [
            self._failures(source, name), self._users(source),
            self._ban(source, name), self._ban(source, None),
        ]  # fmt: skip
        args = [
            repr(now), repr(auth.failure_window), str(auth.max_failures), str(auth.max_users),
            repr(auth.ban_time), name, f"{now!r} {secrets.token_hex(4)}",
        ]  # fmt: skip
        found = await self.store.run(lambda: self.store.script(_FAILED, keys, args))
        if found is None:
            return None
        until, failures, whole = found
        return Ban(source, None if int(whole) else name, float(until), int(failures))

    async def succeeded(self, address: str, user: str) -> None:
        source, name = source_key(address), user[:NAME_LENGTH]

        async def forgive() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.delete(self._failures(source, name))
            pipe.hdel(self._users(source), name)
            await pipe.execute()

        await self.store.run(forgive)

    async def use(self, nonce: str, issued_at: float, nc: int, now: float) -> bool:
        left = issued_at + self.auth.nonce_lifetime + CLOCK_SKEW - now
        args = [str(nc), str(max(1000, math.ceil(left * 1000)))]
        used = await self.store.run(lambda: self.store.script(_USE, [self._nc + nonce], args))
        return bool(used)

    def _tag(self, source: str) -> str:
        return f"{self._source}{{{source}}}"

    def _failures(self, source: str, user: str) -> str:
        return f"{self._tag(source)}:f:{user}"

    def _users(self, source: str) -> str:
        return f"{self._tag(source)}:u"

    def _ban(self, source: str, user: str | None) -> str:
        return f"{self._tag(source)}:b" if user is None else f"{self._tag(source)}:b:{user}"
