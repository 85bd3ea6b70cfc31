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
-- [7] dead letters' life ms, [8] lease ms of a hand-off (see die).
-- Reply: {"lost"} when the token no longer holds the claim (nothing
-- changes), else {"done"}, {"retry"}, {"dead"}, {"handed"}, {"failed"},
-- {"cancelled"} or {"queued"}.
local k, id, tk, outcome, val = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local f = redis.call('HMGET', k, 's', 'tk', 'n', 'tt', 'a', 'm', 'c')
if f[1] ~= 'active' or f[2] ~= tk then
  return {'lost'}
end
local name = f[3]
-- A task its caller cancelled is not run again: a run that did not
-- finish it (requeue, retry) ends it cancelled instead.
if f[7] == '1' and outcome ~= 'ok' and outcome ~= 'dead' and outcome ~= 'failed' then
  outcome = 'cancel'
end
if outcome == 'ok' then
  finish(k, id, name, 'done', val, '', tonumber(f[4]))
  return {'done'}
end
if outcome == 'cancel' then
  finish(k, id, name, 'cancelled', '', 'taskqueue: cancelled', tonumber(f[4]))
  return {'cancelled'}
end
if outcome == 'failed' then
  finish(k, id, name, 'failed', '', val, tonumber(f[4]))
  return {'failed'}
end
if outcome == 'requeue' or outcome == 'front' then
  redis.call('ZREM', akey(name), id)
  redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '', 'err', '', 'res', '')
  redis.call('HDEL', k, 'pc', 'pt', 'pu')
  ready(id, name, outcome == 'front')
  nudge(k, id)
  return {'queued'}
end
local failed = tonumber(f[5]) + 1
redis.call('HSET', k, 'a', failed)
if outcome == 'fail' and failed < tonumber(f[6]) then
  redis.call('ZREM', akey(name), id)
  redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '', 'err', val)
  redis.call('ZADD', dkey(name), NOW + tonumber(ARGV[6]), id)
  return {'retry'}
end
return {die(k, id, name, val, tonumber(ARGV[7]), tonumber(ARGV[8]))}
