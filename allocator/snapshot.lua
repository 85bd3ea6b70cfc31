-- snapshot.lua: the whole pool state at one instant, for inspection.
-- KEYS: the pool's keys (pool.lua).
-- Returns {now, items (flat field/value), free (in allocation order),
-- leases (flat member/deadline), holders (flat), quar (flat), exp (flat),
-- waitq (in order), sessions (flat)}.
return {
  NOW,
  redis.call('HGETALL', K_ITEMS),
  redis.call('ZRANGE', K_FREE, 0, -1),
  redis.call('ZRANGE', K_LEASES, 0, -1, 'WITHSCORES'),
  redis.call('HGETALL', K_HOLDERS),
  redis.call('ZRANGE', K_QUAR, 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', K_EXP, 0, -1, 'WITHSCORES'),
  redis.call('ZRANGE', K_WAITQ, 0, -1),
  redis.call('ZRANGE', K_SESS, 0, -1, 'WITHSCORES'),
}
