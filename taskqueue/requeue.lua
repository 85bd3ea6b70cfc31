-- requeue.lua: queue a dead letter again, with its attempts reset and a
-- new expiry.
-- KEYS[1] T|t|<id>
-- ARGV[2] id.
-- Reply: "queued", or the task's state ("none" when it does not exist)
-- when it is not a dead letter (nothing changes).
local k, id = KEYS[1], ARGV[2]
local f = redis.call('HMGET', k, 's', 'n', 'tt')
if f[1] ~= 'dead' then
  return f[1] or 'none'
end
local tt = tonumber(f[3])
redis.call('ZREM', xkey(f[2]), id)
redis.call('HSET', k, 's', 'pending', 'a', 0, 'l', 0, 'err', '', 'res', '', 'f', '', 'tk', '', 'o', '', 'c', '0', 'x', NOW + tt)
redis.call('PEXPIRE', k, 2 * tt + 60000)
ready(id, f[2], false)
return 'queued'
