-- fence.lua: prepended to the scripts that grant a lock key (scripts.go
-- joins the files), so that every grant issues fences the same way.
--
-- now_us returns the server time in µs (exact in a Lua number until 2255).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- issue_fence(counter, life, grant, now) returns the next fence of a
-- fencing counter, and the fence as a decimal string, and records it: the larger of the last fence plus one and
-- now, the server time in µs. Fences therefore keep growing after the counter
-- expired, as long as the server's clock never steps back further than the
-- counter's life. life is how long the counter lives, in milliseconds; grant,
-- when not "", is stored with the fence ("<fence>:<grant>") so that
-- release.lua can tell that the key was granted by that acquisition. A
-- counter that does not start with a number counts as missing.
local function issue_fence(counter, life, grant, now)
  -- One SET ... GET in the common case, where the clock is ahead of the
  -- last fence; a second SET when it is not.
  local fs = string.format('%.0f', now)
  local v = fs
  if grant ~= '' then
    v = fs .. ':' .. grant
  end
  local last = redis.call('SET', counter, v, 'PX', life, 'GET')
  if not last then
    return now, fs
  end
  last = tonumber(last) or tonumber(string.match(last, '^%d+'))
  if not last or last < now then
    return now, fs
  end
  local f = last + 1
  fs = string.format('%.0f', f)
  v = fs
  if grant ~= '' then
    v = fs .. ':' .. grant
  end
  redis.call('SET', counter, v, 'PX', life)
  return f, fs
end
