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
// # Cost
//
// Every operation is one round trip: a single command or one EVALSHA of an
// embedded Lua script (EVAL only after the server lost its script cache).
// Acquire with WithReleaseNotify subscribes to the key's release channel
// after its first failed attempt and wakes when the holder releases.
//
// # Redis Cluster
//
// A lock key and its fencing counter share a slot, and all keys of a Pool
// share the pool's hash tag, so every script runs on Redis Cluster.
// Fencing tokens grow per key (a namespace-wide counter would put every lock
// of a namespace on one slot).
//
// # In-memory twin
//
// NewMemory and NewMemoryPool return the same types of behaviour without
// Redis, for single-process programs and tests.
package lock
