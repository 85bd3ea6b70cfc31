// Package redisallocator is distributed coordination on Redis for Go: locks,
// resource pools and a task queue that share a limited set of resources
// across processes and machines.
//
// The primitives live in their own packages:
//
//   - [github.com/redisallocator/redisallocator/lock]: distributed locks with
//     TTLs, reentrancy, owner-checked refresh and release, blocking acquire
//     woken by release notifications, auto-renewal with loss notification,
//     fencing tokens, lock pools, and an in-memory twin with the same
//     interface.
//
// Every constructor takes a redis.UniversalClient from
// github.com/redis/go-redis/v9, so a plain client, a Sentinel failover client
// and a Redis Cluster client all work. Every operation is one round trip.
package redisallocator
