-- acquire.lua (after fence.lua): one attempt to own a lock key, with a
-- fencing token. A caller that waits for a release to hand it the key
-- (WithReleaseNotify) keeps its process's place in the key's wait queue.
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter of the lock key (same slot)
-- ARGV[1]  owner token
-- ARGV[2]  TTL in milliseconds, as a decimal string; "0" means no expiry
-- ARGV[3]  life of the fencing counter after this grant, in milliseconds
-- ARGV[4]  grant id recorded with the fence of a grant this call takes
--          afresh, "" for none (release.lua can then give back only it)
-- ARGV[5]  "" or a token the key was handed over with (release.lua) to
--          the caller's process: the caller takes the key from it
-- Only when the caller waits (KEYS[3] and KEYS[4] given):
-- KEYS[3]  wait queue of the lock key: ZSET entry id → arrival in ms
-- KEYS[4]  queue entries: HASH entry id → "<deadline ms> <data>"
-- ARGV[6]  the entry id of the caller's process for this key
-- ARGV[7]  milliseconds from now the entry lasts at least
-- ARGV[8]  the entry's data: "<grant TTL ms> <announced µs> <wake channel>"
--
-- Returns the fence (see issue_fence) when the token now owns the key. When
-- the token already owned it (or the key held ARGV[5]), the key is set to
-- the token with the new TTL and a new fence issued. When another token
-- owns the key, returns -(pttl + 2): -1 for a holder without expiry, else
-- ≤ -2 with pttl = -reply - 2 milliseconds left; a waiting caller's entry
-- is then in the queue (at its old place, if it had one) with the new
-- deadline.
--
-- The reply is one integer, not an array: an array reply costs the server
-- more than the whole SET NX.
local token = ARGV[1]
local nx
if ARGV[2] ~= '0' then
  nx = redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2])
else
  nx = redis.call('SET', KEYS[1], token, 'NX')
end
if nx then
  return (issue_fence(KEYS[2], ARGV[3], ARGV[4], now_us()))
end
local cur = redis.call('GET', KEYS[1])
if cur == token then
  if ARGV[2] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else
    redis.call('PERSIST', KEYS[1])
  end
  return (issue_fence(KEYS[2], ARGV[3], '', now_us())) -- not a fresh grant
end
if ARGV[5] ~= '' and cur == ARGV[5] then
  if ARGV[2] ~= '0' then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], token)
  end
  return (issue_fence(KEYS[2], ARGV[3], ARGV[4], now_us()))
end
if KEYS[3] then
  local now, wait = now_us(), tonumber(ARGV[7])
  -- Scores in ms with a fraction, deadlines in whole ms: both print exactly.
  redis.call('ZADD', KEYS[3], 'NX', now / 1000, ARGV[6])
  redis.call('HSET', KEYS[4], ARGV[6], (math.floor(now / 1000) + wait) .. ' ' .. ARGV[8])
  if redis.call('PTTL', KEYS[3]) < wait then
    redis.call('PEXPIRE', KEYS[3], wait)
    redis.call('PEXPIRE', KEYS[4], wait)
  end
end
return -(redis.call('PTTL', KEYS[1]) + 2)
