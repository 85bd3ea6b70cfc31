-- quarantine.lua: quarantine members for a while, or end their quarantine.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: duration in ms; ≤ 0 ends the quarantine (the member returns to
-- the pool unless it is leased)
-- ARGV[3..]: members (other names are ignored)
-- A quarantined member is not allocatable and its soft bindings no longer
-- apply (its generation changes). A leased member keeps its lease and stays
-- out of the pool when it comes back. Returns the number of members
-- changed.
local L = lib()
local get_item, put_item, settle = L.get_item, L.put_item, L.settle
local d = tonumber(ARGV[2])
local n = 0
for i = 3, #ARGV do
  local name = ARGV[i]
  local p, s, g, e, q = get_item(name)
  if p then
    if d > 0 then
      if s ~= '-' then
        redis.call('ZREM', K_FREE, s .. name)
      end
      put_item(name, p, '-', tostring(redis.call('INCR', K_SEQ)), e, NOW + d)
      redis.call('ZADD', K_TIMERS, NOW + d, 'Q' .. name)
      n = n + 1
    elseif q ~= 0 then
      redis.call('ZREM', K_TIMERS, 'Q' .. name)
      put_item(name, p, s, g, e, 0)
      settle(name, false)
      n = n + 1
    end
  end
end
return n
