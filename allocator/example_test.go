package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// A pool of proxies shared by crawlers: premium proxies are handed out
// before regular ones, and among equals the proxy returned longest ago
// comes first.
func ExampleAllocator_MallocLease() {
	ctx := context.Background()
	client := exampleRedisClient() // a *redis.Client, *redis.ClusterClient, ...
	proxies, err := allocator.New(client, exampleRedisPrefix("proxies"))
	if err != nil {
		panic(err)
	}
	defer proxies.Close()

	if _, err := proxies.Extend(ctx, []string{"premium-1", "premium-2"}, allocator.WithPriority(10)); err != nil {
		panic(err)
	}
	if _, err := proxies.Extend(ctx, []string{"regular-1", "regular-2"}); err != nil {
		panic(err)
	}

	var leases []*allocator.Lease
	for range 4 {
		l, err := proxies.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
		if err != nil {
			panic(err)
		}
		fmt.Println("leased", l.Key())
		leases = append(leases, l)
	}
	_, err = proxies.MallocLease(ctx)
	fmt.Println("fifth crawler:", errors.Is(err, allocator.ErrNoneAvailable))

	// Each lease carries a fence larger than every earlier lease's: hand it
	// to the stores you write to, so a holder whose lease ran out is refused.
	fmt.Println("fences grow:", leases[3].Fence() > leases[0].Fence())

	for _, l := range leases {
		if err := l.Free(ctx); err != nil {
			panic(err)
		}
	}
	l, err := proxies.MallocLease(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("after the frees:", l.Key())
	// Output:
	// leased premium-1
	// leased premium-2
	// leased regular-1
	// leased regular-2
	// fifth crawler: true
	// fences grow: true
	// after the frees: premium-1
}

// A crawler gets the proxy it used last time back, as long as that proxy
// is free and healthy; otherwise it gets another one and its binding moves.
func ExampleWithBind() {
	ctx := context.Background()
	proxies, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("bind"))
	if err != nil {
		panic(err)
	}
	defer proxies.Close()
	if _, err := proxies.Extend(ctx, []string{"proxy-a", "proxy-b", "proxy-c"}); err != nil {
		panic(err)
	}

	alice := allocator.WithBind("crawler-alice", time.Hour)
	l, err := proxies.MallocLease(ctx, alice)
	if err != nil {
		panic(err)
	}
	fmt.Println("alice:", l.Key())
	if err := l.Free(ctx); err != nil {
		panic(err)
	}

	// proxy-a went to the back of the line, yet alice gets it back.
	l, err = proxies.MallocLease(ctx, alice)
	if err != nil {
		panic(err)
	}
	fmt.Println("alice again:", l.Key())
	if err := l.Free(ctx); err != nil {
		panic(err)
	}

	// A quarantined proxy ends its bindings: alice gets the best free one.
	if _, err := proxies.Quarantine(ctx, time.Minute, "proxy-a"); err != nil {
		panic(err)
	}
	l, err = proxies.MallocLease(ctx, alice)
	if err != nil {
		panic(err)
	}
	fmt.Println("alice after the quarantine:", l.Key())
	bound, ok, err := proxies.GetSoftBind(ctx, "crawler-alice")
	fmt.Println("bound to:", bound, ok, err)
	// Output:
	// alice: proxy-a
	// alice again: proxy-a
	// alice after the quarantine: proxy-b
	// bound to: proxy-b true <nil>
}

