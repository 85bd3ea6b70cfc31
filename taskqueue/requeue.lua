-- requeue.lua: queue a dead letter again, with its attempts reset and a
-- new expiry.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] the request's nonce.
-- Reply: "queued", or the task's state ("none" when it does not exist)
-- when it is not a dead letter (nothing changes). The same request sent
-- again gets "queued" again.
local k, id, nonce = KEYS[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', k, 's', 'n', 'tt', 'qn')
if f[1] ~= 'dead' then
  if f[1] and f[4] == nonce then
    return 'queued'
  end
  return f[1] or 'none'
end
local tt = tonumber(f[3])
redis.call('ZREM', xkey(f[2]), id)
redis.call('HSET', k, 's', 'pending', 'a', 0, 'l', 0, 'err', '', 'res', '', 'f', '', 'tk', '', 'o', '', 'c', '0',
  'x', NOW + tt, 'qn', nonce)
redis.call('PEXPIRE', k, 2 * tt + 60000)
ready(id, f[2], false)
return 'queued'
