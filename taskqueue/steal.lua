-- steal.lua: take a task over to run it here (RemoteFirst and Auto falling
-- back to local) when no listener has started it, or when its remote run
-- failed: a pending or dead task becomes active for the owner with a
-- fresh token, in the same step that withdraws it, so it runs in one
-- place only. A task a listener is running is left to it.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] owner, [4] lease ms.
-- Reply: {"none"}, {"active"} when a worker runs it, {"done", record} when
-- it finished meanwhile (done, failed, cancelled or expired), else {"l",
-- token, expiry ms, created ms}.
local k, id, owner, lease = KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local f = redis.call('HMGET', k, 's', 'n')
local st, name = f[1], f[2]
if not st then
  return {'none'}
end
if st == 'active' then
  return {'active'}
end
if TERMINAL[st] and st ~= 'dead' then
  return {'done', record(k)}
end
withdraw(id, name)
redis.call('PEXPIRE', k, 2 * tonumber(redis.call('HGET', k, 'tt')) + 60000)
return {'l', claim_for(k, id, name, owner, lease), redis.call('HGET', k, 'x'), redis.call('HGET', k, 'ct')}
