-- shrink.lua: remove resources from the pool (all of them with ARGV[2] =
-- "all"). A lease on a removed resource lives on until it ends; the
-- resource does not return to the pool then.
-- KEYS: the pool's keys (pool.lua). ARGV[2]: "all" or "some", ARGV[3..]:
-- resources. Returns the number of members removed (with "all", those
-- that Len counted: not the ones whose membership had expired).
local L = lib()
local expired, remove_member = L.expired, L.remove_member
if ARGV[2] == 'all' then
  local n = 0
  local timers = {}
  local all = redis.call('HGETALL', K_ITEMS)
  for i = 1, #all, 2 do
    local name = all[i]
    local e, q = string.match(all[i + 1], '^%S+ %S+ %S+ (%S+) (%S+)$')
    e, q = tonumber(e), tonumber(q)
    if not expired(e) then
      n = n + 1
    end
    if e ~= 0 then
      timers[#timers + 1] = 'E' .. name
    end
    if q ~= 0 then
      timers[#timers + 1] = 'Q' .. name
    end
    if #timers >= 1000 then
      redis.call('ZREM', K_TIMERS, unpack(timers))
      timers = {}
    end
  end
  if #timers > 0 then
    redis.call('ZREM', K_TIMERS, unpack(timers))
  end
  redis.call('DEL', K_ITEMS, K_FREE)
  return n
end
local n = 0
for i = 3, #ARGV do
  if remove_member(ARGV[i]) then
    n = n + 1
  end
end
return n
