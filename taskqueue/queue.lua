-- queue.lua: prelude of every task queue script (scripts.go joins it before
-- the operation). It reads the clock and holds the transitions several
-- operations share, so that a task moves between its states the same way
-- everywhere.
--
-- ARGV[1] is the namespace's hash tag T, with its braces. Every key a script
-- touches starts with T and so lives in one Redis Cluster slot: the fixed
-- and per-name keys and the per-task keys of the ids it pops are built here
-- from T (data, never code). KEYS[1] is a key of that slot, for routing.
--
-- A task is the hash T|t|<id> (see internal/keys Queue for its fields). Its
-- state s is one of
--   pending    in T|q|<name> (ready) or T|d|<name> (retry back-off)
--   active     in T|a|<name>, scored by its claim's lease deadline; tk is the
--              claim token, o the owner (a Queue value's id)
--   done       finished with a result
--   failed     failed in its caller's process, which has the error
--   dead       failed its last attempt or was lost too often; in T|x|<name>
--   cancelled  withdrawn by its caller before it finished
--   expired    its expiry passed before a worker started it
-- Terminal tasks keep their key for their result's life (tt ms, dead ones
-- longer), so a caller can still read them; then Redis drops them.

local T = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function tkey(id) return T .. '|t|' .. id end
local function qkey(name) return T .. '|q|' .. name end
local function akey(name) return T .. '|a|' .. name end
local function dkey(name) return T .. '|d|' .. name end
local function xkey(name) return T .. '|x|' .. name end
local function bkey(name) return T .. '|b|' .. name end
local function lkey(name) return T .. '|l|' .. name end
local function gkey(id, rq) return T .. '|g|' .. rq .. '|' .. id end
local SEQ = T .. '|seq'
local NAMES = T .. '|names'

-- Results up to this size travel in the message that tells waiters.
local INLINE = 65536

local TERMINAL = {done = true, failed = true, dead = true, cancelled = true, expired = true}

-- record returns the task's fields as a flat array (HGETALL).
local function record(k)
  return redis.call('HGETALL', k)
end

-- unnet decodes netstrings.
local function unnet(s)
  local out, i = {}, 1
  while i <= #s do
    local colon = string.find(s, ':', i, true)
    if not colon then break end
    local n = tonumber(string.sub(s, i, colon - 1))
    out[#out + 1] = string.sub(s, colon + 1, colon + n)
    i = colon + n + 1
  end
  return out
end

-- waiting reports whether the Queue value qid is among r, the ids told
-- about a task.
local function waiting(r, qid)
  return r ~= nil and string.find(' ' .. r .. ' ', ' ' .. qid .. ' ', 1, true) ~= nil
end

-- register adds the Queue value qid to the ids told about task k.
local function register(k, qid)
  if qid ~= '' then
    local r = redis.call('HGET', k, 'r') or ''
    if not waiting(r, qid) then
      redis.call('HSET', k, 'r', r == '' and qid or (r .. ' ' .. qid))
    end
  end
end

-- netstrings encodes a flat array of strings as "<length>:<bytes>" each,
-- which any bytes survive.
local function netstrings(arr)
  local out = {}
  for i, v in ipairs(arr) do
    out[i] = #v .. ':' .. v
  end
  return table.concat(out)
end

-- ring wakes one idle listener of name: the bell holds at most one ring,
-- which stays until a listener takes it, so no wake-up is lost.
local function ring(name)
  local b = bkey(name)
  if redis.call('LLEN', b) == 0 then
    redis.call('RPUSH', b, '1')
  end
end

-- ready puts a pending task in its name's ready set: at the back (a new
-- sequence number) or, when front, ahead of every queued task.
local function ready(id, name, front)
  local seq = redis.call('INCR', SEQ)
  if front then seq = -seq end
  redis.call('ZADD', qkey(name), seq, id)
  ring(name)
end

-- tell sends msg to every Queue value waiting for task k (field r: their
-- ids, space-separated).
local function tell(k, msg)
  local r = redis.call('HGET', k, 'r')
  if r then
    for qid in string.gmatch(r, '%S+') do
      redis.call('PUBLISH', T .. '|c|' .. qid, msg)
    end
  end
end