// MallocWait queues while the pool is exhausted; a Free hands the resource
// straight to the first waiter, so nobody can take it in between.
func ExampleAllocator_MallocWait() {
	ctx := context.Background()
	gpus, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("wait"))
	if err != nil {
		panic(err)
	}
	defer gpus.Close()
	if _, err := gpus.Extend(ctx, []string{"gpu-0"}); err != nil {
		panic(err)
	}
	held, err := gpus.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		panic(err)
	}

	got := make(chan string, 1)
	go func() {
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		l, err := gpus.MallocWait(waitCtx, allocator.WithLeaseTTL(time.Minute))
		if err != nil {
			got <- err.Error()
			return
		}
		got <- l.Key()
	}()
	// (For the example's sake, free only once the waiter is in line.)
	for s, err := gpus.Snapshot(ctx); err == nil && len(s.Waiters) == 0; s, err = gpus.Snapshot(ctx) {
		time.Sleep(time.Millisecond)
	}

	if err := held.Free(ctx); err != nil {
		panic(err)
	}
	_, err = gpus.MallocLease(ctx)
	fmt.Println("a newcomer right after the Free:", errors.Is(err, allocator.ErrNoneAvailable))
	fmt.Println("the waiter got:", <-got)
	// Output:
	// a newcomer right after the Free: true
	// the waiter got: gpu-0
}

// MallocN leases several resources at once, all or none: two jobs that
// each need two GPUs of three cannot deadlock holding one each.
func ExampleAllocator_MallocN() {
	ctx := context.Background()
	gpus, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("gang"))
	if err != nil {
		panic(err)
	}
	defer gpus.Close()
	if _, err := gpus.Extend(ctx, []string{"gpu-0", "gpu-1", "gpu-2"}); err != nil {
		panic(err)
	}

	job1, err := gpus.MallocN(ctx, 2, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		panic(err)
	}
	fmt.Println("job 1:", job1[0].Key(), job1[1].Key(), "consecutive fences:", job1[1].Fence() == job1[0].Fence()+1)

	_, err = gpus.MallocN(ctx, 2, allocator.WithLeaseTTL(time.Minute))
	fmt.Println("job 2:", errors.Is(err, allocator.ErrNoneAvailable))
	s, err := gpus.Snapshot(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("still free:", s.Free)
	// Output:
	// job 1: gpu-0 gpu-1 consecutive fences: true
	// job 2: true
	// still free: [gpu-2]
}

// Leases taken in a session end together when the session does: when its
// process closes it, or dies and stops heartbeating.
func ExampleAllocator_NewSession() {
	ctx := context.Background()
	keys, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("session"))
	if err != nil {
		panic(err)
	}
	defer keys.Close()
	if _, err := keys.Extend(ctx, []string{"api-key-1", "api-key-2", "api-key-3"}); err != nil {
		panic(err)
	}

	// A worker opens a session (it heartbeats every third of its TTL) and
	// takes two keys in it, without a TTL of their own.
	sess, err := keys.NewSession(ctx, 500*time.Millisecond)
	if err != nil {
		panic(err)
	}
	a, err := keys.MallocLease(ctx, allocator.WithSession(sess), allocator.WithLeaseTTL(0))
	if err != nil {
		panic(err)
	}
	b, err := keys.MallocLease(ctx, allocator.WithSession(sess), allocator.WithLeaseTTL(0))
	if err != nil {
		panic(err)
	}
	fmt.Println("worker leased", a.Key(), b.Key())

	// The worker dies: its heartbeats stop and it frees nothing. Once the
	// session has lapsed, the next malloc reclaims both keys.
	sess.Orphan()
	time.Sleep(700 * time.Millisecond)
	all, err := keys.MallocN(ctx, 3, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		panic(err)
	}
	fmt.Println("next malloc got", all[0].Key(), all[1].Key(), all[2].Key())
	fmt.Println("the dead worker's Free:", errors.Is(a.Free(ctx), allocator.ErrNotHeld))
	for _, l := range all {
		if err := l.Free(ctx); err != nil {
			panic(err)
		}
	}

	// Close ends a session and its leases at once.
	sess, err = keys.NewSession(ctx, time.Minute)
	if err != nil {
		panic(err)
	}
	if _, err := keys.MallocLease(ctx, allocator.WithSession(sess)); err != nil {
		panic(err)
	}
	n, err := sess.Close(ctx)
	<-sess.Done()
	fmt.Println("Close ended", n, "lease:", err, errors.Is(sess.Err(), allocator.ErrSessionLost))
	// Output:
	// worker leased api-key-1 api-key-2
	// next malloc got api-key-3 api-key-1 api-key-2
	// the dead worker's Free: true
	// Close ended 1 lease: <nil> true
}

