-- renew.lua: extend a lease the caller still holds.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: resource, ARGV[3]: the lease's token, ARGV[4]: TTL in ms (≤ 0:
-- permanent)
-- Returns the new deadline (ms, -1: permanent), or false when the token
-- does not hold the resource or the lease expired (it is reclaimed then, so
-- an expired lease never comes back).
local name, token, ttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local _, t = holder(name)
if t ~= token then
  return false
end
local d = tonumber(redis.call('ZSCORE', K_LEASES, name))
if d and d <= NOW then
  end_lease(name)
  return false
end
if ttl > 0 then
  redis.call('ZADD', K_LEASES, NOW + ttl, name)
  return NOW + ttl
end
redis.call('ZADD', K_LEASES, '+inf', name)
return -1
