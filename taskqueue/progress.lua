-- progress.lua: save a running task's progress and tell its waiters.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] claim token, [4] current, [5] total.
-- Reply: "ok", "lost" (the token no longer holds the claim) or "expired"
-- (the task's expiry passed); nothing changes unless "ok".
local k, id = KEYS[1], ARGV[2]
local f = redis.call('HMGET', k, 's', 'tk', 'x')
if f[1] ~= 'active' or f[2] ~= ARGV[3] then
  return 'lost'
end
if tonumber(f[3]) <= NOW then
  return 'expired'
end
redis.call('HSET', k, 'pc', ARGV[4], 'pt', ARGV[5], 'pu', NOW)
tell(k, 'p ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. NOW .. ' ' .. ARGV[3] .. ' ' .. id)
return 'ok'
