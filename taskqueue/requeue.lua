-- requeue.lua: queue a dead letter again, with its attempts reset and a
-- new expiry.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] the request's nonce.
-- Reply: "queued", or the task's state ("none" when it does not exist)
-- when it is not a dead letter (nothing changes). The same request sent
-- again gets "queued" again (kept a minute in T|n|<nonce>).
local k, id, nonce = KEYS[1], ARGV[2], ARGV[3]
local answered = T .. '|n|' .. nonce
if redis.call('EXISTS', answered) == 1 then
  return 'queued' -- this request, sent again
end
local f = redis.call('HMGET', k, 's', 'n', 'tt')
if f[1] ~= 'dead' then
  return f[1] or 'none'
end
local tt = tonumber(f[3])
redis.call('ZREM', xkey(f[2]), id)
redis.call('HSET', k, 's', 'pending', 'a', 0, 'l', 0, 'err', '', 'res', '', 'f', '', 'tk', '', 'o', '', 'c', '0',
  'x', NOW + tt)
redis.call('SET', answered, 'queued', 'PX', 60000)
redis.call('PEXPIRE', k, 2 * tt + 60000)
ready(id, f[2], false)
return 'queued'
