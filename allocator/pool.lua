-- pool.lua: prelude of every allocator script (scripts.go joins it after
-- fence.lua and before the operation). It names the pool's keys, reads the
-- clock and holds the state transitions that several operations share, so
-- that every script moves a resource between free, leased and quarantined
-- the same way.
--
-- KEYS[1..13] (internal/keys Pool.Scripts):
--   items, free, exp, quar, leases, holders, seq, fence, sess, sessl, waitq,
--   waitd, granted
-- ARGV[1]: the time in ms, or "" for the server's clock (tests set it).
--
-- A member's record in items is "<priority> <free seq> <generation>". The
-- free seq is "-" while the member is not free, else the 12 hex digits
-- that prefix its entry in free: entries sort by score (-priority) and,
-- among equal scores, by that prefix, so the member returned longest ago
-- comes first. The generation changes when the member is created or
-- quarantined; a soft binding remembers it and is honoured only while it
-- matches.

local K_ITEMS, K_FREE, K_EXP, K_QUAR = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_LEASES, K_HOLDERS, K_SEQ, K_FENCE = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_SESS, K_SESSL, K_WAITQ, K_WAITD = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_GRANTED = KEYS[13]

local NOW = tonumber(ARGV[1])
if not NOW then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The pool's fencing counter restarts from the clock (see fence.lua) a day
-- after it started.
local FENCE_LIFE = 86400000
-- A hand-off to a waiter that asked for a permanent lease is provisional
-- for this long, until the waiter confirms it (see grant_to).
local PROVISIONAL = 30000

local function next_seq()
  return redis.call('INCR', K_SEQ)
end

local function hex(n)
  return string.format('%012x', n)
end

-- get_item returns a member's priority, free seq and generation, or nil.
local function get_item(name)
  local v = redis.call('HGET', K_ITEMS, name)
  if not v then
    return nil
  end
  local p, s, g = string.match(v, '^(%S+) (%S+) (%S+)$')
  return p, s, g
end

local function put_item(name, p, s, g)
  redis.call('HSET', K_ITEMS, name, p .. ' ' .. s .. ' ' .. g)
end

-- push_free appends a member to the free set, behind the members of its
-- priority.
local function push_free(name, p, g)
  local s = hex(next_seq())
  put_item(name, p, s, g)
  redis.call('ZADD', K_FREE, -tonumber(p), s .. name)
end

-- pull_free takes a free member out of the free set.
local function pull_free(name, p, s, g)
  redis.call('ZREM', K_FREE, s .. name)
  put_item(name, p, '-', g)
end

local function quarantined(name)
  local q = redis.call('ZSCORE', K_QUAR, name)
  return q and tonumber(q) > NOW
end

-- expired says whether a member's membership has expired.
local function expired(name)
  local e = redis.call('ZSCORE', K_EXP, name)
  return e and tonumber(e) <= NOW
end

-- remove_member deletes a member and everything that describes it; a lease
-- on it lives on and ends without returning it to the pool.
local function remove_member(name)
  local p, s = get_item(name)
  if not p then
    return false
  end
  if s ~= '-' then
    redis.call('ZREM', K_FREE, s .. name)
  end
  redis.call('HDEL', K_ITEMS, name)
  redis.call('ZREM', K_EXP, name)
  redis.call('ZREM', K_QUAR, name)
  return true
end

-- best_free returns the free member to allocate next and its record,
-- removing members whose membership expired on the way.
local function best_free()
  while true do
    local head = redis.call('ZRANGE', K_FREE, 0, 0)
    if #head == 0 then
      return nil
    end
    local name = string.sub(head[1], 13)
    if expired(name) then
      remove_member(name)
    else
      local p, s, g = get_item(name)
      if p then
        return name, p, s, g
      end
      redis.call('ZREM', K_FREE, head[1]) -- an entry without a member: repair
    end
  end
end

