-- acquire.lua: owner-safe acquisition with a fencing token.
--
-- KEYS[1]  lock key
-- KEYS[2]  fencing counter of the lock key (same slot)
-- ARGV[1]  owner token
-- ARGV[2]  TTL in milliseconds, as a decimal string; "0" means no expiry
-- KEYS[3]  optional: waiters key of the lock key (same slot), given by a
--          client subscribed to the key's release channel
-- ARGV[3]  with KEYS[3]: how long, in milliseconds, the client waits at
--          most before its next attempt
--
-- Returns the fence (≥ 1) when the token now owns the key: the counter after
-- INCR, larger than every fence handed out before for this key. When the
-- token already owned the key, its TTL is reset and a new fence issued.
-- When another token owns the key, returns -(pttl + 2): -1 for a holder
-- without expiry, else ≤ -2 with pttl = -reply - 2 milliseconds left.
-- When the counter cannot be incremented (it was overwritten with a
-- non-integer), the lock taken by this call is given back and the error
-- returned, so a failed call leaves no lock behind.
-- When the key is taken and KEYS[3] is given, the waiters key is set to
-- expire no sooner than ARGV[3] milliseconds from now, so release.lua
-- publishes while the client waits.
--
-- The reply is one integer, not an array: an array reply costs the server
-- more than the whole SET NX.
local function fence(taken)
  local f = redis.pcall('INCR', KEYS[2])
  if type(f) == 'table' and f.err then
    if taken then
      redis.call('DEL', KEYS[1])
    end
    return f
  end
  return f
end

local nx
if ARGV[2] ~= '0' then
  nx = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
else
  nx = redis.call('SET', KEYS[1], ARGV[1], 'NX')
end
if nx then
  return fence(true)
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  if KEYS[3] and redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then
    redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
  end
  return -(redis.call('PTTL', KEYS[1]) + 2)
end
if ARGV[2] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return fence(false)
