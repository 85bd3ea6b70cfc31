-- look.lua: read a task for a caller waiting for it.
-- KEYS[1] T|t|<id>
-- ARGV[2] id of the caller's Queue value, to tell about the task ("" for
-- none), [3] "1" to delete a terminal task after reading it (once), [4]
-- the task's id.
-- Reply: {"none"} when there is no such task, {"done", record} when it is
-- terminal, else {"wait", record} (the caller is now told about it).
local k, qid = KEYS[1], ARGV[2]
local st = redis.call('HGET', k, 's')
if not st then
  return {'none'}
end
if TERMINAL[st] then
  local rec = record(k)
  if ARGV[3] == '1' then
    local name = redis.call('HGET', k, 'n')
    if name then
      withdraw(ARGV[4], name)
    end
    redis.call('DEL', k)
  end
  return {'done', rec}
end
if qid ~= '' then
  local r = redis.call('HGET', k, 'r') or ''
  if not string.find(' ' .. r .. ' ', ' ' .. qid .. ' ', 1, true) then
    redis.call('HSET', k, 'r', r == '' and qid or (r .. ' ' .. qid))
  end
end
return {'wait', record(k)}
