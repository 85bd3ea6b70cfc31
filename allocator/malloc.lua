-- malloc.lua: lease n free resources (exclusive mode), all or none.
-- KEYS: the pool's keys (pool.lua), then KEYS[12]: the binding key or none.
-- ARGV[2]: housekeeping budget (see reclaim)
-- ARGV[3]: lease TTL in ms (≤ 0: permanent)
-- ARGV[4]: token of the new leases
-- ARGV[5]: session id, or "-"
-- ARGV[6]: n, the number of resources (≥ 1)
-- ARGV[7]: binding TTL in ms (≤ 0: permanent), when KEYS[12] is given
-- Returns {1, deadline ms or -1, fence1, name1, ..., fencen, namen}, {0}
-- when fewer than n resources are free, {-1} when the session has lapsed.
-- A binding (n = 1 only) is honoured when its member is free and valid;
-- otherwise the best free member is taken and the name re-bound. Waiters
-- need no look: a member becomes free only when none waits (give_back).
reclaim(tonumber(ARGV[2]))
local ttl, token, sess, n = tonumber(ARGV[3]), ARGV[4], ARGV[5], tonumber(ARGV[6])
if not session_live(sess) then
  return {-1}
end
local picked = {}
local bkey = KEYS[12]
if bkey then
  local b = redis.call('GET', bkey)
  if b then
    local name, p, s, g, e, q = bound(b, true)
    if name then
      pull_free(name, p, s, g, e, q)
      picked[1] = {name, p, g, e, q}
    end
  end
end
if #picked == 0 then
  if n > 1 and redis.call('ZCARD', K_FREE) < n then
    return {0}
  end
  -- best_free skips expired members, so the set may run short after all.
  while #picked < n do
    local name, p, s, g, e, q = best_free()
    if not name then
      for _, m in ipairs(picked) do
        push_free(m[1], m[2], m[3], m[4], m[5])
      end
      return {0}
    end
    pull_free(name, p, s, g, e, q)
    picked[#picked + 1] = {name, p, g, e, q}
  end
end
local out = {1, -1}
for _, m in ipairs(picked) do
  local fence, deadline = grant(m[1], token, ttl, sess, '-')
  out[2] = deadline
  out[#out + 1] = fence
  out[#out + 1] = m[1]
end
if bkey then
  bind(bkey, picked[1][1], picked[1][3], tonumber(ARGV[7]))
end
return out
