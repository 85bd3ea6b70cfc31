-- free_token.lua: give back the permanent leases of a token, after a malloc
-- whose reply was lost (the caller never learnt which resources it got),
-- and cancel the token, in case the malloc reaches Redis only later.
-- KEYS: the pool's keys (pool.lua). ARGV[2]: the token.
-- Returns the number of leases ended.
local L = lib()
local holder, end_lease = L.holder, L.end_lease
local token = ARGV[2]
cancel(token) -- the malloc may reach Redis after this
local n = 0
for _, e in ipairs(redis.call('ZRANGEBYLEX', K_PERM, '[' .. token .. '|', '(' .. token .. '}')) do
  local name = string.sub(e, #token + 2)
  local f, t = holder(name)
  if t == token then
    end_lease(name)
    n = n + 1
  else
    redis.call('ZREM', K_PERM, e) -- stale: repair
  end
end
return n
