-- shrink.lua: remove resources from the pool (all of them with ARGV[2] =
-- "all"). A lease on a removed resource lives on until it ends; the
-- resource does not return to the pool then.
-- KEYS: the pool's keys (pool.lua). ARGV[2]: "all" or "some", ARGV[3..]:
-- resources. Returns the number of members removed (with "all", those
-- that Len counted).
if ARGV[2] == 'all' then
  -- Count the members as Len does: those whose membership has expired
  -- (still recorded while leased) are not counted.
  local n = redis.call('HLEN', K_ITEMS)
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', K_EXP, '-inf', NOW)) do
    if redis.call('HEXISTS', K_ITEMS, name) == 1 then
      n = n - 1
    end
  end
  redis.call('DEL', K_ITEMS, K_FREE, K_EXP, K_QUAR)
  return n
end
local n = 0
for i = 3, #ARGV do
  if remove_member(ARGV[i]) then
    n = n + 1
  end
end
return n