-- claim_for makes task k active for owner with a fresh token and a lease
-- deadline lease ms away, and returns the token. nonce names the request
-- that claimed it for a caller (field cn), so that the same request sent
-- again (go-redis resends a command whose connection broke) finds its
-- claim instead of failing. The progress and error of
-- an earlier run are cleared, so every run starts clean.
local function claim_for(k, id, name, owner, lease, nonce)
  local tk = tostring(redis.call('INCR', SEQ))
  redis.call('HSET', k, 's', 'active', 'tk', tk, 'o', owner, 'c', '0', 'err', '', 'res', '', 'f', '', 'cn', nonce or '',
    'pc', '', 'pt', '', 'pu', '')
  redis.call('HINCRBY', k, 'dl', 1)
  redis.call('ZADD', akey(name), NOW + lease, id)
  return tk
end

-- finish makes task k (named name, id id) terminal in state st with its
-- result or error, keeps it for keep ms and tells its waiters.
local function finish(k, id, name, st, res, err, keep)
  redis.call('ZREM', akey(name), id)
  redis.call('HSET', k, 's', st, 'res', res, 'err', err, 'f', NOW, 'tk', '')
  if keep > 0 then
    redis.call('PEXPIRE', k, keep)
  end
  local r = redis.call('HGET', k, 'r')
  if not r or r == '' then
    return -- nobody waits (a Submit)
  end
  -- The message carries the record when it is small, so that waiters
  -- need not read it. cjson copies bytes that are not UTF-8 as they are;
  -- the hub's decoder keeps them.
  local params = redis.call('HGET', k, 'p') or ''
  if #res + #err + #params <= INLINE then
    tell(k, 'd ' .. #id .. ' ' .. id .. cjson.encode(record(k)))
  else
    tell(k, 'd ' .. #id .. ' ' .. id)
  end
end

-- die makes task k a dead letter with error err, kept for deadlife ms (or
-- its timeout, when longer). When a caller waits to run the task itself
-- should its remote runs fail (field fb: a RemoteFirst or Auto query), the
-- task is handed to that caller instead, claimed for it with a lease of
-- lease ms (field cn "handed"), and the caller is told ("o <id length>
-- <id>"): it finds the claim (its token) in the record.
local function die(k, id, name, err, deadlife, lease)
  local fb = redis.call('HGET', k, 'fb')
  if fb and fb ~= '' then
    redis.call('HSET', k, 'fb', '', 'herr', err)
    claim_for(k, id, name, fb, lease, 'handed')
    redis.call('PUBLISH', T .. '|c|' .. fb, 'o ' .. #id .. ' ' .. id)
    return 'handed'
  end
  redis.call('ZADD', xkey(name), NOW, id)
  local tt = tonumber(redis.call('HGET', k, 'tt')) or 0
  finish(k, id, name, 'dead', '', err, math.max(deadlife, tt))
  return 'dead'
end

-- nudge tells the caller that would run task k itself (field fb, see die)
-- that the task is pending again, so that, past its fallback point, it
-- takes the task over at once.
local function nudge(k, id)
  local fb = redis.call('HGET', k, 'fb')
  if fb and fb ~= '' then
    redis.call('PUBLISH', T .. '|c|' .. fb, 'o ' .. #id .. ' ' .. id)
  end
end

-- lapsed handles task k (id, named name) whose claim lapsed (its worker
-- died or stalled): a task its caller cancelled ends cancelled, a hand-off
-- (its caller gone) and a task lost maxlost times end dead. It returns true
-- when the task ended; otherwise its lost count grew and the caller queues
-- it again or claims it.
local function lapsed(k, id, name, maxlost, deadlife, lease)
  redis.call('ZREM', akey(name), id)
  local f = redis.call('HMGET', k, 'c', 'tt', 'cn', 'herr')
  if f[1] == '1' then
    finish(k, id, name, 'cancelled', '', 'taskqueue: cancelled', tonumber(f[2]))
    return true
  end
  if f[3] == 'handed' then
    redis.call('ZADD', xkey(name), NOW, id)
    finish(k, id, name, 'dead', '', f[4] or '', math.max(deadlife, tonumber(f[2]) or 0))
    return true
  end
  local lost = redis.call('HINCRBY', k, 'l', 1)
  if lost >= maxlost then
    die(k, id, name, 'taskqueue: worker lost ' .. lost .. ' times', deadlife, lease)
    return true
  end
  return false
end

-- withdraw takes pending or dead task id out of its name's sets.
local function withdraw(id, name)
  redis.call('ZREM', qkey(name), id)
  redis.call('ZREM', dkey(name), id)
  redis.call('ZREM', xkey(name), id)
end

