-- acquire.lua (after fence.lua): one attempt to own a lock key, with a
-- fencing token. A caller that waits for a release to hand it the key
-- (WithReleaseNotify) keeps its process's place in the key's wait queue.
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter of the lock key (same slot)
-- KEYS[3]  grant marker of the lock key (same slot), given with ARGV[4]
-- ARGV[1]  owner token
-- ARGV[2]  TTL in milliseconds, as a decimal string; "0" means no expiry
-- ARGV[3]  life of a fencing counter started by this grant, in milliseconds
-- ARGV[4]  optional: "" or a grant id: when this call takes the key afresh,
--          the grant marker is set to it (for ARGV[3] ms), so that
--          release.lua can give back only this grant; a reentrant grant
--          deletes the marker
-- ARGV[5]  optional: "" or a token the key was handed over with
--          (release.lua) to the caller's process: the caller takes the key
--          from it
-- Only when the caller waits (KEYS[4] and KEYS[5] given):
-- KEYS[4]  wait queue of the lock key: ZSET entry id → arrival in ms
-- KEYS[5]  queue entries: HASH entry id → "<deadline ms> <data>"
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
-- deadline. When the key was handed to the waiting caller's process
-- ("<ARGV[6]>:<fence>"), returns the string "<fence> <pttl + 2>" instead.
--
-- The reply is one integer, not an array: an array reply costs the server
-- more than the whole SET NX.
local token, grant, from = ARGV[1], ARGV[4] or '', ARGV[5] or ''

-- granted issues the fence of a grant and keeps the grant marker; fresh
-- says the call took the key afresh. When no fence can be issued, a key the
-- call just set is deleted and the error returned: a failed call leaves no
-- lock behind.
local function granted(fresh)
  local f, err = issue_fence(KEYS[2], ARGV[3])
  if not f then
    if fresh then
      redis.call('DEL', KEYS[1])
    end
    return err
  end
  if grant ~= '' then
    if fresh then
      redis.call('SET', KEYS[3], grant, 'PX', ARGV[3])
    else
      redis.call('DEL', KEYS[3])
    end
  end
  return f
end

local nx
if ARGV[2] ~= '0' then
  nx = redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[2])
else
  nx = redis.call('SET', KEYS[1], token, 'NX')
end
if nx then
  return granted(true)
end
local cur = redis.call('GET', KEYS[1])
if cur == token then
  if ARGV[2] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  else
    redis.call('PERSIST', KEYS[1])
  end
  return granted(false)
end
if from ~= '' and cur == from then
  if ARGV[2] ~= '0' then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], token)
  end
  return granted(true)
end
if KEYS[4] then
  local now, wait = now_us(), tonumber(ARGV[7])
  -- Scores in ms with a fraction, deadlines in whole ms: both print exactly.
  redis.call('ZADD', KEYS[4], 'NX', now / 1000, ARGV[6])
  redis.call('HSET', KEYS[5], ARGV[6], (math.floor(now / 1000) + wait) .. ' ' .. ARGV[8])
  if redis.call('PTTL', KEYS[4]) < wait then
    redis.call('PEXPIRE', KEYS[4], wait)
    redis.call('PEXPIRE', KEYS[5], wait)
  end
  -- A release handed the key to the caller's process, which may not have
  -- heard of it (a lost message): say so, and the process hands it on.
  local mine = ARGV[6] .. ':'
  if string.sub(cur, 1, #mine) == mine then
    return string.sub(cur, #mine + 1) .. ' ' .. (redis.call('PTTL', KEYS[1]) + 2)
  end
end
return -(redis.call('PTTL', KEYS[1]) + 2)
