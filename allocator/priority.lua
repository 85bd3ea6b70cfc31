-- priority.lua: change the priority of members.
-- KEYS: the pool's keys (pool.lua). ARGV[2]: priority, ARGV[3..]: members.
-- A free member keeps its place among the members returned before and
-- after it. Returns the number of members changed.
local L = lib()
local get_item, put_item = L.get_item, L.put_item
local prio = ARGV[2]
local n = 0
for i = 3, #ARGV do
  local name = ARGV[i]
  local p, s, g, e, q = get_item(name)
  if p then
    put_item(name, prio, s, g, e, q)
    if s ~= '-' then
      -- XX: only while the entry is there (the member is free).
      redis.call('ZADD', K_FREE, 'XX', -tonumber(prio), s .. name)
    end
    n = n + 1
  end
end
return n
