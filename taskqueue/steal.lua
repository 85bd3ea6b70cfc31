-- steal.lua: take a task over to run it here (RemoteFirst and Auto falling
-- back to local): a pending, dead or remotely running task becomes active
-- for the owner with a fresh token, so no other worker can store a result
-- for it afterwards and it runs in one place only. A remote worker running
-- it is told to stop.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] owner, [4] lease ms.
-- Reply: {"none"}, {"done", record} when it finished meanwhile (done,
-- cancelled or expired), else {"l", token, expiry ms}.
local k, id, owner, lease = KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local f = redis.call('HMGET', k, 's', 'n', 'o')
local st, name = f[1], f[2]
if not st then
  return {'none'}
end
if TERMINAL[st] and st ~= 'dead' then
  return {'done', record(k)}
end
if st == 'active' then
  if f[3] ~= owner then
    redis.call('PUBLISH', T .. '|c|' .. f[3], 'c ' .. id)
  end
else
  withdraw(id, name)
end
redis.call('PEXPIRE', k, 2 * tonumber(redis.call('HGET', k, 'tt')) + 60000)
return {'l', claim_for(k, id, name, owner, lease), redis.call('HGET', k, 'x')}
