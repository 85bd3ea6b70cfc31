-- acquire.lua: owner-safe acquisition with a fencing token.
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter of the lock key (same slot)
-- ARGV[1]  owner token
-- ARGV[2]  TTL in milliseconds; 0 means no expiry
--
-- Returns {1, fence} when the token now owns the key; fence is the counter
-- after INCR, larger than every fence handed out before for this key. When
-- the token already owned the key, its TTL is reset and a new fence issued.
-- Returns {0, pttl} when another token owns the key; pttl is the remaining
-- TTL in milliseconds, or -1 for a lock without expiry.
local ttl = tonumber(ARGV[2])
local ok
if ttl > 0 then
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl)
else
  ok = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if not ok then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return {0, redis.call('PTTL', KEYS[1])}
  end
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  else
    redis.call('PERSIST', KEYS[1])
  end
end
return {1, redis.call('INCR', KEYS[2])}
