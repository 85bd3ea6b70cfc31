-- wait.lua: one turn of MallocWait: take a resource, find the hand-off a
-- release made to this waiter, or join (or stay in) the wait queue.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: housekeeping budget, ARGV[3]: lease TTL in ms (≤ 0: permanent),
-- ARGV[4]: token, ARGV[5]: session or "-", ARGV[6]: waiter id,
-- ARGV[7]: how long (ms) the entry stays valid unless the next turn renews
-- it, ARGV[8]: the channel of the waiter's process
-- Returns {1, fence, resource, handed} when the waiter holds a lease:
-- handed is 1 for a hand-off (provisional until the waiter renews it, see
-- grant_to), 0 for a lease taken in this turn with the TTL asked for. {0}
-- when it waits, {-1} when the session lapsed (the waiter leaves the queue
-- and any hand-off goes back), {-2} when the waiter has left (leave.lua
-- cancelled its token) and this turn arrived late: nothing happens.
-- A lease taken in this turn is recorded in granted like a hand-off, so that
-- a turn whose reply was lost is found by the next turn or by leave.lua.
local L = lib()
local best_free, holder, grant, session_live, live_head, end_lease, drain, reclaim = L.best_free, L.holder, L.grant, L.session_live, L.live_head, L.end_lease, L.drain, L.reclaim
if redis.call('ZSCORE', K_CANCELLED, ARGV[4]) then
  return {-2} -- the waiter left already: this turn arrived late
end
reclaim(tonumber(ARGV[2]))
drain()
local ttl, token, sess, id = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local live = session_live(sess)
local g = redis.call('HGET', K_GRANTED, id)
if g then
  local fence, _, name = string.match(g, '^(%S+) (%S+) (.*)$')
  local f, t = holder(name)
  if t == token and f == fence then
    if live then
      return {1, tonumber(fence), name, 1}
    end
    end_lease(name)
  else
    redis.call('HDEL', K_GRANTED, id)
  end
end
if not live then
  redis.call('ZREM', K_WAITQ, id)
  redis.call('HDEL', K_WAITD, id)
  return {-1}
end
if not redis.call('ZSCORE', K_WAITQ, id) then
  if not live_head() then
    local name = best_free()
    if name then
      local fence, deadline = grant(name, token, ttl, sess, id)
      redis.call('HSET', K_GRANTED, id, ms(fence) .. ' ' .. ms(deadline) .. ' ' .. name)
      return {1, fence, name, 0}
    end
  end
  redis.call('ZADD', K_WAITQ, redis.call('INCR', K_SEQ), id)
end
redis.call('HSET', K_WAITD, id, ms(NOW + tonumber(ARGV[7])) .. ' ' .. ttl .. ' ' .. token .. ' ' .. sess .. ' ' .. ARGV[8])
return {0}
