-- workers.lua: the registry of live workers (see Workers).
-- KEYS[1]: the registry [ZSET] worker id → liveness deadline (ms, server
-- clock)
-- ARGV[1]: the operation:
--   "beat" with ARGV[2]: worker id, ARGV[3]: TTL in ms (≥ 1): the worker is
--          live until now + TTL. Returns 1 when it was live before, 0 when
--          it is new or had lapsed.
--   "live": returns the ids of the live workers.
--   "has" with ARGV[2]: worker id: returns 1 when it is live, else 0.
--   "remove" with ARGV[2]: worker id: returns 1 when it was live, else 0.
-- Time is the server's (TIME), so workers with skewed clocks agree. Lapsed
-- workers are pruned first; the key expires with its last deadline, so an
-- abandoned registry vanishes by itself.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local op = ARGV[1]
if op == 'live' then
  return redis.call('ZRANGE', KEYS[1], 0, -1)
end
local id = ARGV[2]
if op == 'has' then
  if redis.call('ZSCORE', KEYS[1], id) then
    return 1
  end
  return 0
end
-- expire_with_last makes the key expire with its last deadline.
local function expire_with_last()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then
    redis.call('PEXPIREAT', KEYS[1], last[2])
  end
end
if op == 'remove' then
  local n = redis.call('ZREM', KEYS[1], id)
  expire_with_last()
  return n
end
-- beat
local was = redis.call('ZSCORE', KEYS[1], id)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), id)
expire_with_last()
if was then
  return 1
end
return 0
