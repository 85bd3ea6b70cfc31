-- renew.lua: extend a lease the caller still holds.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: resource, ARGV[3]: the lease's token, ARGV[4]: TTL in ms (≤ 0:
-- permanent)
-- Returns the new deadline (ms, -1: permanent), or false when the token
-- does not hold the resource, the lease expired or its session lapsed (the
-- lease is reclaimed then, so it never comes back).
local L = lib()
local holder, put_holder, session_live, end_held = L.holder, L.put_holder, L.session_live, L.end_held
local name, ttl = ARGV[2], tonumber(ARGV[4])
local f, t, sess, waiter, d = holder(name)
if t ~= ARGV[3] then
  return false
end
if (d >= 0 and d <= NOW) or not session_live(sess) then
  end_held(name, t, sess, waiter, d)
  return false
end
local nd = -1
if ttl > 0 then
  nd = NOW + ttl
  redis.call('ZADD', K_TIMERS, nd, 'L' .. name)
  if d < 0 then
    redis.call('ZREM', K_PERM, t .. '|' .. name)
  end
elseif d >= 0 then
  redis.call('ZREM', K_TIMERS, 'L' .. name)
  redis.call('ZADD', K_PERM, 0, t .. '|' .. name)
end
put_holder(name, f, t, sess, waiter, nd)
return nd
