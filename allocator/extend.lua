-- extend.lua: add resources to the pool, or replace the pool's members.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: membership TTL in ms (≤ 0: no expiry)
-- ARGV[3]: priority of new members
-- ARGV[4]: "assign" to remove the members not listed, else "extend"
-- ARGV[5..]: resources
-- An existing member only has its membership expiry refreshed. A new
-- member starts clean (no quarantine, a new generation, so old bindings to
-- the name do not apply); when it is still leased (it was removed while
-- leased), it comes back as leased and returns to the pool when the lease
-- ends. Returns {added, removed}.
local L = lib()
local get_item, put_item, remove_member, give_back = L.get_item, L.put_item, L.remove_member, L.give_back
local ttl, prio = tonumber(ARGV[2]), ARGV[3]
local added, removed = 0, 0
if ARGV[4] == 'assign' then
  local keep = {}
  for i = 5, #ARGV do
    keep[ARGV[i]] = true
  end
  for _, name in ipairs(redis.call('HKEYS', K_ITEMS)) do
    if not keep[name] then
      remove_member(name)
      removed = removed + 1
    end
  end
end
local exp = 0
if ttl > 0 then
  exp = NOW + ttl
end
for i = 5, #ARGV do
  local name = ARGV[i]
  local p, s, g, e, q = get_item(name)
  if p then
    if e ~= exp then
      put_item(name, p, s, g, exp, q)
    end
  else
    g = tostring(redis.call('INCR', K_SEQ))
    put_item(name, prio, '-', g, exp, 0)
    if redis.call('HEXISTS', K_HOLDERS, name) == 0 then
      give_back(name, prio, g, exp, 0)
    end
    added = added + 1
  end
  if exp > 0 then
    redis.call('ZADD', K_TIMERS, exp, 'E' .. name)
  elseif p and e ~= 0 then
    redis.call('ZREM', K_TIMERS, 'E' .. name)
  end
end
return {added, removed}
