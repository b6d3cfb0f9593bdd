"""Authentication state shared by the nodes of one Redis store: the nonce key, nc counts, bans.

Keys, under the store's prefix:

- ``{PREFIX:auth}:key``: a secret made once by whichever node comes first
  (``SET NX``).  The nonce key is an HMAC of it and of the ``run_id`` of the
  Redis server holding it, which changes at every restart, restore and failover:
- ``{PREFIX:auth}:nc:NONCE``: the highest nc used with a nonce, until the nonce
  is stale.  The script that counts a use first checks, at once, that the secret
  and the ``run_id`` are those the nonce key was made of.  Counts that a restart,
  an older snapshot or a lagging replica lost are therefore never trusted: the
  node takes the new nonce key, and the client is challenged again (``stale``);
- ``PREFIX:g:{SOURCE}:...``: the failures and bans of one source (its address,
  or its IPv6 /64), every key of a source in its slot: failure times per user
  (a sorted set), the users that failed (a hash), the bans (expiring strings).
  A user name counts by a hash of its bytes: any length, any bytes.

Every key but the secret expires by itself once it no longer matters.  The rules
are those of :class:`~sipreg.auth.guard.Guard` and :class:`~sipreg.auth.nonce.NonceCounts`.
A script that a command retried after a lost reply runs again gives the same answer.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from ...auth.guard import NAME_LENGTH, Ban, source_key
from ...auth.nonce import CLOCK_SKEW
from ...auth.policy import AuthPolicy
from ...keyfile import KEY_BYTES
from .store import RedisStore

#: Seconds between two looks at the shared nonce key.
KEY_CHECK = 1.0

# Where the secret and the run_id come from, at once, and whether any node banned or
# counted a failure lately.  KEYS: the secret, the two flags.  ARGV[1]: a secret to
# keep if there is none.  Returns {secret, run_id, 1 if bans, 1 if failures}.
_KEY = """
redis.call("SET", KEYS[1], ARGV[1], "NX")
return {
    redis.call("GET", KEYS[1]), string.match(redis.call("INFO", "server"), "run_id:(%x+)"),
    redis.call("EXISTS", KEYS[2]), redis.call("EXISTS", KEYS[3]),
}
"""

# KEYS: a nonce's count, the secret.  ARGV: the nc, milliseconds it matters, the run_id
# and the SHA-1 of the secret the nonce key was made of, this use's token.
# Returns 1 if used, 0 if replayed, -1 if the nonce key is no longer the server's.
_USE = """
if string.match(redis.call("INFO", "server"), "run_id:(%x+)") ~= ARGV[3] then
    return -1
end
local secret = redis.call("GET", KEYS[2])
if not secret or redis.sha1hex(secret) ~= ARGV[4] then
    return -1
end
local seen = redis.call("GET", KEYS[1])
if seen then
    local nc, token = string.match(seen, "^(%d+) (%S+)$")
    if token == ARGV[5] then
        return 1
    end
    if tonumber(nc) >= tonumber(ARGV[1]) then
        return 0
    end
