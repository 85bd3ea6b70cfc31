-- pool.lua: prelude of every allocator script (scripts.go joins it after
-- fence.lua and before the operation). It names the pool's keys, reads the
-- clock and holds the state transitions that several operations share, so
-- that every script moves a resource between free, leased and quarantined
-- the same way.
--
-- KEYS[1..12] (internal/keys Pool.Scripts):
--   items, free, timers, holders, seq, fence, sessl, waitq, waitd, granted,
--   perm, cancelled
-- ARGV[1]: the time in ms, or "" for the server's clock (tests set it).
--
-- A member's record in items is "<priority> <free seq> <generation>
-- <expiry> <quarantine end>". The free seq is the 12 hex digits that
-- prefix the member's latest entry in free, or "-": entries sort by score
-- (-priority) and, among equal scores, by that prefix, so the member
-- returned longest ago comes first. The member is free when that entry is
-- in free (is_free): malloc pops the entry and leaves the record as it is,
-- so a leased member's record may name an entry that is gone. The generation changes when the
-- member is created or quarantined; a soft binding remembers it and is
-- honoured only while it matches. Expiry and quarantine end are ms, 0 for
-- none.
--
-- A lease's record in holders is "<fence> <token> <session or -> <waiter
-- or -> <deadline ms, -1 when permanent>". A permanent lease is also listed
-- in perm as "<token>|<resource>", so that a malloc whose reply was lost
-- can give it back by token (see free_token.lua).
--
-- timers holds every deadline, so that one range query finds all the
-- housekeeping due: "L<resource>" a lease's deadline, "E<member>" a
-- membership's expiry, "Q<member>" a quarantine's end, "S<session>" a
-- session's deadline. A member whose membership expired while it was
-- leased keeps "E<member>" at score 0 (never due again) until the lease
-- ends and removes it.

local K_ITEMS, K_FREE, K_TIMERS, K_HOLDERS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SEQ, K_FENCE, K_SESSL, K_WAITQ = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_WAITD, K_GRANTED, K_PERM, K_CANCELLED = KEYS[9], KEYS[10], KEYS[11], KEYS[12]

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

-- A caller that gives up on a request of unknown outcome (its reply was
-- lost) cancels its token: a tombstone in cancelled, kept this long, makes
-- the request refuse to grant anything if it reaches Redis only later.
local CANCEL_LIFE = 600000

-- cancel records the tombstone of token and drops the expired ones.
local function cancel(token)
  redis.call('ZADD', K_CANCELLED, NOW, token)
  redis.call('ZREMRANGEBYSCORE', K_CANCELLED, '-inf', NOW - CANCEL_LIFE)
end

-- ms formats a time or fence in ms for a record (exact up to 2^53).
local function ms(n)
  return string.format('%.0f', n)
end

local function put_item(name, p, s, g, e, q)
  redis.call('HSET', K_ITEMS, name, p .. ' ' .. s .. ' ' .. g .. ' ' .. ms(e) .. ' ' .. ms(q))
end

-- push_free appends a member to the free set, behind the members of its
-- priority.
local function push_free(name, p, g, e, q)
  local s = string.format('%012x', redis.call('INCR', K_SEQ))
  put_item(name, p, s, g, e, q)
  redis.call('ZADD', K_FREE, -tonumber(p), s .. name)
end

local function put_holder(name, f, t, sess, w, d)
  redis.call('HSET', K_HOLDERS, name, f .. ' ' .. t .. ' ' .. sess .. ' ' .. w .. ' ' .. ms(d))
end

-- grant leases name to token: a new fence, a deadline, a holder record and
-- the session entry. It returns the fence and the deadline (-1: none).
local function grant(name, token, ttl, sess, waiter)
  local fence = issue_fence(K_FENCE, FENCE_LIFE)
  if not fence then
    -- Someone overwrote the counter with a non-integer. A script that
    -- failed here would leave its earlier writes behind (Redis does not
    -- roll a script back), so restart the counter from the clock instead,
    -- as after its expiry: fences keep growing all the same.
    fence = now_us()
    redis.call('SET', K_FENCE, ms(fence), 'PX', FENCE_LIFE)
  end
  local deadline = -1
  if ttl > 0 then
    deadline = NOW + ttl
    redis.call('ZADD', K_TIMERS, deadline, 'L' .. name)
  else
    redis.call('ZADD', K_PERM, 0, token .. '|' .. name)
  end
  put_holder(name, ms(fence), token, sess, waiter, deadline)
  if sess ~= '-' then
    redis.call('ZADD', K_SESSL, 0, sess .. '|' .. name)
  end
  return fence, deadline
