-- free_keys.lua: end the leases on the given resources, whoever holds them
-- (the operators' forced path).
-- KEYS: the pool's keys (pool.lua). ARGV[2..]: resources.
-- Returns the number of leases ended.
local L = lib()
local end_lease = L.end_lease
local n = 0
for i = 2, #ARGV do
  if end_lease(ARGV[i]) then
    n = n + 1
  end
end
return n
