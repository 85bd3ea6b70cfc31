-- pool_assign.lua: replaces the members of a lock pool in one step.
--
-- KEYS[1]  pool set
-- ARGV     the new members (possibly none)
--
-- Returns the number of members afterwards.
redis.call('DEL', KEYS[1])
for i = 1, #ARGV, 5000 do
  redis.call('SADD', KEYS[1], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
return #ARGV == 0 and 0 or redis.call('SCARD', KEYS[1])
