-- release.lua: deletes a key while the token still owns it and, when a
-- client waits for it, wakes the waiters.
--
-- KEYS[1]  lock key
-- KEYS[2]  waiters key of the lock key (same slot; see acquire.lua)
-- ARGV[1]  owner token
-- ARGV[2]  release channel
--
-- Returns 1 when released, 0 when the token no longer owns the key.
-- The waiters key is deleted with the lock key: waiters that find the key
-- taken again set it anew. Without waiters nothing is published, so a
-- release costs one GET and one DEL.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('DEL', KEYS[1], KEYS[2]) == 2 then
  redis.call('PUBLISH', ARGV[2], '1')
end
return 1
