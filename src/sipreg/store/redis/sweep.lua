-- Remove up to ARGV[3] bindings of one group that expire by ARGV[2]; return them.
-- KEYS: the group's expiry index, AOR set and connection index.  ARGV[1] is the
-- prefix of the group's AOR hashes (the AOR's name completes it: same slot).
-- The script runs alone, so of nodes sweeping at once each binding goes to one.
-- A node whose clock runs ahead sweeps no earlier than the server's clock says.
local index, aors, conns = KEYS[1], KEYS[2], KEYS[3]
local clock = redis.call("TIME")
local now = math.min(tonumber(ARGV[2]), tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
local due = redis.call(
    "ZRANGEBYSCORE", index, "-inf", string.format("%.17g", now), "LIMIT", 0, tonumber(ARGV[3])
)
local taken, touched = {}, {}
for _, m in ipairs(due) do
    local cut = string.find(m, "\n", 1, true)
    local aor, key = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    local akey = ARGV[1] .. aor
    -- pcall: a hash a cluster is moving to another node is left for a later sweep,
    -- its index entry with it, rather than failing the script halfway.
    local blob = redis.pcall("HGET", akey, "b" .. key)
    if type(blob) == "table" and blob.err then
        blob = nil
    else
        redis.call("ZREM", index, m)
    end
    if blob then
        drop(akey, index, conns, aor, key)
        taken[#taken + 1] = blob
        touched[aor] = akey
    end
end
for aor, akey in pairs(touched) do
    stamp(akey, aors, aor)
end
return taken
