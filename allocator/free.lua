-- free.lua: end a lease, if the caller still holds it.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: resource, ARGV[3]: the lease's token
-- Returns 1 when the lease ended, 0 when the token does not hold the
-- resource (freed, reclaimed, granted again or never leased), 2 when the
-- lease had expired (it is reclaimed now).
local name, token = ARGV[2], ARGV[3]
local _, t = holder(name)
if t ~= token then
  return 0
end
local d = tonumber(redis.call('ZSCORE', K_LEASES, name))
end_lease(name)
if d and d <= NOW then
  return 2
end
return 1
