-- submit.lua: create task id, or join it when it exists.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] name, [4] params (JSON), [5] timeout ms, [6] max attempts,
-- [7] id of the Queue value to tell about the task ("" for none),
-- [8] mode: "q" queue it for listeners, "l" run it here (claimed for the
-- owner), "a" queue it when a listener of name is alive, else run it here,
-- [9] owner, [10] lease ms, [11] "1" when the owner falls back to running a
-- queued task itself should its remote runs fail, [12] the request's nonce,
-- which names the task's incarnation (field rq) when it creates it,
-- [13] max lost claims and [14] dead letters' life ms (see lapsed).
-- Reply: {"join", state, incarnation} when the task is pending or active
-- (the caller is told about it too), {"done", record} when it is done,
-- failed or dead (a cancelled or expired task is replaced by a new one),
-- {"q"} when it was queued, {"l", token, expiry ms, created ms} when it was
-- claimed for the owner, {"lj", record} when it joined a task whose claim
-- had lapsed and claimed it for the owner to run. The same request sent again gets the first
-- one's answer.
local k = KEYS[1]
local id, name, params = ARGV[2], ARGV[3], ARGV[4]
local timeout, maxatt, qid, mode = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local owner, lease, fallback, nonce = ARGV[9], tonumber(ARGV[10]), ARGV[11], ARGV[12]
local maxlost, deadlife = tonumber(ARGV[13]), tonumber(ARGV[14])

local function alive(n)
  return redis.call('ZCOUNT', lkey(n), '(' .. NOW, '+inf') > 0
end

local st = redis.call('HGET', k, 's')
if st then
  local f = redis.call('HMGET', k, 'rq', 'o', 'cn', 'tk', 'x', 'ct', 'n')
  if st == 'active' and f[2] == owner and f[3] == nonce then
    -- This request, sent again, had claimed it for the owner; the lease
    -- counts from now, as for a new claim.
    redis.call('ZADD', akey(f[7]), NOW + lease, id)
    if f[1] == nonce then
      return {'l', f[4], f[5], f[6]}
    end
    return {'lj', record(k)}
  end
  if f[1] == nonce then
    -- This request, sent again.
    if TERMINAL[st] then
      return {'done', record(k)}
    end
    return {'q'}
  end
  if st == 'active' then
    local deadline = tonumber(redis.call('ZSCORE', akey(f[7]), id))
    if not deadline or deadline <= NOW then
      -- Its claim lapsed (its worker died) and no listener reclaimed it
      -- yet: it is reclaimed here, as a listener would.
      if tonumber(f[5]) <= NOW then
        redis.call('ZREM', akey(f[7]), id)
        st = 'expired'
      elseif lapsed(k, id, f[7], maxlost, deadlife, lease) then
        st = redis.call('HGET', k, 's')
      else
        if mode == 'l' or mode == 'a' and not alive(f[7]) then
          -- A caller that runs tasks here runs it (its own name and
          -- params), as a joiner.
          register(k, qid)
          claim_for(k, id, f[7], owner, lease, nonce)
          return {'lj', record(k)}
        end
        redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '')
        ready(id, f[7], true)
        nudge(k, id)
        st = 'pending'
      end
    end
  end
  if st == 'cancelled' or st == 'expired' then
    -- Not a result: a new task replaces it.
    redis.call('DEL', k)
    st = nil
  elseif TERMINAL[st] then
    return {'done', record(k)}
  else
    register(k, qid)
    return {'join', st, f[1] or ''}
  end
end

if mode == 'a' then
  mode = alive(name) and 'q' or 'l'
end

redis.call('HSET', k, 'n', name, 'p', params, 'x', NOW + timeout, 'tt', timeout,
  'm', maxatt, 'a', 0, 'l', 0, 'dl', 0, 'r', qid, 'ct', NOW, 's', 'pending', 'rq', nonce)
-- The record outlives its expiry, so that a late listener finds it and
-- skips it with a log line; finishing sets the result's own life.
redis.call('PEXPIRE', k, 2 * timeout + 60000)
redis.call('SADD', NAMES, name)
if mode == 'l' then
  return {'l', claim_for(k, id, name, owner, lease, nonce), tostring(NOW + timeout), tostring(NOW)}
end
if fallback == '1' then
  -- The caller runs the task itself if its remote runs fail (see die).
  redis.call('HSET', k, 'fb', owner)
end
ready(id, name, false)
return {'q'}
