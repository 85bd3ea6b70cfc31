-- wait.lua: one turn of MallocWait: take a resource, find the hand-off a
-- release made to this waiter, or join (or stay in) the wait queue.
-- KEYS: the pool's keys (pool.lua).
-- ARGV[2]: housekeeping budget, ARGV[3]: lease TTL in ms (≤ 0: permanent),
-- ARGV[4]: token, ARGV[5]: session or "-", ARGV[6]: waiter id,
-- ARGV[7]: how long (ms) the entry stays valid unless the next turn renews
-- it, ARGV[8]: the channel of the waiter's process
-- Returns {1, ms left (-1: permanent), fence, resource} when the waiter
-- holds a lease (a hand-off to a waiter that asked for a permanent lease is
-- provisional, see grant_to), {0} when it waits, {-1} when the session
-- lapsed (the waiter leaves the queue then).
reclaim(tonumber(ARGV[2]))
drain()
local ttl, token, sess, id = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local g = redis.call('HGET', K_GRANTED, id)
if g then
  redis.call('HDEL', K_GRANTED, id)
  local fence, deadline, name = string.match(g, '^(%S+) (%S+) (.*)$')
  local f, t = holder(name)
  if t == token and f == fence then
    return {1, tonumber(deadline) - NOW, tonumber(fence), name}
  end
end
if not session_live(sess) then
  redis.call('ZREM', K_WAITQ, id)
  redis.call('HDEL', K_WAITD, id)
  return {-1}
end
if not redis.call('ZSCORE', K_WAITQ, id) then
  if not live_head() then
    local name, p, s, gen = best_free()
    if name then
      pull_free(name, p, s, gen)
      local fence = grant(name, token, ttl, sess, '-')
      if ttl <= 0 then
        ttl = -1
      end
      return {1, ttl, fence, name}
    end
  end
  redis.call('ZADD', K_WAITQ, next_seq(), id)
end
redis.call('HSET', K_WAITD, id, string.format('%.0f', NOW + tonumber(ARGV[7])) .. ' ' .. ttl .. ' ' .. token .. ' ' .. sess .. ' ' .. ARGV[8])
return {0}
