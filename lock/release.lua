-- release.lua (after fence.lua): deletes a key while the token still owns
-- it, or hands it to the first process waiting in its queue.
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter of the lock key (same slot)
-- KEYS[3]  wait queue of the lock key (same slot; see acquire.lua)
-- KEYS[4]  queue entries of the lock key (same slot)
-- ARGV[1]  owner token; "" to only drop the entry ARGV[4]
-- ARGV[2]  grace in milliseconds: the fencing counter outlives a grant's
--          TTL by this much, and a deleted key by this much
-- ARGV[3]  "" or a grant id: release only when the fencing counter records
--          that grant, i.e. the key was taken afresh by that acquisition and
--          granted to nobody since (the clean-up after an attempt whose
--          outcome is unknown)
-- ARGV[4]  "" or an entry id to drop from the queue first (the caller's
--          process has nobody left waiting for the key)
-- ARGV[5]  the caller's own wake channel, "" for none
--
-- Returns 0 when the token does not own the key (or not by that grant),
-- else 1, or, when the key was handed to the caller's own process (whose
-- entry has ARGV[5] as channel), the message below: the caller passes it on
-- itself, and nothing is published.
--
-- A hand-over skips (and drops) entries whose deadline passed: their
-- processes stopped waiting. The first live entry's process gets the key,
-- set to the token "<entry id>:<fence>" with the entry's TTL and a new fence,
-- and, on its channel, the message "<entry id> <fence> <announced µs> <TTL
-- ms>". Its entry goes to the back of the queue, where it stays until its
-- deadline or until its process drops it: the processes waiting for a key
-- take turns, and a process whose callers queue again needs no command.
local token = ARGV[1]
if ARGV[4] ~= '' then
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('HDEL', KEYS[4], ARGV[4])
end
if token == '' or redis.call('GET', KEYS[1]) ~= token then
  return 0
end
if ARGV[3] ~= '' then
  local c = redis.call('GET', KEYS[2])
  if not c or string.match(c, ':(.*)$') ~= ARGV[3] then
    return 0
  end
end
local now
while true do
  local first = redis.call('ZRANGE', KEYS[3], 0, 1)
  local head = first[1]
  if not head then
    break
  end
  local e = redis.call('HGET', KEYS[4], head)
  local deadline, ttl, announced, channel
  if e then
    deadline, ttl, announced, channel = string.match(e, '^(%d+) (%d+) (%d+) (.*)$')
  end
  now = now or now_us()
  if deadline and tonumber(deadline) * 1000 >= now then
    local _, fs = issue_fence(KEYS[2], tonumber(ttl) + tonumber(ARGV[2]), '', now)
    redis.call('SET', KEYS[1], head .. ':' .. fs, 'PX', ttl)
    if first[2] then -- others wait too: to the back
      redis.call('ZADD', KEYS[3], now / 1000, head)
    end
    local msg = head .. ' ' .. fs .. ' ' .. announced .. ' ' .. ttl
    if channel == ARGV[5] then
      return msg
    end
    redis.call('PUBLISH', channel, msg)
    return 1
  end
  redis.call('ZREM', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
end
redis.call('DEL', KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
