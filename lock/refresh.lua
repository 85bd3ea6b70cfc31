-- refresh.lua: resets the TTL of a key while the token still owns it.
--
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  TTL in milliseconds, as a decimal string; "0" removes the expiry
--
-- Returns 1 when refreshed, 0 when the token no longer owns the key.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
