-- free.lua: end a lease, if the caller still holds it.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: resource, ARGV[3]: the lease's token
-- Returns 1 when the lease ended, 0 when the token does not hold the
-- resource (freed, reclaimed, granted again or never leased), 2 when the
-- lease had expired or its session lapsed (it is reclaimed now).
local name = ARGV[2]
local h = redis.call('HGET', K_HOLDERS, name)
if not h then
  return 0
end
local f, t, sess, waiter, d = string.match(h, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
if t ~= ARGV[3] then
  return 0
end
d = tonumber(d)
-- The common case runs without lib(): a lease with a TTL, outside a
-- session, not handed to a waiter, on a member without expiry or
-- quarantine, and nobody waiting.
if sess == '-' and waiter == '-' and d >= 0 then
  redis.call('HDEL', K_HOLDERS, name)
  redis.call('ZREM', K_TIMERS, 'L' .. name)
  local v = redis.call('HGET', K_ITEMS, name)
  if v then
    local p, _, g, e, q = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    if e == '0' and q == '0' and #redis.call('ZRANGE', K_WAITQ, 0, 0) == 0 then
      push_free(name, p, g, 0, 0)
    else
      lib().settle(name, true)
    end
  end
  if d <= NOW then
    return 2
  end
  return 1
end
local L = lib()
local session_live, end_held = L.session_live, L.end_held
end_held(name, t, sess, waiter, d)
if (d >= 0 and d <= NOW) or not session_live(sess) then
  return 2
end
return 1
