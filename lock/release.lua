-- release.lua: deletes a key while the token still owns it and wakes the
-- clients waiting for it.
--
-- KEYS[1]  lock key
-- ARGV[1]  owner token
-- ARGV[2]  release channel
--
-- Returns 1 when released, 0 when the token no longer owns the key.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