-- grant leases name to token: a new fence, a deadline, a holder record and
-- the session entry. It returns the fence and the deadline (-1: none).
local function grant(name, token, ttl, sess, waiter)
  local fence, err = issue_fence(K_FENCE, FENCE_LIFE)
  if not fence then
    error(err.err)
  end
  local deadline = -1
  if ttl > 0 then
    deadline = NOW + ttl
    redis.call('ZADD', K_LEASES, deadline, name)
  else
    redis.call('ZADD', K_LEASES, '+inf', name)
  end
  redis.call('HSET', K_HOLDERS, name, string.format('%.0f', fence) .. ' ' .. token .. ' ' .. sess .. ' ' .. waiter)
  if sess ~= '-' then
    redis.call('ZADD', K_SESSL, 0, sess .. '|' .. name)
  end
  return fence, deadline
end

-- holder returns the fence, token, session and waiter of a lease, or nil.
local function holder(name)
  local h = redis.call('HGET', K_HOLDERS, name)
  if not h then
    return nil
  end
  return string.match(h, '^(%S+) (%S+) (%S+) (%S+)$')
end

-- live_head returns the first waiter still waiting and its entry, dropping
-- the entries of waiters that gave up on the way.
local function live_head()
  while true do
    local head = redis.call('ZRANGE', K_WAITQ, 0, 0)
    if #head == 0 then
      return nil
    end
    local id = head[1]
    local d = redis.call('HGET', K_WAITD, id)
    if d then
      local untl = string.match(d, '^(%S+) ')
      if tonumber(untl) > NOW then
        return id, d
      end
    end
    redis.call('ZREM', K_WAITQ, id)
    redis.call('HDEL', K_WAITD, id)
  end
end

-- grant_to leases name to the waiter id (entry d) and tells it on its
-- channel; the waiter also finds the grant in granted when the message is
-- lost. A waiter that asked for a permanent lease gets a provisional one and
-- makes it permanent on receipt, so that a waiter that died meanwhile does
-- not keep the resource for ever.
local function grant_to(id, d, name)
  local _, ttl, token, sess, ch = string.match(d, '^(%S+) (%S+) (%S+) (%S+) (.*)$')
  ttl = tonumber(ttl)
  if ttl <= 0 then
    ttl = PROVISIONAL
  end
  redis.call('ZREM', K_WAITQ, id)
  redis.call('HDEL', K_WAITD, id)
  local fence, deadline = grant(name, token, ttl, sess, id)
  local msg = string.format('%.0f', fence) .. ' ' .. string.format('%.0f', deadline) .. ' ' .. name
  redis.call('HSET', K_GRANTED, id, msg)
  redis.call('PUBLISH', ch, id .. ' ' .. msg)
end

-- give_back makes a member that is neither leased nor quarantined
-- allocatable again: it goes to the first live waiter, or to the free set.
local function give_back(name, p, g)
  local id, d = live_head()
  if id then
    put_item(name, p, '-', g)
    grant_to(id, d, name)
  else
    push_free(name, p, g)
  end
end

-- settle returns a member that is not free to the pool when nothing keeps
-- it out any more (no lease, no quarantine, membership not expired).
local function settle(name)
  local p, s, g = get_item(name)
  if not p or s ~= '-' then
    return
  end
  if redis.call('HEXISTS', K_HOLDERS, name) == 1 or quarantined(name) then
    return
  end
  if expired(name) then
    remove_member(name)
    return
  end
  give_back(name, p, g)
end

-- end_lease ends the lease on name, whoever holds it, and settles name.
local function end_lease(name)
  local _, _, sess, waiter = holder(name)
  if not sess then
    return false
  end
  redis.call('HDEL', K_HOLDERS, name)
  redis.call('ZREM', K_LEASES, name)
  if sess ~= '-' then
    redis.call('ZREM', K_SESSL, sess .. '|' .. name)
  end
  if waiter ~= '-' then
    redis.call('HDEL', K_GRANTED, waiter)
  end
  settle(name)
  return true
