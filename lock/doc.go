// Package lock provides distributed locks on Redis and an in-memory twin
// with the same interface.
//
// # Two ways to lock
//
// The parity API mirrors the Python redis-allocator's RedisLock: Lock,
// RLock, Update, Unlock, IsLocked, Value, Status and the conditional numeric
// SetIf/DeleteIf. The caller chooses the value stored in the key, and keys
// live at <prefix>|<suffix>:<key>, so Go and Python programs can lock the
// same keys.
//
// The owner-safe API hands out a *Held: TryAcquire and Acquire store a
// random token, and Held.Refresh and Held.Release act only while that token
// still owns the key (ErrNotHeld otherwise). Each acquisition carries a
// fencing token that grows with every acquisition of the key, and Held.Lost
// signals — before the server could let another owner in — that the lock
// can no longer be relied on. Held.KeepAlive renews in the background.
//
// # Waiting for a key
//
// Acquire retries with a RetryStrategy. With WithReleaseNotify it waits in
// line instead: each Lock or Pool value (a process) keeps one entry per key
// in the key's wait queue while some of its calls wait, and its waiting
// calls form a first-in, first-out line behind that entry. A release hands
// the key straight to the first process in the queue — the key is never
// free in between, so nobody barges in — and that process hands it to the
// first call in its line; the processes take turns. The hand-over costs one
// round trip, the release: a process tells its own waiters without Redis,
// and another process with one message on its own channel (one subscription
// per value, shared by all its waiting calls). A handle obtained this way
// carries the token the release set, unless WithToken asked for another.
// The retry strategy still bounds each wait, so that a forced Unlock, which
// hands the key to nobody, is noticed; and a caller that waits with a
// polling strategy (no WithReleaseNotify) only gets a key nobody queues for.
//
// A process that dies while it waits, or right after it got the key, keeps
// its place until its entry's deadline, the longest its calls announced
// they would wait (plus 250 ms); a release in that window hands it the
// key, which then stays taken until its TTL, as if a holder had died. A
// process that releases, or whose last waiter gives up, drops its place.
// Acquisitions that fail after their command may have run give back what
// they may hold, and keep trying in the background while Redis is
// unreachable, for as long as that hold could last.
//
// # Cost
//
// Every operation is one round trip: a single command or one EVALSHA of an
// embedded Lua script. The first call of a script on a server whose cache
// does not hold it (a new node, a restart, SCRIPT FLUSH) costs a second
// round trip for the EVAL. A call that starts waiting subscribes to its
// value's channel when nobody of that value waits yet (one more round trip;
// the subscription is closed 30 s after the last waiter left).
//
// Operations that many goroutines run at once share pipelines (batching,
// on by default; see WithBatching): each is still one round trip, but a round trip then carries
// many of them, which saves system calls on the client and on Redis. The
// in-flight budget is per Redis node, so a slow node of a cluster holds up
// only the operations on its keys. Pool.Statuses and Pool.HealthCheck run
// over all members in one script, which blocks Redis for a time that grows
// with the pool.
//
// # Client retries
//
// go-redis resends a command after a network error by default
// (Options.MaxRetries), even when the first copy may have been executed.
// For the owner API this is harmless: a resent acquire finds its own token
// and succeeds, and a handle whose release outcome is unknown reports the
// loss. For the parity API a resent Lock may report false for a lock it
// took, and a resent SetIf or DeleteIf may report that the condition
// failed. Set MaxRetries to -1 when those answers must be exact. The same
// holds for a whole pipeline of batched commands: go-redis resends it after
// a network error, which the owner API tolerates as above.
//
// An acquisition that fails after its command may have reached Redis gives
// back what it may have taken, in one more round trip; with WithToken only
// a lock it took afresh (the token may have owned the key before), which a
// grant marker beside the key identifies.
//
// # Fencing tokens and the lifetime of keys
//
// A fence is the key's fencing counter plus one while the counter exists,
// and the Redis server's clock in microseconds when it does not; the
// counter then starts again from there and lives the grant's TTL plus a
// grace period (WithFenceGrace, one minute by default). Fences therefore
// grow with every acquisition of a key for ever, while no key outlives its
// use by more than its TTL plus the grace — provided the server's clock
// never steps back by more than that (and, after a failover, the new
// master's clock agrees with the old one's within it). Every key the
// package writes, except a lock without TTL, has an expiry.
//
// Redis may evict keys when it runs out of memory: with an allkeys-*
// maxmemory-policy it can evict a held lock or a fencing counter. Use
// noeviction, or a volatile-* policy and enough memory.
//
// # Redis Cluster
//
// A lock key and its fencing counter, grant marker and wait queue share a
// slot, and all keys of a Pool share the pool's hash tag, so every script
// runs on Redis Cluster. Fencing tokens of a Lock grow per key (a
// namespace-wide counter would put every lock of a namespace on one slot);
// those of a Pool, whose keys share a slot anyway, grow across all its
// members. Wake messages use PUBLISH, which a cluster sends to every node.
//
// # In-memory twin
//
// NewMemory and NewMemoryPool return the same types of behaviour without
// Redis, for single-process programs and tests.
package lock
