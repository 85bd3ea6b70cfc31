-- free.lua: end a lease, if the caller still holds it.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: resource, ARGV[3]: the lease's token
-- Returns 1 when the lease ended, 0 when the token does not hold the
-- resource (freed, reclaimed, granted again or never leased), 2 when the
-- lease had expired or its session lapsed (it is reclaimed now).
local name = ARGV[2]
local f, t, sess, waiter, d = holder(name)
if t ~= ARGV[3] then
  return 0
end
end_held(name, t, sess, waiter, d)
if (d >= 0 and d <= NOW) or not session_live(sess) then
  return 2
end
return 1
