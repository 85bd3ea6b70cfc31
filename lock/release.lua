-- release.lua (after fence.lua): deletes a key while the token still owns
-- it, or hands it to the first process waiting in its queue.
--
-- KEYS[1]  lock key
-- KEYS[2]  wait queue of the lock key (same slot; see acquire.lua)
-- KEYS[3]  queue entries of the lock key (same slot)
-- KEYS[4]  fencing counter of the lock key (same slot)
-- KEYS[5]  grant marker of the lock key (same slot; see acquire.lua), given
--          with ARGV[5]; a stale marker does no harm, as it only counts with
--          the token that set it, so a release leaves it to expire
-- ARGV[1]  owner token; "" to only drop the entry ARGV[4]
-- ARGV[2]  grace in milliseconds: a fencing counter started by a hand-over
--          lives the handed-over TTL plus this
-- ARGV[3]  optional: the caller's own wake channel, "" for none
-- ARGV[4]  optional: "" or "<entry id> <stamp>": drop that entry from the
--          queue first if its announce time is at most stamp (the caller's
--          process has nobody left waiting for the key, and has not
--          written the entry since it decided so)
-- ARGV[5]  optional: "" or a grant id: release only when the grant marker
--          holds it, i.e. the key was taken afresh by that acquisition and
--          granted to nobody since (the clean-up after an attempt whose
--          outcome is unknown)
--
-- Returns 0 when the token does not own the key (or not by that grant),
-- else 1, or, when the key was handed to the caller's own process (whose
-- entry has ARGV[3] as channel), the message below: the caller passes it on
-- itself, and nothing is published.
--
-- A hand-over skips (and drops) entries whose deadline passed: their
-- processes stopped waiting. The first live entry's process gets the key,
-- set to the token "<entry id>:<fence>" with the entry's TTL and a new fence,
-- and, on its channel, the message "<entry id> <fence> <announced µs> <TTL
-- ms>". Its entry goes to the back of the queue, where it stays until its
-- deadline or until its process drops it: the processes waiting for a key
-- take turns, and a process whose callers queue again needs no command.
local token, own, drop, grant = ARGV[1], ARGV[3] or '', ARGV[4] or '', ARGV[5] or ''
if drop ~= '' then
  local id, stamp = string.match(drop, '^(%S+) (%d+)$')
  local e = id and redis.call('HGET', KEYS[3], id)
  local at = e and string.match(e, '^%d+ %d+ (%d+) ')
  if at and tonumber(at) <= tonumber(stamp) then
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
if token == '' or redis.call('GET', KEYS[1]) ~= token then
  return 0
end
if grant ~= '' and redis.call('GET', KEYS[5]) ~= grant then
  return 0
end
local now
-- EXISTS first: an integer reply costs Lua less than an empty array, and a
-- release nobody waits for is the common case.
while redis.call('EXISTS', KEYS[2]) == 1 do
  local first = redis.call('ZRANGE', KEYS[2], 0, 1)
  local head = first[1]
  if not head then
    break
  end
  local e = redis.call('HGET', KEYS[3], head)
  local deadline, ttl, announced, channel
  if e then
    deadline, ttl, announced, channel = string.match(e, '^(%d+) (%d+) (%d+) (.*)$')
  end
  now = now or now_us()
  if deadline and tonumber(deadline) * 1000 >= now then
    local f, err = issue_fence(KEYS[4], tonumber(ttl) + tonumber(ARGV[2]))
    if not f then
      return err
    end
    local fs = string.format('%.0f', f)
    redis.call('SET', KEYS[1], head .. ':' .. fs, 'PX', ttl)
    if first[2] then -- others wait too: to the back
      redis.call('ZADD', KEYS[2], now / 1000, head)
    end
    local msg = head .. ' ' .. fs .. ' ' .. announced .. ' ' .. ttl
    if channel == own then
      return msg
    end
    redis.call('PUBLISH', channel, msg)
    return 1
  end
  redis.call('ZREM', KEYS[2], head)
  redis.call('HDEL', KEYS[3], head)
end
redis.call('DEL', KEYS[1])
return 1
