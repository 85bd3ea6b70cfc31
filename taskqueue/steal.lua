-- steal.lua: take a task over to run it here (RemoteFirst and Auto falling
-- back to local) when no listener has started it, or when its worker's
-- claim lapsed: a pending (or dead) task, or one whose claim lapsed,
-- becomes active for the owner with a fresh token, in the same step that
-- withdraws it, so it runs in one place only. A task a live listener is
-- running is left to it.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] owner, [4] lease ms, [5] the request's nonce (the same
-- request sent again finds its claim), [6] max lost claims, [7] dead
-- letters' life ms (see lapsed).
-- Reply: {"none"}, {"active", ms left of its claim} when a live worker
-- runs it, {"done", record} when
-- it finished meanwhile (done, failed, cancelled or expired), else {"l",
-- record} (its token in field tk).
local k, id, owner, lease, nonce = KEYS[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local maxlost, deadlife = tonumber(ARGV[6]), tonumber(ARGV[7])
local f = redis.call('HMGET', k, 's', 'n', 'cn')
local st, name = f[1], f[2]
if not st then
  return {'none'}
end
if st == 'active' and f[3] == nonce then
  -- This request, sent again: the claim is its own, its lease counting
  -- from now.
  redis.call('ZADD', akey(name), NOW + lease, id)
  return {'l', record(k)}
end
if st == 'active' then
  local deadline = tonumber(redis.call('ZSCORE', akey(name), id))
  if deadline and deadline > NOW then
    return {'active', tostring(deadline - NOW)}
  end
  -- Its claim lapsed: its worker died or stalled. A stalled one is told
  -- to stop; its token no longer counts.
  local o = redis.call('HGET', k, 'o')
  if o and o ~= owner then
    redis.call('PUBLISH', T .. '|c|' .. o, 'c ' .. id)
  end
  if lapsed(k, id, name, maxlost, deadlife, lease) then
    local now = redis.call('HMGET', k, 's', 'o')
    if TERMINAL[now[1]] then
      return {'done', record(k)}
    end
    if now[1] == 'active' and now[2] == owner then
      return {'l', record(k)} -- handed to this caller
    end
    return {'active', tostring(lease)}
  end
end
if TERMINAL[st] and st ~= 'dead' then
  return {'done', record(k)}
end
withdraw(id, name)
redis.call('HSET', k, 'fb', '')
redis.call('PEXPIRE', k, 2 * tonumber(redis.call('HGET', k, 'tt')) + 60000)
claim_for(k, id, name, owner, lease, nonce)
return {'l', record(k)}