// Snapshot reads the whole pool atomically, for inspection and checks.
func ExampleAllocator_Snapshot() {
	ctx := context.Background()
	pool, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("snapshot"))
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	if _, err := pool.Extend(ctx, []string{"slot-1", "slot-2"}, allocator.WithPriority(1)); err != nil {
		panic(err)
	}
	if _, err := pool.Extend(ctx, []string{"slot-3", "slot-4"}); err != nil {
		panic(err)
	}
	l, err := pool.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		panic(err)
	}
	if _, err := pool.Quarantine(ctx, time.Minute, "slot-3"); err != nil {
		panic(err)
	}

	s, err := pool.Snapshot(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("free, in malloc order:", s.Free)
	for _, k := range slices.Sorted(maps.Keys(s.Members)) {
		m := s.Members[k]
		state := "leased"
		switch {
		case m.Free:
			state = "free"
		case m.QuarantinedUntil.After(s.Now):
			state = "quarantined"
		}
		fmt.Printf("%s priority %v: %s\n", k, m.Priority, state)
	}
	li := s.Leases[l.Key()]
	fmt.Println("lease fence matches:", li.Fence == l.Fence(), "expires within a minute:", li.Expires.Sub(s.Now) <= time.Minute)
	fmt.Println("invariants broken:", len(s.Problems()))
	// Output:
	// free, in malloc order: [slot-2 slot-4]
	// slot-1 priority 1: leased
	// slot-2 priority 1: free
	// slot-3 priority 0: quarantined
	// slot-4 priority 0: free
	// lease fence matches: true expires within a minute: true
	// invariants broken: 0
}

// HealthCheck probes every member and quarantines the failing ones for a
// cooldown; they come back by themselves afterwards.
func ExampleAllocator_HealthCheck() {
	ctx := context.Background()
	proxies, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("health"))
	if err != nil {
		panic(err)
	}
	defer proxies.Close()
	if _, err := proxies.Extend(ctx, []string{"proxy-a", "proxy-b", "proxy-c"}); err != nil {
		panic(err)
	}

	probe := func(_ context.Context, key string) error {
		if key == "proxy-b" {
			return errors.New("connection refused") // say, a request through it failed
		}
		return nil
	}
	healthy, unhealthy, err := proxies.HealthCheck(ctx, probe, allocator.WithCooldown(time.Minute))
	fmt.Println("healthy:", healthy, "unhealthy:", unhealthy, err)
	s, err := proxies.Snapshot(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("allocatable:", s.Free)
	// Output:
	// healthy: 2 unhealthy: 1 <nil>
	// allocatable: [proxy-a proxy-c]
}

// In shared mode the pool hands the same resources to many clients,
// rotating through them, and keeps no leases.
func ExampleWithShared() {
	ctx := context.Background()
	endpoints, err := allocator.New(exampleRedisClient(), exampleRedisPrefix("shared"), allocator.WithShared())
	if err != nil {
		panic(err)
	}
	defer endpoints.Close()
	if _, err := endpoints.Extend(ctx, []string{"eu-1", "eu-2", "us-1"}); err != nil {
		panic(err)
	}
	for range 4 {
		key, ok, err := endpoints.MallocKey(ctx)
		fmt.Println(key, ok, err)
	}
	// Output:
	// eu-1 true <nil>
	// eu-2 true <nil>
	// us-1 true <nil>
	// eu-1 true <nil>
}

// exampleRedisClient returns a client of the test server that TestMain
// starts (see main_test.go).
func exampleRedisClient() *redis.Client {
	addr, err := redistest.SharedAddr()
	if err != nil {
		panic(err)
	}
	return redis.NewClient(&redis.Options{Addr: addr})
}

// exampleRedisPrefix returns a fresh pool prefix, so that examples and
// tests share the server without seeing each other's keys.
func exampleRedisPrefix(name string) string { return redistest.NewNamespace(name) }
