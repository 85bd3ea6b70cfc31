// Package allocator provides a pool of named resources on Redis that
// clients lease and return: proxies, API keys, accounts, GPU slots, test
// devices. A resource is leased to one client at a time, a client that
// dies gives its resources back when its lease or session runs out, and
// every malloc, free and renew is one round trip.
//
// # The pool
//
// An Allocator names one pool (New: a prefix and, with WithSuffix, a
// suffix). Its members are plain strings, added with Extend or Assign and
// removed with Shrink or Clear; WithMemberTTL makes a membership expire
// unless Extend refreshes it. Each member is free, leased or quarantined
// (a leased member may be quarantined too, and then stays out of the pool
// when its lease ends). A member removed while leased keeps its lease until
// it ends and does not return; one whose membership expired while leased
// stays until its lease ends. An Allocator is safe for concurrent use;
// Close stops its background work and leaves the pool as it is.
//
// A member has a priority (WithPriority when it is added, SetPriority
// later): malloc takes the free member of highest priority and, among
// members of equal priority, the one that has been free longest — a
// returned member goes to the back of its priority's line. Snapshot.Free
// lists the free members in that order.
//
// # Leases, tokens and fences
//
// MallocLease returns a *Lease: the resource, a random token and a fence.
// Lease.Free and Lease.Renew act only while the token still holds the
// resource; otherwise — the lease expired and was reclaimed, perhaps
// granted again, its session lapsed, or an operator ended it with FreeKeys
// — they change nothing and return an error wrapping ErrNotHeld. Free of
// a lease already freed returns nil.
//
// Every lease of a pool gets a larger fence than all leases of the pool
// granted before it, across processes. Pass it to the store the resource
// writes to and have the store refuse a smaller one than it has seen: a
// holder that kept working after its lease ran out (a long GC pause, a
// network partition) is then refused instead of overwriting the work of
// the next holder.
//
// A lease expires after its TTL (WithLeaseTTL, DefaultLeaseTTL by default;
// 0 makes it permanent). Lease.KeepAlive renews it every third of its TTL.
// Lease.Lost is closed, and Lease.Err says why, when the lease is freed,
// when a renewal finds it gone, or when no renewal was confirmed within the
// TTL less a tenth, measured on the local clock from when the request was
// sent — so that the holder learns of the loss before Redis could grant
// the resource to anyone else.
//
// MallocKey returns only the key, as the Python redis-allocator's
// malloc_key does; such a lease ends through FreeKeys or its TTL.
// MallocN leases n resources at once, all or none, under one token and
// with consecutive fences.
//
// # Soft binding
//
// WithBind(name, ttl) asks for the resource bound to name: a crawler gets
// the proxy it used last time, a tenant its usual API key. The bound
// resource is taken when it is still a member, free, not quarantined, and
// neither removed nor re-created since the binding was made; otherwise
// malloc takes the best free resource and binds name to it. A binding
// never reserves anything: while its resource is leased to another client,
// the bound client gets another resource. UpdateSoftBind, GetSoftBind and
// UnbindSoftBind manage bindings directly.
//
// # Waiting for a resource
//
// MallocWait waits while nothing is free. Waiters form one first-come,
// first-served queue across processes. A resource that becomes free while
// someone waits — freed, reclaimed, out of quarantine or newly added — is
// handed to the first live waiter by the same script, so it is never free
// in between and a MallocLease cannot take it first. The waiter's process
// learns of the hand-off by one message on its own channel: each Allocator
// value subscribes once, however many of its calls wait, and a free with
// nobody waiting publishes nothing. A waiter renews its place in the queue
// every ten seconds, which also finds a hand-off whose message was lost; a
// process that dies while waiting keeps its place for at most 30 seconds.
// A hand-off is provisional: it lasts the TTL the waiter asked for but at
// most 30 seconds, until the waiter confirms it with a renewal, which
// also measures the lease's validity from a request of the waiter's own
// rather than from a message of unknown delay; a resource handed to a
// waiter that died meanwhile comes back soon. When MallocWait's context
// ends, or its session is lost, a hand-off that raced with it goes to the
// next waiter. Waiters of a lapsed or closed session are skipped.
//
// # Sessions
//
// A Session (NewSession) groups the leases of a client process
// (WithSession). It heartbeats every third of its TTL; when the process
// dies and the heartbeats stop, the session lapses and the next mallocs or
// GC reclaim all its leases, however long their own TTLs. Session.Close
// ends the session and its leases at once, Session.Orphan stops the
// heartbeats without ending anything, and Session.Done and Session.Err
// report a session that lapsed or was closed. A malloc in a lapsed session
// returns ErrSessionLost. A lease of a session is valid only while its
// session is: Lease.Lost closes when the session is lost, and renewing or
// freeing it after its session lapsed reports ErrNotHeld.
//
// # Reclaim without a janitor
//
// No background process is needed to return the resources of dead
// clients. Every malloc (and every turn of MallocWait) first does a few
// units of housekeeping, oldest first: it ends expired leases and the
// leases of lapsed sessions, removes expired members and ends finished
// quarantines (WithReclaimBudget, DefaultReclaimBudget units by default).
// A resource whose lease expired is therefore free again for the next
// malloc, or handed to a waiter (unless the budget is 0). GC does the same
// on demand with a budget of its choosing; calling it is optional. The
// cost of both follows the amount reclaimed, not the size of the pool.
// Until something reclaims them, expired leases still show in a Snapshot,
// with a deadline in the past.
//
// A malloc whose reply is lost (a timeout, a dropped connection) may have
// taken a lease its caller never learns of. A lease with a TTL runs out by
// itself; a permanent one is given back in the background, by its token.
// A turn of MallocWait records what it took for its waiter, so the next
// turn or the waiter's departure finds it.
//
// # Quarantine and health checks
//
// Quarantine takes members out of allocation for a while, for instance a
// proxy that failed a health probe: they are not handed out, their soft
// bindings stop applying, and they return to the pool on their own at the
// first malloc or GC after the quarantine ends (Unquarantine ends it now).
// HealthCheck runs a CheckFunc over every member, a few at a time and each
// within a timeout, and quarantines the failing ones for a cooldown
// (WithCooldown); StartHealthChecker runs it at an interval in the
// background.
//
// # Objects
//
// Malloc allocates a resource for an Object, a client-side value that
// works through one resource at a time, such as an HTTP client behind a
// proxy: it leases a resource soft-bound to the object's Name, hands the
// key to SetConfig and calls Open. The Allocation it returns releases the
// object and its resource (Release), moves the object to another resource
// (Refresh), and moves it away from resources it finds unhealthy,
// quarantining them (RefreshUntilHealthy).
//
// # Policy
//
// WithPolicy adds what the Python redis-allocator's default policy does:
// a GC before every malloc (Policy.GCCount), a refresher that keeps the
// membership in step with an outside source (Policy.Updater, at most once
// per interval across all processes, guarded by a lock of package lock;
// StartRefresher refreshes even while nobody mallocs), and the release of
// the previous Allocation an Allocator made for an object of the same name
// (AutoClose).
// Workers, a separate registry, lists the worker processes whose
// heartbeats have not lapsed.
//
// # Shared mode
//
// With WithShared, malloc hands the same resources to many clients,
// rotating through the free members of the highest priority, and keeps no
// lease: a Lease then only names its resource (no token, no fence, Free
// and Renew do nothing). Quarantine, priorities and soft binding apply as
// in exclusive mode; MallocN and MallocWait do not. Use WithShared on every
// Allocator of a pool or on none.
//
// # Cost
//
// Every operation is one round trip: one EVALSHA of an embedded Lua script
// (a second round trip for the EVAL when the server's script cache does not
// hold it yet), or one command. Malloc, free and renew touch a few entries
// of sorted sets and hashes, so their cost hardly grows with the pool,
// apart from the housekeeping they do. Snapshot, Keys, Assign and Clear
// read or rewrite the whole pool and block Redis for a time that grows
// with it. As in package lock, the commands of concurrent operations share
// pipelines under load (WithBatching).
//
// # Redis Cluster
//
// Every key a pool's scripts touch shares the hash tag
// {<prefix>|<suffix>}, bindings included, so every script runs on Redis
// Cluster. (The refresher's lock is a key of package lock, and a Workers
// registry has a tag of its own.) A pool therefore lives
// in one slot, on one shard: spread load over several pools rather than
// one very large one. Hand-off messages use PUBLISH, which a cluster
// delivers on every node.
//
// # Clocks
//
// Lease deadlines, session deadlines, quarantines and membership expiries
// are kept in the Redis server's time (TIME, read inside each script), so
// the clients' clocks need not agree. Two assumptions remain. The local
// validity of a Lease or Session is measured on the client's monotonic
// clock, less a tenth of the TTL, so the client's clock and the server's
// must run at the same rate within that margin; and the server's clock
// must not jump: a jump forward ends leases early (as it expires Redis's
// own keys early), a jump back lengthens them. Fences come from a counter
// that restarts, a day after it started, from the server's clock in
// microseconds, so they keep growing as long as that clock never steps
// back by more than a day (and, after a failover, the new master's clock
// agrees with the old one's within that).
//
// # Eviction
//
// Run the pool's Redis with the noeviction maxmemory-policy, or a
// volatile-* policy and enough memory. Under an allkeys-* policy, Redis
// may evict a pool's structures under memory pressure and with them
// leases, members or the fencing counter. The keys that carry an expiry
// (the fencing counter and the soft bindings) can be lost without harm: a
// lost counter restarts from the clock, a lost binding is a miss.
//
// # Errors
//
// Errors wrap one of the package's sentinels (ErrNoneAvailable,
// ErrNotHeld, ErrFreed, ErrSessionLost, ErrInvalidKey, ErrInvalidArgument,
// ErrNotMember, ErrClosed, ErrReleased, ErrUnhealthy, ErrNoUpdater,
// ErrCheckTimeout, ErrCheckPanic) or the Redis client's error; check them
// with errors.Is. Invalid keys and arguments are refused before anything is
// sent.
package allocator
