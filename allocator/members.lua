-- members.lua: read the pool.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: "keys" returns the members whose membership has not expired;
-- "len" their number; "has" with ARGV[3] 1 or 0.
local L = lib()
local get_item, expired = L.get_item, L.expired
local what = ARGV[2]
if what == 'has' then
  local p, _, _, e = get_item(ARGV[3])
  if p and not expired(e) then
    return 1
  end
  return 0
end
-- Expired members not yet removed have a due "E" timer, or one at 0 while
-- they are leased.
local gone = {}
local n = 0
for _, t in ipairs(redis.call('ZRANGEBYSCORE', K_TIMERS, 0, NOW)) do
  if string.sub(t, 1, 1) == 'E' then
    gone[string.sub(t, 2)] = true
    n = n + 1
  end
end
if what == 'len' then
  return redis.call('HLEN', K_ITEMS) - n
end
local out = {}
for _, name in ipairs(redis.call('HKEYS', K_ITEMS)) do
  if not gone[name] then
    out[#out + 1] = name
  end
end
return out
