-- fence.lua: prepended to every script that issues fences (the lock's grants
-- and the allocator's leases), so that all of them issue fences alike.

-- now_us returns the server time in µs (exact in a Lua number until 2255).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- issue_fence(counter, life) returns the next fence of a fencing counter:
-- the counter plus one while it exists, else the server time in µs, with
-- which the counter starts again and lives life milliseconds (INCR keeps
-- that expiry). A fence is therefore larger than every fence of the key
-- before it, as long as the server's clock never steps back by more than
-- the counter's life (a counter grows by at most one per script, far slower
-- than the clock). A counter that is not an integer (written by someone
-- else) returns nil and the error reply, having written nothing; so does
-- one at 2^53 or beyond (which INCR has incremented).
local function issue_fence(counter, life)
  local f = redis.pcall('INCR', counter)
  if type(f) == 'table' then
    return nil, f
  end
  if f >= 9007199254740992 then
    -- Beyond 2^53 a Lua number loses integers: a counter this large was
    -- written by someone else, not issued.
    return nil, {err = 'ERR fencing counter ' .. counter .. ' beyond 2^53'}
  end
  if f == 1 then
    f = now_us()
    redis.call('SET', counter, string.format('%.0f', f), 'PX', life)
  end
  return f
end
