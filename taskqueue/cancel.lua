-- cancel.lua: withdraw a pending task, or ask the worker of an active one
-- to stop (its owner is told on its channel and learns it again from its
-- next heartbeat).
-- KEYS[1] T|t<id>
-- ARGV[2] id, [3] the request's nonce, [4] the incarnation to cancel (field
-- rq; "" for any).
-- Reply: "cancelled", "signalled", "terminal" or "none". The same request
-- sent again gets the first one's answer.
local k, id, nonce, inc = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', k, 's', 'n', 'o', 'tt', 'cx', 'rq', 'cn')
local st = f[1]
if not st or inc ~= '' and f[6] ~= inc then
  return 'none'
end
if f[5] and string.sub(f[5], 1, #nonce + 1) == nonce .. ' ' then
  return string.sub(f[5], #nonce + 2)
end
if TERMINAL[st] then
  return 'terminal'
end
if st == 'pending' or st == 'active' and inc ~= '' and f[7] == inc then
  -- Pending, or claimed by the very request of its caller that gives it
  -- back (its reply was lost: the run never started).
  withdraw(id, f[2])
  redis.call('HSET', k, 'cx', nonce .. ' cancelled')
  finish(k, id, f[2], 'cancelled', '', 'taskqueue: cancelled', tonumber(f[4]))
  return 'cancelled'
end
-- Its caller gave up: it no longer takes the task over (see die).
redis.call('HSET', k, 'c', '1', 'fb', '', 'cx', nonce .. ' signalled')
redis.call('PUBLISH', T .. '|c|' .. f[3], 'c ' .. id)
return 'signalled'
