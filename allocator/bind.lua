-- bind.lua: read or write a soft binding.
-- KEYS: the pool's keys (pool.lua), KEYS[13]: the binding key.
-- ARGV[2]: "get", or "set" with ARGV[3]: member, ARGV[4]: TTL in ms (≤ 0:
-- no expiry)
-- get returns the bound member while the binding applies (unexpired, the
-- member neither removed, expired, quarantined nor re-created since), else
-- false, deleting a binding that no longer applies. set returns 1, or 0
-- when ARGV[3] is not a member.
local L = lib()
local get_item, expired, bound, bind = L.get_item, L.expired, L.bound, L.bind
if ARGV[2] == 'get' then
  local b = redis.pcall('GET', KEYS[13])
  if type(b) ~= 'string' then
    -- None, or a key of another type (written by someone else), which the
    -- next bind overwrites.
    return false
  end
  local name = bound(b, false)
  if not name then
    -- It can never apply again (see bound): drop it.
    redis.call('DEL', KEYS[13])
    return false
  end
  return name
end
local name = ARGV[3]
local p, _, g, e = get_item(name)
if not p or expired(e) then
  return 0
end
bind(KEYS[13], name, g, tonumber(ARGV[4]))
return 1
