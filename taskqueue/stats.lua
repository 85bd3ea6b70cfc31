-- stats.lua: the counts of some task names.
-- KEYS[1] T|seq (routing)
-- ARGV[2..] names; none: every name used.
-- Reply: per name {name, pending, delayed, running, dead, listeners}.
local names = {}
for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
if #names == 0 then
  names = redis.call('SMEMBERS', NAMES)
  table.sort(names)
end
local out = {}
for _, name in ipairs(names) do
  out[#out + 1] = {name, redis.call('ZCARD', qkey(name)), redis.call('ZCARD', dkey(name)),
    redis.call('ZCARD', akey(name)), redis.call('ZCARD', xkey(name)),
    redis.call('ZCOUNT', lkey(name), '(' .. NOW, '+inf')}
end
return out
