-- gc.lua: housekeeping, bounded by ARGV[2] units (see reclaim), then hand
-- free members to waiters.
-- KEYS: the pool's keys (pool.lua).
-- Returns {expired leases, leases of lapsed sessions, expired members,
-- ended quarantines}.
local L = lib()
local drain, reclaim = L.drain, L.reclaim
local a, b, c, d = reclaim(tonumber(ARGV[2]))
drain()
return {a, b, c, d}
