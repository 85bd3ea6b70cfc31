-- claim.lua: reclaim the expired claims and due retries of some names, then
-- claim up to n ready tasks of them for a listener.
-- KEYS[1] T|seq (routing)
-- ARGV[2] owner, [3] n, [4] lease ms, [5] budget (expired claims and due
-- retries handled per name), [6] max lost (a task whose claim expired that
-- many times is dead), [7] dead letters' life ms, [8] count of names,
-- [9..] names, in the order to serve them, then the request's nonce and
-- "1" to tidy up too (drop lapsed listeners and old dead letters, and find
-- when the next retry is due), which listeners do about once a second,
-- then the listener's id (lid).
-- Reply: {claimed, skipped, next} where claimed is a flat array of
-- id, token, name, params, expiry ms, attempts failed, deliveries, max
-- attempts per task; skipped lists "id reason" for tasks dropped without
-- running; next is the ms until the earliest retry of these names is due
-- (-1: none, or not tidying).
local owner, n, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local budget, maxlost, deadlife = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local count = tonumber(ARGV[8])
local nonce, tidy, lid = ARGV[9 + count], ARGV[10 + count] == '1', ARGV[11 + count]
local claimed, skipped = {}, {}
local next = -1

-- The same request sent again (its reply was lost) gets the tasks the
-- first one claimed: they are remembered for a minute per listener (a
-- Listen call, lid).
local LAST = T .. '|lc|' .. owner .. '|' .. lid
if n > 0 then
  local last = redis.call('GET', LAST)
  if last and string.sub(last, 1, #nonce + 1) == nonce .. '|' then
    local pairs_ = unnet(string.sub(last, #nonce + 2))
    for i = 1, #pairs_, 2 do
      local id, tk = pairs_[i], pairs_[i + 1]
      local f = redis.call('HMGET', tkey(id), 's', 'tk', 'n', 'p', 'x', 'a', 'dl', 'm')
      if f[1] == 'active' and f[2] == tk then
        -- Still ours: its lease counts from now, as for a new claim.
        redis.call('ZADD', akey(f[3]), NOW + lease, id)
        local n1 = #claimed
        claimed[n1 + 1], claimed[n1 + 2], claimed[n1 + 3], claimed[n1 + 4] = id, tk, f[3], f[4]
        claimed[n1 + 5], claimed[n1 + 6], claimed[n1 + 7], claimed[n1 + 8] = f[5], f[6], f[7], f[8]
      end
    end
    return {claimed, skipped, next}
  end
end

for i = 1, count do
  local name = ARGV[8 + i]
  -- Claims that expired: their workers died or stalled.
  local ended = redis.call('ZRANGEBYSCORE', akey(name), '-inf', NOW, 'LIMIT', 0, budget)
  for _, id in ipairs(ended) do
    redis.call('ZREM', akey(name), id)
    local k = tkey(id)
    if redis.call('HGET', k, 's') == 'active' and not lapsed(k, id, name, maxlost, deadlife, lease) then
      redis.call('HSET', k, 's', 'pending', 'tk', '', 'o', '')
      ready(id, name, true)
      nudge(k, id)
    end
  end
  -- Retries whose back-off ended.
  local due = redis.call('ZRANGEBYSCORE', dkey(name), '-inf', NOW, 'LIMIT', 0, budget)
  for _, id in ipairs(due) do
    redis.call('ZREM', dkey(name), id)
    if redis.call('HGET', tkey(id), 's') == 'pending' then
      ready(id, name, false)
    end
  end
  if tidy then
    local first = redis.call('ZRANGE', dkey(name), 0, 0, 'WITHSCORES')
    if first[2] then
      local wait = math.max(0, tonumber(first[2]) - NOW)
      if next < 0 or wait < next then next = wait end
    end
    redis.call('ZREMRANGEBYSCORE', lkey(name), '-inf', NOW)
    redis.call('ZREMRANGEBYSCORE', xkey(name), '-inf', NOW - deadlife)
  end

  while n > 0 do
    local popped = redis.call('ZPOPMIN', qkey(name))
    local id = popped[1]
    if not id then break end
    local k = tkey(id)
    local f = redis.call('HMGET', k, 's', 'x', 'n', 'p', 'a', 'dl', 'm')
    if f[1] == 'pending' and f[3] == name then
      if tonumber(f[2]) <= NOW then
        finish(k, id, name, 'expired', '', 'taskqueue: task expired before it started',
          tonumber(redis.call('HGET', k, 'tt')) or 60000)
        skipped[#skipped + 1] = id .. ' expired'
      else
        local tk = claim_for(k, id, name, owner, lease)
        local n1 = #claimed
        claimed[n1 + 1], claimed[n1 + 2], claimed[n1 + 3], claimed[n1 + 4] = id, tk, name, f[4]
        claimed[n1 + 5], claimed[n1 + 6], claimed[n1 + 7], claimed[n1 + 8] = f[2], f[5], tostring(tonumber(f[6]) + 1), f[7]
        n = n - 1
      end
    elseif not f[1] then
      -- Its record expired (or was deleted) while it was queued.
      skipped[#skipped + 1] = id .. ' gone'
    end
    -- Any other state: a stale entry (the task was withdrawn or taken
    -- over meanwhile); drop it.
  end
  if redis.call('ZCARD', qkey(name)) > 0 then
    ring(name)
  end
end
if #claimed > 0 then
  local remember = {}
  for i = 1, #claimed, 8 do
    remember[#remember + 1], remember[#remember + 2] = claimed[i], claimed[i + 1]
  end
  redis.call('SET', LAST, nonce .. '|' .. netstrings(remember), 'PX', 60000)
end
return {claimed, skipped, next}
