-- stats.lua: the counts of some task names.
-- KEYS[1] T|seq (routing)
-- ARGV[2] dead letters' life ms, [3..] names; none: every name used.
-- Reply: per name {name, pending, delayed, running, dead, listeners}.
local names = {}
local deadlife = tonumber(ARGV[2])
for i = 3, #ARGV do names[#names + 1] = ARGV[i] end
if #names == 0 then
  names = redis.call('SMEMBERS', NAMES)
  table.sort(names)
end
local out = {}
for _, name in ipairs(names) do
  redis.call('ZREMRANGEBYSCORE', xkey(name), '-inf', NOW - deadlife)
  out[#out + 1] = {name, redis.call('ZCARD', qkey(name)), redis.call('ZCARD', dkey(name)),
    redis.call('ZCARD', akey(name)), redis.call('ZCARD', xkey(name)),
    redis.call('ZCOUNT', lkey(name), '(' .. NOW, '+inf')}
end
return out
