-- malloc_shared.lua: pick a resource in shared mode, rotating through the
-- pool: the pick moves behind the members of its priority. No lease.
-- KEYS: the pool's keys (pool.lua), then KEYS[14]: the binding key or none.
-- ARGV[2]: housekeeping budget (see reclaim)
-- ARGV[3]: binding TTL in ms (≤ 0: permanent), when KEYS[14] is given
-- Returns the resource, or false when the pool has none to offer.
reclaim(tonumber(ARGV[2]))
local name, p, s, g
local bkey = KEYS[14]
if bkey then
  local b = redis.call('GET', bkey)
  if b then
    name, p, s, g = bound(b, true)
  end
end
if not name then
  name, p, s, g = best_free()
  if not name then
    return false
  end
end
pull_free(name, p, s, g)
push_free(name, p, g)
if bkey then
  bind(bkey, name, g, tonumber(ARGV[3]))
end
return name
