-- Apply one Change to one AOR, if it was planned on the AOR's current version.
-- KEYS: the AOR's hash, its group's expiry index, AOR set and connection index.
-- ARGV: the AOR, the planned version, the change's id, the number R of keys to
-- remove, those R keys, then four values a binding to upsert: key, expiry time,
-- "1" and its node if tied to a connection (else "0"), the encoded binding.
-- Returns {1, new version} or, on a conflict, {0, current version, the AOR's
-- hash as HGETALL gives it}: the caller plans again on that, loading nothing.
-- The hash keeps the id of its last change (field "c"): the same change sent
-- again (redis-py retries a command whose reply was lost) is answered
-- {2, current version}.
local akey, index, aors, conns = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local aor = ARGV[1]
local current = redis.call("HGET", akey, "v") or "0"
if current ~= ARGV[2] then
    if redis.call("HGET", akey, "c") == ARGV[3] then
        return {2, current}
    end
    return {0, current, redis.call("HGETALL", akey)}
end
local removals = tonumber(ARGV[4])
for i = 6 + removals, #ARGV, 4 do  -- check before the first write: a failed script keeps its writes
    local expires = tonumber(ARGV[i])
    if not expires or expires ~= expires then
        return redis.error_reply("sipreg: an expiry that is no number: " .. ARGV[i])
    end
end
for i = 5, 4 + removals do
    drop(akey, index, conns, aor, ARGV[i])
end
for i = 5 + removals, #ARGV, 4 do
    put(akey, index, conns, aor, ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3])
end
local version = stamp(akey, aors, aor)
if version ~= "0" then
    redis.call("HSET", akey, "c", ARGV[3])
end
return {1, version}
