-- malloc.lua: lease n free resources (exclusive mode), all or none.
-- KEYS: the pool's keys (pool.lua), then KEYS[13]: the binding key or none.
-- ARGV[2]: housekeeping budget (see reclaim)
-- ARGV[3]: lease TTL in ms (≤ 0: permanent)
-- ARGV[4]: token of the new leases
-- ARGV[5]: session id, or "-"
-- ARGV[6]: n, the number of resources (≥ 1)
-- ARGV[7]: binding TTL in ms (≤ 0: permanent), when KEYS[13] is given
-- Returns {1, deadline ms or -1, fence1, name1, ..., fencen, namen}, {0}
-- when fewer than n resources are free, {-1} when the session has lapsed.
-- A binding (n = 1 only) is honoured when its member is free and valid;
-- otherwise the best free member is taken and the name re-bound. Waiters
-- need no look: a member becomes free only when none waits (give_back).
-- A permanent malloc whose caller gave up on it (cancel, after its reply
-- was lost) grants nothing: a lease with a TTL runs out by itself.
if tonumber(ARGV[3]) <= 0 and redis.call('ZSCORE', K_CANCELLED, ARGV[4]) then
  return {0}
end
-- The common case runs without lib(): one resource, no binding, no
-- session, and nothing due (so no free member has expired).
if not KEYS[13] and ARGV[5] == '-' and ARGV[6] == '1' and tonumber(ARGV[2]) > 0
    and #redis.call('ZRANGEBYSCORE', K_TIMERS, '(0', NOW, 'LIMIT', 0, 1) == 0 then
  local r = redis.call('ZPOPMIN', K_FREE)
  if #r == 0 then
    return {0}
  end
  local name = string.sub(r[1], 13)
  local fence, deadline = grant(name, ARGV[4], tonumber(ARGV[3]), '-', '-')
  return {1, deadline, fence, name}
end
local L = lib()
local pull_free, pop_free, session_live, reclaim, bound, bind = L.pull_free, L.pop_free, L.session_live, L.reclaim, L.bound, L.bind
local _, _, _, _, done = reclaim(tonumber(ARGV[2]))
local ttl, token, sess, n = tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
if not session_live(sess) then
  return {-1}
end
local bkey = KEYS[13]
local picked, gen = {}, nil
if bkey then
  local b = redis.pcall('GET', bkey)
  if type(b) == 'string' then -- not false (none) nor an error (another type)
    local name, p, s, g, e, q = bound(b, true)
    if name then
      pull_free(name, p, s, g, e, q)
      picked[1], gen = name, g
    end
  end
end
if #picked == 0 then
  if n > 1 and redis.call('ZCARD', K_FREE) < n then
    return {0}
  end
  -- Pop the best members. The record of a popped member stays as it is
  -- (pool.lua, is_free) unless it has to be read anyway: to re-bind, or
  -- when due housekeeping is left and a popped member may have expired.
  local popped = {}
  local trusted = done and not bkey
  while #picked < n do
    local name, entry, score, _, g = pop_free(trusted)
    if not name then
      -- Expired members made the set run short: put back what was taken.
      for _, pe in ipairs(popped) do
        redis.call('ZADD', K_FREE, pe[2], pe[1])
      end
      return {0}
    end
    popped[#popped + 1] = {entry, score}
    picked[#picked + 1] = name
    gen = gen or g
  end
end
local out = {1, -1}
for _, name in ipairs(picked) do
  local fence, deadline = grant(name, token, ttl, sess, '-')
  out[2] = deadline
  out[#out + 1] = fence
  out[#out + 1] = name
end
if bkey then
  bind(bkey, picked[1], gen, tonumber(ARGV[7]))
end
return out