end

-- lib returns the pool's other state transitions, building them on first
-- use: creating their closures costs every script call several µs, so the
-- common paths of malloc.lua and free.lua run without them and call lib()
-- only for what is rare (due housekeeping, waiters, sessions, bindings).
local lib_cache
local function lib()
  if lib_cache then
    return lib_cache
  end
  -- get_item returns a member's priority, free seq, generation, expiry and
  -- quarantine end, or nil.
  local function get_item(name)
    local v = redis.call('HGET', K_ITEMS, name)
    if not v then
      return nil
    end
    local p, s, g, e, q = string.match(v, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    return p, s, g, tonumber(e), tonumber(q)
  end

  local function expired(e)
    return e ~= 0 and e <= NOW
  end

  local function quarantined(q)
    return q > NOW
  end

  -- pull_free takes a free member out of the free set.
  local function pull_free(name, p, s, g, e, q)
    redis.call('ZREM', K_FREE, s .. name)
    put_item(name, p, '-', g, e, q)
  end

  -- is_free says whether the member whose record has free seq s is free.
  local function is_free(name, s)
    return s ~= '-' and redis.call('ZSCORE', K_FREE, s .. name) ~= false
  end

  -- remove_member deletes a member and everything that describes it; a lease
  -- on it lives on and ends without returning it to the pool.
  local function remove_member(name)
    local p, s, _, e, q = get_item(name)
    if not p then
      return false
    end
    if s ~= '-' then
      redis.call('ZREM', K_FREE, s .. name)
    end
    redis.call('HDEL', K_ITEMS, name)
    if e ~= 0 then
      redis.call('ZREM', K_TIMERS, 'E' .. name)
    end
    if q ~= 0 then
      redis.call('ZREM', K_TIMERS, 'Q' .. name)
    end
    return true
  end

  -- pop_free takes the free member to allocate next off the free set and
  -- returns its name, entry and score, and its record unless trusted. An
  -- untrusted pop reads the record and drops members whose membership
  -- expired; a trusted one may skip that because housekeeping found no more
  -- due timers (a free member that expired has a due "E" timer).
  local function pop_free(trusted)
    while true do
      local r = redis.call('ZPOPMIN', K_FREE)
      if #r == 0 then
        return nil
      end
      local entry = r[1]
      local name = string.sub(entry, 13)
      if trusted then
        return name, entry, r[2]
      end
      local p, s, g, e, q = get_item(name)
      if p and expired(e) then
        remove_member(name)
      elseif p and s == string.sub(entry, 1, 12) then
        return name, entry, r[2], p, g, e, q
      end -- else an entry without a member: dropped (repair)
    end
  end

  -- best_free takes the free member to allocate next off the free set and
  -- returns its name and record (marked not free), or nil.
  local function best_free()
    local name, _, _, p, g, e, q = pop_free(false)
    if name then
      put_item(name, p, '-', g, e, q)
    end
    return name, p, '-', g, e, q
  end

  -- holder returns the fence, token, session, waiter and deadline of a
  -- lease, or nil.
  local function holder(name)
    local h = redis.call('HGET', K_HOLDERS, name)
    if not h then
      return nil
    end
    local f, t, sess, w, d = string.match(h, '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
    return f, t, sess, w, tonumber(d)
  end

  -- session_live says whether a lease may be tied to session sid.
  local function session_live(sid)
    if sid == '-' then
      return true
    end
    local d = redis.call('ZSCORE', K_TIMERS, 'S' .. sid)
    return d and tonumber(d) > NOW
  end

  -- live_head returns the first waiter still waiting and its entry, dropping
  -- on the way the entries of waiters that gave up or whose session is gone.
  local function live_head()
    while true do
      local head = redis.call('ZRANGE', K_WAITQ, 0, 0)
      if #head == 0 then
        return nil
      end
      local id = head[1]
      local d = redis.call('HGET', K_WAITD, id)
      if d then
        local untl, sess = string.match(d, '^(%S+) %S+ %S+ (%S+) ')
        if tonumber(untl) > NOW and session_live(sess) then
          return id, d
        end
      end
      redis.call('ZREM', K_WAITQ, id)
      redis.call('HDEL', K_WAITD, id)
    end
  end

  -- grant_to leases name to the waiter id (entry d) and tells it on its
  -- channel; the waiter also finds the grant in granted when the message is
  -- lost. The lease is provisional: it lasts the TTL the waiter asked for but
  -- at most PROVISIONAL, until the waiter confirms it with a renewal (which
  -- also measures its validity from a request of its own), so that a waiter
  -- that died meanwhile does not keep the resource for long.
  local function grant_to(id, d, name)
    local _, ttl, token, sess, ch = string.match(d, '^(%S+) (%S+) (%S+) (%S+) (.*)$')
    ttl = tonumber(ttl)
    if ttl <= 0 or ttl > PROVISIONAL then
      ttl = PROVISIONAL
    end
    redis.call('ZREM', K_WAITQ, id)
    redis.call('HDEL', K_WAITD, id)
    local fence, deadline = grant(name, token, ttl, sess, id)
    local msg = ms(fence) .. ' ' .. ms(deadline) .. ' ' .. name
    redis.call('HSET', K_GRANTED, id, msg)
    redis.call('PUBLISH', ch, id .. ' ' .. msg)
  end

  -- give_back makes a member that is not free and neither leased nor
  -- quarantined allocatable again: it goes to the first live waiter, or to
  -- the free set.
  local function give_back(name, p, g, e, q)
    local id, d = live_head()
    if id then
      grant_to(id, d, name)
    else
      push_free(name, p, g, e, q)
    end
  end

  -- settle acts on a member that is not free once no lease holds it
  -- (unleased says the caller just ended it): an expired member is removed,
  -- one that is not quarantined returns to the pool.
  local function settle(name, unleased)
    local p, s, g, e, q = get_item(name)
    if not p then
      return
    end
    if not unleased and (redis.call('HEXISTS', K_HOLDERS, name) == 1 or is_free(name, s)) then
      return
    end
    if expired(e) then
      remove_member(name)
    elseif not quarantined(q) then
      give_back(name, p, g, e, q)
    end
  end

  -- end_held ends the lease on name whose record (token, session, waiter,
  -- deadline) the caller read, and settles name.
  local function end_held(name, token, sess, waiter, deadline)
    redis.call('HDEL', K_HOLDERS, name)
    if deadline >= 0 then
      redis.call('ZREM', K_TIMERS, 'L' .. name)
    else
      redis.call('ZREM', K_PERM, token .. '|' .. name)
    end
    if sess ~= '-' then
      redis.call('ZREM', K_SESSL, sess .. '|' .. name)
    end
    if waiter ~= '-' then
      redis.call('HDEL', K_GRANTED, waiter)
    end
    settle(name, true)
  end

  -- end_lease ends the lease on name, whoever holds it, and settles name.
  local function end_lease(name)
    local f, t, sess, waiter, deadline = holder(name)
    if not f then
      return false
    end
    end_held(name, t, sess, waiter, deadline)
    return true
  end

  -- drain hands free members to live waiters while there are both (members
  -- that became free while only dead entries were queued, for instance).
  local function drain()
    while true do
      local id, d = live_head()
      if not id then
        return
      end
      local name = best_free()
      if not name then
        return
      end
      grant_to(id, d, name)
    end
  end

  -- session_leases ends up to limit leases of session sid and returns how
  -- many it ended and whether none is left.
  local function session_leases(sid, limit)
    local ls = redis.call('ZRANGEBYLEX', K_SESSL, '[' .. sid .. '|', '(' .. sid .. '}', 'LIMIT', 0, limit)
    for _, e in ipairs(ls) do
      end_lease(string.sub(e, #sid + 2))
    end
    return #ls, #ls < limit
  end

  -- reclaim does up to budget units of the housekeeping that is due, oldest
  -- first: a unit is one timer (an expired lease or membership, an ended
  -- quarantine) or one lease of a lapsed session. It
  -- returns the counts of expired leases, leases of lapsed sessions, expired
  -- members and ended quarantines, and whether it did all that was due.
  local function reclaim(budget)
    local leases, sessions, members, quar = 0, 0, 0, 0
    if budget <= 0 then
      return leases, sessions, members, quar, false
    end
    local due = redis.call('ZRANGEBYSCORE', K_TIMERS, '(0', NOW, 'LIMIT', 0, budget)
    local left = budget
    for _, t in ipairs(due) do
      if left <= 0 then
        break
      end
      local kind, name = string.sub(t, 1, 1), string.sub(t, 2)
      if kind ~= 'S' then
        left = left - 1
      end
      if kind == 'L' then
        if end_lease(name) then
          leases = leases + 1
        else
          redis.call('ZREM', K_TIMERS, t) -- a timer without a lease: repair
        end
      elseif kind == 'E' then
        if redis.call('HEXISTS', K_HOLDERS, name) == 1 then
          redis.call('ZADD', K_TIMERS, 0, t) -- removed when its lease ends
          members = members + 1
        elseif remove_member(name) then
          members = members + 1
        else
          redis.call('ZREM', K_TIMERS, t) -- a timer without a member: repair
        end
      elseif kind == 'Q' then
        redis.call('ZREM', K_TIMERS, t)
        local p, s, g, e = get_item(name)
        if p then
          put_item(name, p, s, g, e, 0)
          settle(name, false)
          quar = quar + 1
        end
      else
        -- A lapsed session: each of its leases is a unit (left ≥ 1 here,
        -- so every pass makes progress); its timer goes with the last.
        local n, all = session_leases(name, left)
        sessions = sessions + n
        left = left - n
        if all then
          redis.call('ZREM', K_TIMERS, t)
        end
      end
    end
    return leases, sessions, members, quar, #due < budget and left > 0
  end

  -- bound returns the member a binding value names when the binding may be
  -- honoured: unexpired, the member's generation unchanged, the member free
  -- (when want_free) and neither expired nor quarantined.
  local function bound(b, want_free)
    local be, gen, name = string.match(b, '^(%S+) (%S+) (.*)$')
    local until_ms = tonumber(be)
    if not until_ms or (until_ms ~= 0 and until_ms <= NOW) then
      return nil -- expired, or not written by us
    end
    local p, s, g, e, q = get_item(name)
    if not p or g ~= gen or expired(e) or quarantined(q) then
      return nil
    end
    if want_free and not is_free(name, s) then
      return nil
    end
    return name, p, s, g, e, q
  end

  -- bind writes a soft binding to name (generation g) for ttl ms (≤ 0: no
  -- expiry). The key outlives the binding's logical expiry by a minute, so
  -- that the expiry follows the script clock.
  local function bind(key, name, g, ttl)
    if ttl > 0 then
      redis.call('SET', key, ms(NOW + ttl) .. ' ' .. g .. ' ' .. name, 'PX', ttl + 60000)
    else
      redis.call('SET', key, '0 ' .. g .. ' ' .. name)
    end
  end

  lib_cache = {
    get_item = get_item,
    put_item = put_item,
    expired = expired,
    quarantined = quarantined,
    push_free = push_free,
    pull_free = pull_free,
    is_free = is_free,
    remove_member = remove_member,
    pop_free = pop_free,
    best_free = best_free,
    holder = holder,
    put_holder = put_holder,
    grant = grant,
    session_live = session_live,
    live_head = live_head,
    grant_to = grant_to,
    give_back = give_back,
    settle = settle,
    end_held = end_held,
    end_lease = end_lease,
    drain = drain,
    session_leases = session_leases,
    reclaim = reclaim,
    bound = bound,
    bind = bind,
  }
  return lib_cache
end
