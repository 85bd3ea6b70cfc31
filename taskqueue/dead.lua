-- dead.lua: the oldest dead letters of a name.
-- KEYS[1] T|x|<name>
-- ARGV[2] name, [3] dead letters' life ms, [4] count.
-- Reply: {id, record, ...} of up to count dead letters, oldest first.
local name, deadlife, count = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', xkey(name), '-inf', NOW - deadlife)
local out, found, from = {}, 0, 0
while found < count do
  local ids = redis.call('ZRANGE', xkey(name), from, from + count - found - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local k = tkey(id)
    if redis.call('HGET', k, 's') == 'dead' then
      out[#out + 1] = id
      out[#out + 1] = record(k)
      found = found + 1
      from = from + 1
    else
      -- Its record is gone or it left the dead letters: drop the entry.
      redis.call('ZREM', xkey(name), id)
    end
  end
end
return out
