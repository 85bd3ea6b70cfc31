package keys

// Worker registry (see Workers):
//
//	{<prefix>|<suffix>}|workers   [ZSET] worker id → liveness deadline (ms, Redis server clock)

// Workers returns the worker registry of the namespace prefix, suffix: a
// sorted set of worker ids scored by the deadline of their last heartbeat,
// under the hash tag {<prefix>|<suffix>}.
func Workers(prefix, suffix string) string { return Tag(prefix, suffix) + "|workers" }
