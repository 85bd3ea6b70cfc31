-- leave.lua: a waiter gives up: its entry leaves the queue, and a lease it
-- was given (ARGV[3]: its token) goes to the next waiter or back to the
-- pool.
-- KEYS: the pool's keys (pool.lua). ARGV[2]: waiter id.
-- Returns 1 when a lease was given back, else 0.
local L = lib()
local holder, end_lease = L.holder, L.end_lease
local id, token = ARGV[2], ARGV[3]
cancel(token) -- a turn of this waiter may reach Redis after this
redis.call('ZREM', K_WAITQ, id)
redis.call('HDEL', K_WAITD, id)
local g = redis.call('HGET', K_GRANTED, id)
if not g then
  return 0
end
redis.call('HDEL', K_GRANTED, id)
local fence, _, name = string.match(g, '^(%S+) (%S+) (.*)$')
local f, t = holder(name)
if t == token and f == fence then
  end_lease(name)
  return 1
end
return 0
