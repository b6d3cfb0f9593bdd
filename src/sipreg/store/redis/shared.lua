-- sipreg's bindings in Redis: the functions every script that writes an AOR shares.
--
-- One AOR is one hash: field "v" holds its version, field "c" the id of its last
-- change, field "b" .. KEY each binding (an encoded Binding).  Each AOR belongs to a group, and its group's keys carry
-- the same hash tag as the AOR's hash, so that a script touches one Cluster slot:
--   the expiry index, a sorted set of "AOR\nKEY" scored by expiry time;
--   the AOR set, the group's AORs with bindings (score 0, read in name order);
--   the connection index, a hash of "AOR\nKEY" -> node of bindings tied to a connection.
-- put, drop and stamp are the only code that changes them: the apply script
-- (REGISTER, eviction, connection close, removal by the CLI) and the sweep
-- script (expiry) both go through them.

local function member(aor, key)
    return aor .. "\n" .. key
end

-- Remove binding KEY of AOR, if it is stored.
local function drop(akey, index, conns, aor, key)
    if redis.call("HDEL", akey, "b" .. key) == 1 then
        local m = member(aor, key)
        redis.call("ZREM", index, m)
        redis.call("HDEL", conns, m)
    end
end

-- Store binding KEY of AOR (replacing one with that key), expiring at EXPIRES.  TIED
-- is "1" and the name of the node that took it for one tied to a connection, else "0".
local function put(akey, index, conns, aor, key, expires, tied, blob)
    redis.call("HSET", akey, "b" .. key, blob)
    local m = member(aor, key)
    redis.call("ZADD", index, expires, m)
    if string.sub(tied, 1, 1) == "1" then
        redis.call("HSET", conns, m, string.sub(tied, 2))
    else
        redis.call("HDEL", conns, m)
    end
end

-- After a write: an AOR left without bindings goes (version 0), one with bindings
-- gets a version it never had, max(last + 1, the server's clock in microseconds).
-- A new life of an AOR starts above every version of its earlier lives, which the
-- clock had passed when they were written.  Returns the version, as text.
local function stamp(akey, aors, aor)
    local last = redis.call("HGET", akey, "v")
    local others = (last and 1 or 0) + redis.call("HEXISTS", akey, "c")
    local bindings = redis.call("HLEN", akey) - others
    if bindings == 0 then
        redis.call("DEL", akey)
        redis.call("ZREM", aors, aor)
        return "0"
    end
    local clock = redis.call("TIME")
    local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
    local version = string.format("%.0f", math.max(tonumber(last or "0") + 1, now))
    redis.call("HSET", akey, "v", version)
    redis.call("ZADD", aors, 0, aor)
    return version
end
