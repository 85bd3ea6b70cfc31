-- look.lua: read a task for a caller waiting for it.
-- KEYS[1] T|t|<id>
-- ARGV[2] id of the caller's Queue value, to tell about the task ("" for
-- none), [3] "1" to consume a terminal task (once), [4] the task's id,
-- [5] the request's nonce, [6] the incarnation the caller waits for (field
-- rq; "" for any).
-- A consumed task's record moves to T|g|<incarnation>|<id> for a minute,
-- where only the
-- read that consumed it (sent again) and the callers that waited for that
-- incarnation then (their Queue value told about it, the incarnation
-- given) find it; for everyone else the task is gone.
-- Reply: {"none"} when there is no such task, {"done", record} when it is
-- terminal, else {"wait", record} (the caller is now told about it).
local k, qid, once, id, nonce, inc = KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

local function consumed()
  if inc == '' then
    return {'none'}
  end
  local g = gkey(id, inc)
  local f = redis.call('HMGET', g, 'gn', 'r', 'rq')
  if f[1] and (f[1] == nonce or qid ~= '' and waiting(f[2], qid)) then
    return {'done', record(g)}
  end
  return {'none'}
end

local f = redis.call('HMGET', k, 's', 'rq', 'n')
local st = f[1]
if not st or inc ~= '' and f[2] ~= inc then
  -- Gone, or another incarnation than the one waited for.
  return consumed()
end
if TERMINAL[st] then
  local rec = record(k)
  if once == '1' then
    withdraw(id, f[3])
    local g = gkey(id, f[2] or '')
    redis.call('HSET', k, 'gn', nonce)
    redis.call('RENAME', k, g)
    redis.call('PEXPIRE', g, 60000)
  end
  return {'done', rec}
end
register(k, qid)
return {'wait', record(k)}
