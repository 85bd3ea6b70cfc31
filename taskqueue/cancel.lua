-- cancel.lua: withdraw a pending task, or ask the worker of an active one
-- to stop (its owner is told on its channel and learns it again from its
-- next heartbeat).
-- KEYS[1] T|t|<id>
-- ARGV[2] id.
-- Reply: "cancelled", "signalled", "terminal" or "none".
local k, id = KEYS[1], ARGV[2]
local f = redis.call('HMGET', k, 's', 'n', 'o', 'tt')
local st = f[1]
if not st then
  return 'none'
end
if TERMINAL[st] then
  return 'terminal'
end
if st == 'pending' then
  withdraw(id, f[2])
  finish(k, id, f[2], 'cancelled', '', 'taskqueue: cancelled', tonumber(f[4]))
  return 'cancelled'
end
-- Its caller gave up: it no longer takes the task over (see die).
redis.call('HSET', k, 'c', '1', 'fb', '')
redis.call('PUBLISH', T .. '|c|' .. f[3], 'c ' .. id)
return 'signalled'
