-- cancel.lua: withdraw a pending task, or ask the worker of an active one
-- to stop (its owner is told on its channel and learns it again from its
-- next heartbeat).
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] the request's nonce, [4] the incarnation to cancel (field
-- rq; "" for any), [5] the nonce of a request that may have claimed it for
-- the caller ("" none), [6] the caller's Queue value id ("" for Cancel),
-- [7] "detach" when the caller (closing) only stops being the task's
-- fallback (see die), [8] dead letters' life ms for detach.
-- Reply: "cancelled", "signalled", "requeued", "terminal", "none" or
-- "detached". The
-- same request sent again gets the first one's answer (kept a minute in
-- T|n|<nonce>), whatever happened to the task since.
local k, id, nonce, inc, own, owner = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local answered = T .. '|n|' .. nonce
local prior = redis.call('GET', answered)
if prior then
  return prior
end
local function answer(a)
  redis.call('SET', answered, a, 'PX', 60000)
  return a
end
local f = redis.call('HMGET', k, 's', 'n', 'o', 'tt', 'fb', 'rq', 'cn', 'herr')
local st = f[1]
if st == 'active' and own ~= '' and f[7] == own and f[3] == owner and f[6] ~= own then
  -- Claimed for the caller, as a joiner, by a request whose reply was
  -- lost: the task is not the caller's to cancel; it goes back to the
  -- queue.
  redis.call('ZREM', akey(f[2]), id)
  redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '')
  ready(id, f[2], true)
  nudge(k, id)
  return answer('requeued')
end
if not st or inc ~= '' and f[6] ~= inc then
  return 'none'
end
if ARGV[7] == 'detach' then
  if f[5] == owner then
    redis.call('HSET', k, 'fb', '')
  end
  if st == 'active' and f[7] == 'handed' and f[3] == owner then
    -- Handed to the closing caller after its last failure: it fails as it
    -- would have.
    redis.call('ZADD', xkey(f[2]), NOW, id)
    finish(k, id, f[2], 'dead', '', f[8] or '', math.max(tonumber(ARGV[8]) or 0, tonumber(f[4]) or 0))
  end
  return 'detached'
end
if TERMINAL[st] then
  return 'terminal'
end
if st == 'pending' or st == 'active' and owner ~= '' and f[3] == owner and
    (own ~= '' and f[7] == own or f[7] == 'handed') then
  -- Pending, or claimed for the caller that gives it back by a request
  -- whose reply was lost, or handed to it: no run to stop.
  withdraw(id, f[2])
  redis.call('ZREM', akey(f[2]), id)
  finish(k, id, f[2], 'cancelled', '', 'taskqueue: cancelled', tonumber(f[4]))
  return answer('cancelled')
end
-- Its caller gave up: it no longer takes the task over (see die).
redis.call('HSET', k, 'c', '1', 'fb', '')
redis.call('PUBLISH', T .. '|c|' .. f[3], 'c ' .. id)
return answer('signalled')
