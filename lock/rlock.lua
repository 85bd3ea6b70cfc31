-- rlock.lua: reentrant lock. Takes the key when it is free, or refreshes its
-- TTL when it already holds the same value.
--
-- KEYS[1]  lock key
-- ARGV[1]  value
-- ARGV[2]  TTL in milliseconds, as a decimal string; "0" means no expiry
--
-- Returns 1 when the key now holds ARGV[1], 0 when another value holds it.
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
