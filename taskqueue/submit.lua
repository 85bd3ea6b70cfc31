-- submit.lua: create task id, or join it when it exists.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] name, [4] params (JSON), [5] timeout ms, [6] max attempts,
-- [7] id of the Queue value to tell about the task ("" for none),
-- [8] mode: "q" queue it for listeners, "l" run it here (claimed for the
-- owner), "a" queue it when a listener of name is alive, else run it here,
-- [9] owner, [10] lease ms, [11] "1" when the owner falls back to running a
-- queued task itself should its remote runs fail.
-- Reply: {"join", state} when the task is pending or active (the caller is
-- told about it too), {"done", record} when it is terminal, {"q"} when it
-- was queued, {"l", token, expiry ms, created ms} when it was claimed for the owner.
local k = KEYS[1]
local id, name, params = ARGV[2], ARGV[3], ARGV[4]
local timeout, maxatt, qid, mode = tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local owner, lease, fallback = ARGV[9], tonumber(ARGV[10]), ARGV[11]

local st = redis.call('HGET', k, 's')
if st then
  if TERMINAL[st] then
    return {'done', record(k)}
  end
  if qid ~= '' then
    local r = redis.call('HGET', k, 'r') or ''
    if not string.find(' ' .. r .. ' ', ' ' .. qid .. ' ', 1, true) then
      redis.call('HSET', k, 'r', r == '' and qid or (r .. ' ' .. qid))
    end
  end
  return {'join', st}
end

if mode == 'a' then
  if redis.call('ZCOUNT', lkey(name), '(' .. NOW, '+inf') > 0 then
    mode = 'q'
  else
    mode = 'l'
  end
end

redis.call('HSET', k, 'n', name, 'p', params, 'x', NOW + timeout, 'tt', timeout,
  'm', maxatt, 'a', 0, 'l', 0, 'dl', 0, 'r', qid, 'ct', NOW, 's', 'pending')
-- The record outlives its expiry, so that a late listener finds it and
-- skips it with a log line; finishing sets the result's own life.
redis.call('PEXPIRE', k, 2 * timeout + 60000)
redis.call('SADD', NAMES, name)
if mode == 'l' then
  return {'l', claim_for(k, id, name, owner, lease), tostring(NOW + timeout), tostring(NOW)}
end
if fallback == '1' then
  -- The caller runs the task itself if its remote runs fail (see die).
  redis.call('HSET', k, 'fb', owner)
end
ready(id, name, false)
return {'q'}
