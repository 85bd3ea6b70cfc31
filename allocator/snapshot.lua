-- snapshot.lua: the whole pool state at one instant, for inspection.
-- KEYS: the pool's keys (pool.lua).
-- Returns {now, items (flat field/value), free (in allocation order),
-- holders (flat), timers (flat member/score), waitq (in order)}.
return {
  NOW,
  redis.call('HGETALL', K_ITEMS),
  redis.call('ZRANGE', K_FREE, 0, -1),
  redis.call('HGETALL', K_HOLDERS),
  redis.call('ZRANGE', K_TIMERS, 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', K_WAITQ, 0, -1),
}
