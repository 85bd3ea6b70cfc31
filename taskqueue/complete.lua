-- complete.lua: the end of a run, reported by the claim's holder.
-- KEYS[1] T|t|<id>
-- ARGV[2] id, [3] claim token, [4] outcome:
--   "ok"      done, with result [5] (JSON)
--   "fail"    the run failed with error [5]: retried after [6] ms while
--             attempts are left, else dead
--   "dead"    failed with error [5], no retry
--   "failed"  failed with error [5], which its caller already has: terminal,
--             not a dead letter (a local run's failure)
--   "cancel"  stopped because its caller cancelled it
--   "requeue" queued again at the back for another worker, clean
--   "front"   queued again at the front, not counted as an attempt
-- [7] dead letters' life ms, [8] lease ms of a hand-off (see die), [9] the
-- request's nonce: the same request sent again gets the first one's answer
-- (field cq).
-- Reply: {"lost"} when the token no longer holds the claim (nothing
-- changes), else {"done"}, {"retry"}, {"dead"}, {"handed"}, {"failed"},
-- {"cancelled"} or {"queued"}.
local k, id, tk, outcome, val = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local nonce = ARGV[9]
local f = redis.call('HMGET', k, 's', 'tk', 'n', 'tt', 'a', 'm', 'c', 'cq')
if f[1] ~= 'active' or f[2] ~= tk then
  if f[8] and string.sub(f[8], 1, #nonce + 1) == nonce .. ' ' then
    -- This request, sent again: its answer.
    return {string.sub(f[8], #nonce + 2)}
  end
  return {'lost'}
end
local name = f[3]
-- A task its caller cancelled is not run again: a run that did not
-- finish it (requeue, retry) ends it cancelled instead.
if f[7] == '1' and outcome ~= 'ok' and outcome ~= 'dead' and outcome ~= 'failed' then
  outcome = 'cancel'
end
if outcome == 'ok' then
  redis.call('HSET', k, 'cq', nonce .. ' done')
  finish(k, id, name, 'done', val, '', tonumber(f[4]))
  return {'done'}
end
if outcome == 'cancel' then
  redis.call('HSET', k, 'cq', nonce .. ' cancelled')
  finish(k, id, name, 'cancelled', '', 'taskqueue: cancelled', tonumber(f[4]))
  return {'cancelled'}
end
if outcome == 'failed' then
  redis.call('HSET', k, 'cq', nonce .. ' failed')
  finish(k, id, name, 'failed', '', val, tonumber(f[4]))
  return {'failed'}
end
if outcome == 'requeue' or outcome == 'front' then
  redis.call('ZREM', akey(name), id)
  redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '', 'err', '', 'res', '')
  redis.call('HDEL', k, 'pc', 'pt', 'pu')
  ready(id, name, outcome == 'front')
  nudge(k, id)
  redis.call('HSET', k, 'cq', nonce .. ' queued')
  return {'queued'}
end
local failed = tonumber(f[5]) + 1
redis.call('HSET', k, 'a', failed)
if outcome == 'fail' and failed < tonumber(f[6]) then
  redis.call('ZREM', akey(name), id)
  redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '', 'err', val)
  redis.call('ZADD', dkey(name), NOW + tonumber(ARGV[6]), id)
  redis.call('HSET', k, 'cq', nonce .. ' retry')
  return {'retry'}
end
redis.call('HSET', k, 'cq', nonce .. ' dead')
local verdict = die(k, id, name, val, tonumber(ARGV[7]), tonumber(ARGV[8]))
if verdict ~= 'dead' then
  redis.call('HSET', k, 'cq', nonce .. ' ' .. verdict)
end
return {verdict}
