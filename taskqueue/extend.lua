-- extend.lua: a Queue value's heartbeat. It advertises its listeners and
-- extends the claims of the tasks it runs.
-- KEYS[1] T|seq (routing)
-- ARGV[2] owner, [3] lease ms, [4] liveness ms, [5] count of names listened
-- to, then those names, then (name, id, token) of each task run.
-- Reply: {lost, cancelled}: ids whose claim is no longer the owner's (or
-- whose task expired), and ids whose caller cancelled them.
local owner, lease, live, count = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 1, count do
  redis.call('ZADD', lkey(ARGV[5 + i]), NOW + live, owner)
  redis.call('SADD', NAMES, ARGV[5 + i])
end
local lost, cancelled = {}, {}
for i = 6 + count, #ARGV, 3 do
  local name, id, tk = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local f = redis.call('HMGET', tkey(id), 's', 'tk', 'c', 'x')
  -- A claim is not extended past the task's expiry: a run that outlives
  -- it (its function ignoring its context) lets the claim lapse.
  if f[1] == 'active' and f[2] == tk and tonumber(f[4]) > NOW then
    redis.call('ZADD', akey(name), 'XX', NOW + lease, id)
    if f[3] == '1' then cancelled[#cancelled + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancelled}
