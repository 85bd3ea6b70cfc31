-- cond.lua: conditional set or delete of a numeric key, the seed's
-- setgt/setlt/.../delne family in one script. The operator arrives as data.
--
-- KEYS[1]  lock key
-- ARGV[1]  operator: gt, lt, ge, le, eq or ne
-- ARGV[2]  number to compare with the stored number ("given OP stored")
-- ARGV[3]  epsilon for ge, le, eq and ne
-- ARGV[4]  "del" to delete, "set" to set
-- ARGV[5]  value to store when setting (a number, stored as sent)
-- ARGV[6]  TTL in milliseconds when setting, as a decimal string; "0" means no expiry
--
-- A missing key counts as "condition holds".
-- Returns 1 when the key was set or deleted, 0 when the condition failed,
-- -1 (and changes nothing) when the stored value is not a decimal number
-- (hexadecimal, inf and nan are refused, as the in-memory twin does).
local raw = redis.call('GET', KEYS[1])
if raw then
  -- A decimal number only: Lua would also read hexadecimal, inf and nan.
  local cur = tonumber(raw)
  if cur == nil or cur ~= cur or cur == math.huge or cur == -math.huge or string.find(raw, '[xX]') then
    return -1
  end
  local op, given, eps = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  local holds
  if op == 'gt' then
    holds = given > cur
  elseif op == 'lt' then
    holds = given < cur
  elseif op == 'ge' then
    holds = given >= cur - eps
  elseif op == 'le' then
    holds = given <= cur + eps
  elseif op == 'eq' then
    holds = math.abs(given - cur) < eps
  elseif op == 'ne' then
    holds = math.abs(given - cur) > eps
  else
    return redis.error_reply('cond.lua: unknown operator')
  end
  if not holds then
    return 0
  end
end
if ARGV[4] == 'del' then
  redis.call('DEL', KEYS[1])
  return 1
end
if ARGV[6] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[6])
else
  redis.call('SET', KEYS[1], ARGV[5])
end
return 1
