-- members.lua: read the pool.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: "keys" returns the members whose membership has not expired;
-- "len" their number; "has" with ARGV[3] 1 or 0.
local what = ARGV[2]
if what == 'has' then
  if get_item(ARGV[3]) and not expired(ARGV[3]) then
    return 1
  end
  return 0
end
local gone = {}
local dead = redis.call('ZRANGEBYSCORE', K_EXP, '-inf', NOW)
if what == 'len' then
  local n = redis.call('HLEN', K_ITEMS)
  for _, name in ipairs(dead) do
    if redis.call('HEXISTS', K_ITEMS, name) == 1 then
      n = n - 1
    end
  end
  return n
end
for _, name in ipairs(dead) do
  gone[name] = true
end
local out = {}
for _, name in ipairs(redis.call('HKEYS', K_ITEMS)) do
  if not gone[name] then
    out[#out + 1] = name
  end
end
return out
