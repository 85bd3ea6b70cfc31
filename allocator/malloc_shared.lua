-- malloc_shared.lua: pick a resource in shared mode, rotating through the
-- pool: the pick moves behind the members of its priority. No lease.
-- KEYS: the pool's keys (pool.lua), then KEYS[13]: the binding key or none.
-- ARGV[2]: housekeeping budget (see reclaim)
-- ARGV[3]: binding TTL in ms (≤ 0: permanent), when KEYS[13] is given
-- Returns the resource, or false when the pool has none to offer.
local L = lib()
local push_free, pop_free, reclaim, bound, bind = L.push_free, L.pop_free, L.reclaim, L.bound, L.bind
reclaim(tonumber(ARGV[2]))
local name, p, s, g, e, q, _
local bkey = KEYS[13]
if bkey then
  local b = redis.pcall('GET', bkey)
  if type(b) == 'string' then -- not false (none) nor an error (another type)
    name, p, s, g, e, q = bound(b, true)
  end
end
if name then
  redis.call('ZREM', K_FREE, s .. name)
else
  name, _, _, p, g, e, q = pop_free(false)
  if not name then
    return false
  end
end
push_free(name, p, g, e, q)
if bkey then
  bind(bkey, name, g, tonumber(ARGV[3]))
end
return name
