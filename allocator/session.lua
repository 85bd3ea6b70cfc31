-- session.lua: open, renew or close a client session.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: "open", "renew" or "close", ARGV[3]: session id, ARGV[4]: TTL
-- in ms (open, renew)
-- open and renew return 1, or 0 when renew finds the session lapsed (its
-- leases are reclaimed then, if they were not yet). close ends all the
-- session's leases and returns their number. Waiters of a lapsed or closed
-- session are skipped by the hand-off (live_head).
local L = lib()
local session_live, end_lease = L.session_live, L.end_lease
local op, sid = ARGV[2], ARGV[3]
if op == 'open' then
  redis.call('ZADD', K_TIMERS, NOW + tonumber(ARGV[4]), 'S' .. sid)
  return 1
end
if op == 'renew' and session_live(sid) then
  redis.call('ZADD', K_TIMERS, NOW + tonumber(ARGV[4]), 'S' .. sid)
  return 1
end
local n = 0
for _, e in ipairs(redis.call('ZRANGEBYLEX', K_SESSL, '[' .. sid .. '|', '(' .. sid .. '}')) do
  end_lease(string.sub(e, #sid + 2))
  n = n + 1
end
redis.call('ZREM', K_TIMERS, 'S' .. sid)
if op == 'renew' then
  return 0
end
return n