end
redis.call("SET", KEYS[1], ARGV[1] .. " " .. ARGV[5], "PX", ARGV[2])
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
    """The :class:`~sipreg.auth.state.AuthState` of the nodes sharing ``store``'s server.

    ``on_rekey(key, epoch)`` is told of every new nonce key after the first
    (:meth:`nonce_key`): the Authorize step's ``rekey``.
    """

    def __init__(
        self, store: RedisStore, auth: AuthPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.clock = clock
        self.configure(auth)
        prefix = store.target.prefix
        self._secret = f"{{{prefix}:auth}}:key"
        self._nc = f"{{{prefix}:auth}}:nc:"
        self._source = f"{prefix}:g:"
        self.key = b""
        self.on_rekey: Callable[[bytes, bytes], None] | None = None
        self._made_of = ("", "")  # the run_id and the secret's SHA-1 of the key
        self._checked = -math.inf
        # Whether any node banned a source, or counted a failure, lately: set by each
        # node that does, looked at once a KEY_CHECK.  Without either, a request
        # needs no ban look-up and a success no forgiveness: a round trip each.
        self._flags = f"{{{prefix}:auth}}:bans", f"{{{prefix}:auth}}:failures"
        self.any_bans = self.any_failures = True

    def configure(self, auth: AuthPolicy) -> None:
        self.auth = auth

    async def nonce_key(self) -> bytes:
        """The nonce key the server's secret and ``run_id`` make now (the secret made if none)."""
        fresh = secrets.token_bytes(KEY_BYTES)
        keys, args = [self._secret, *self._flags], [fresh]
        found = await self.store.run(lambda: self.store.script(_KEY, keys, args))
        secret, run_id, bans, failures = found
        self.any_bans, self.any_failures = bool(bans), bool(failures)
        run_id = bytes(run_id).decode()
        self._made_of = (run_id, hashlib.sha1(secret).hexdigest())
        self.key = hmac.new(secret, b"sipreg nonce key\x00" + run_id.encode(), "sha256").digest()
        self._checked = self.clock()
        return self.key

    async def refresh(self, *, now: bool = False) -> bool:
        """Look at the server's nonce key (``now``, or once a KEY_CHECK); True if it changed.

        A change is passed to ``on_rekey``.
        """
        if not now and self.clock() - self._checked < KEY_CHECK:
            return False
        before = self.key
        key = await self.nonce_key()
        if key == before:
            return False
        if self.on_rekey is not None:
            self.on_rekey(key, self.epoch(key))
        return True

    @staticmethod
    def epoch(key: bytes) -> bytes:
        """The nonce epoch of ``key``: every node issues nonces in it, and counts them here."""
        return hashlib.sha256(b"sipreg nonce epoch\x00" + key).digest()[:4]

    async def banned(self, address: str, user: str | None, now: float) -> Ban | None:
        """The ban, if any; none is looked up while no node banned anything lately.

        A ban that another node made is seen here within a KEY_CHECK.
        """
        if not self.any_bans:
            return None
        source = source_key(address)
        who = [None] if user is None else [None, user[:NAME_LENGTH]]
        keys = [self._ban(source, None if name is None else _hashed(name)) for name in who]
        found: list[Any] = await self.store.run(lambda: self.store.client.mget(keys))
        for name, value in zip(who, found, strict=True):
            if value is not None:
                until, _, failures = bytes(value).decode().partition(" ")
                if float(until) > now:
                    return Ban(source, name, float(until), int(failures))
        return None

    async def failed(self, address: str, user: str, now: float) -> Ban | None:
        source, name = source_key(address), user[:NAME_LENGTH]
        hashed, auth = _hashed(name), self.auth
        keys = [
            self._failures(source, hashed), self._users(source),
            self._ban(source, hashed), self._ban(source, None),
        ]  # fmt: skip
        args = [
            repr(now), repr(auth.failure_window), str(auth.max_failures), str(auth.max_users),
            repr(auth.ban_time), hashed, f"{now!r} {secrets.token_hex(8)}",
        ]  # fmt: skip
        found = await self.store.run(lambda: self.store.script(_FAILED, keys, args))
        ban = None
        if found is not None:
            until, failures, whole = found
            ban = Ban(source, None if int(whole) else name, float(until), int(failures))
        await self._flag(auth.failure_window, auth.ban_time if ban else None)
        return ban

    async def _flag(self, failures_for: float, bans_for: float | None) -> None:
        """Tell every node that failures (and bans) were counted, for as long as they count."""
        self.any_failures = True
        self.any_bans = self.any_bans or bans_for is not None

        async def set_flags() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.set(self._flags[1], b"1", px=math.ceil(failures_for * 1000))
            if bans_for is not None:
                pipe.set(self._flags[0], b"1", px=math.ceil(bans_for * 1000))
            await pipe.execute()

        await self.store.run(set_flags)

    async def succeeded(self, address: str, user: str) -> None:
        """Forgive the failures, if any node counted one lately."""
        if not self.any_failures:
            return
        source, hashed = source_key(address), _hashed(user[:NAME_LENGTH])

        async def forgive() -> None:
            pipe = self.store.client.pipeline(transaction=False)
            pipe.delete(self._failures(source, hashed))
            pipe.hdel(self._users(source), hashed)
            await pipe.execute()

        await self.store.run(forgive)

    async def use(self, nonce: str, issued_at: float, nc: int, now: float) -> bool:
        """Count the use; False for a replay, and for a nonce key the server no longer has.

        In that case the new key is taken (``on_rekey``) before this returns, so the
        challenge that answers the request carries a nonce the server counts again.
        """
        left = issued_at + self.auth.nonce_lifetime + CLOCK_SKEW - now
        run_id, secret = self._made_of
        args = [str(nc), str(max(1000, math.ceil(left * 1000))), run_id, secret,
                secrets.token_hex(8)]  # fmt: skip
        keys = [self._nc + nonce, self._secret]
        used = await self.store.run(lambda: self.store.script(_USE, keys, args))
        if used == -1:
            await self.refresh(now=True)
            return False
        return bool(used)

    def _tag(self, source: str) -> str:
        return f"{self._source}{{{source}}}"

    def _failures(self, source: str, user: str) -> str:
        return f"{self._tag(source)}:f:{user}"

    def _users(self, source: str) -> str:
        return f"{self._tag(source)}:u"

    def _ban(self, source: str, user: str | None) -> str:
        return f"{self._tag(source)}:b" if user is None else f"{self._tag(source)}:b:{user}"


def _hashed(name: str) -> str:
    """What a user name counts as in a key: a hash of its bytes (no length, no brace to fear)."""
    return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:32]