end

-- drain hands free members to live waiters while there are both (members
-- that became free without passing through give_back, such as those an
-- operator added while the pool was empty).
local function drain()
  while redis.call('ZCARD', K_WAITQ) > 0 do
    local id, d = live_head()
    if not id then
      return
    end
    local name, p, s, g = best_free()
    if not name then
      return
    end
    pull_free(name, p, s, g)
    grant_to(id, d, name)
  end
end

-- reclaim does up to budget units of housekeeping, oldest first: expired
-- leases, the leases of lapsed sessions, expired members and ended
-- quarantines. It returns the four counts.
local function reclaim(budget)
  local leases, sessions, members, quar = 0, 0, 0, 0
  if budget <= 0 then
    return leases, sessions, members, quar
  end
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', '(' .. NOW, 'LIMIT', 0, budget)) do
    end_lease(name)
    leases = leases + 1
  end
  budget = budget - leases
  if budget > 0 then
    for _, sid in ipairs(redis.call('ZRANGEBYSCORE', K_SESS, '-inf', '(' .. NOW, 'LIMIT', 0, budget)) do
      if budget <= 0 then
        break
      end
      local ls = redis.call('ZRANGEBYLEX', K_SESSL, '[' .. sid .. '|', '(' .. sid .. '}', 'LIMIT', 0, budget)
      for _, e in ipairs(ls) do
        end_lease(string.sub(e, #sid + 2))
      end
      sessions = sessions + #ls
      budget = budget - #ls
      if budget > 0 then
        redis.call('ZREM', K_SESS, sid)
        budget = budget - 1
      end
    end
  end
  if budget > 0 then
    -- A leased member whose membership expired is not deleted: its expiry
    -- becomes 0, which the scan skips, and end_lease removes it. Extend
    -- can still renew its membership meanwhile.
    for _, name in ipairs(redis.call('ZRANGEBYSCORE', K_EXP, '(0', NOW, 'LIMIT', 0, budget)) do
      if redis.call('HEXISTS', K_HOLDERS, name) == 1 then
        redis.call('ZADD', K_EXP, 0, name)
      else
        remove_member(name)
      end
      members = members + 1
    end
    budget = budget - members
  end
  if budget > 0 then
    for _, name in ipairs(redis.call('ZRANGEBYSCORE', K_QUAR, '-inf', NOW, 'LIMIT', 0, budget)) do
      redis.call('ZREM', K_QUAR, name)
      settle(name)
      quar = quar + 1
    end
  end
  return leases, sessions, members, quar
end

-- session_live says whether a lease may be tied to session sid.
local function session_live(sid)
  if sid == '-' then
    return true
  end
  local d = redis.call('ZSCORE', K_SESS, sid)
  return d and tonumber(d) > NOW
end

-- bound returns the member a binding value names when the binding may be
-- honoured: unexpired, the member's generation unchanged, the member free
-- (exclusive) and neither expired nor quarantined.
local function bound(b, want_free)
  local e, gen, name = string.match(b, '^(%S+) (%S+) (.*)$')
  if not e or (e ~= '0' and tonumber(e) <= NOW) then
    return nil
  end
  local p, s, g = get_item(name)
  if not p or g ~= gen or expired(name) or quarantined(name) then
    return nil
  end
  if want_free and s == '-' then
    return nil
  end
  return name, p, s, g
end

-- bind writes a soft binding to name (generation g) for ttl ms (≤ 0: no
-- expiry). The key outlives the binding's logical expiry by a minute, so
-- that the expiry follows the script clock.
local function bind(key, name, g, ttl)
  if ttl > 0 then
    redis.call('SET', key, string.format('%.0f', NOW + ttl) .. ' ' .. g .. ' ' .. name, 'PX', ttl + 60000)
  else
    redis.call('SET', key, '0 ' .. g .. ' ' .. name)
  end
end
