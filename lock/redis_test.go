package lock_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// TestRoundTrips counts the commands each operation sends: exactly one.
func TestRoundTrips(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx := ctxT(t)
		hook := &countHook{}
		hc := newClientLike(t, c, hook)
		for _, batching := range []int{0, 1, lock.DefaultBatching} {
			countRoundTrips(t, ctx, hook, mustNew(t, hc, redistest.Namespace(t), lock.WithBatching(batching)),
				mustPool(t, hc, redistest.Namespace(t), lock.WithBatching(batching)))
		}
	})
}

// countRoundTrips checks that each operation of l and p, called alone, is
// one round trip.
func countRoundTrips(t *testing.T, ctx context.Context, hook *countHook, l *lock.Lock, p *lock.Pool) {
	t.Helper()
	var h *lock.Held
	ops := []struct {
		name string
		run  func() error
	}{
		{"Lock", func() error { _, err := l.Lock(ctx, "k", "v", time.Minute); return err }},
		{"RLock", func() error { _, err := l.RLock(ctx, "k", "v", time.Minute); return err }},
		{"IsLocked", func() error { _, err := l.IsLocked(ctx, "k"); return err }},
		{"Value", func() error { _, _, err := l.Value(ctx, "k"); return err }},
		{"Status", func() error { _, err := l.Status(ctx, "k", time.Minute); return err }},
		{"Update", func() error { return l.Update(ctx, "k", "1", time.Minute) }},
		{"SetIf", func() error { _, err := l.SetIf(ctx, "k", lock.GT, 2, 2, 0); return err }},
		{"DeleteIf", func() error { _, err := l.DeleteIf(ctx, "k", lock.GT, 3); return err }},
		{"Unlock", func() error { _, err := l.Unlock(ctx, "k"); return err }},
		{"TryAcquire", func() (err error) { h, err = l.TryAcquire(ctx, "h", time.Minute); return err }},
		{"Refresh", func() error { return h.Refresh(ctx, time.Minute) }},
		{"Release", func() error { return h.Release(ctx) }},
		{"Acquire (free key)", func() (err error) { h, err = l.Acquire(ctx, "h", time.Minute); return err }},
		{"Release", func() error { return h.Release(ctx) }},
		{"Pool.Extend", func() error { return p.Extend(ctx, "a", "b", "c") }},
		{"Pool.Assign", func() error { return p.Assign(ctx, "a", "b") }},
		{"Pool.Statuses", func() error { _, err := p.Statuses(ctx); return err }},
		{"Pool.HealthCheck", func() error { _, _, err := p.HealthCheck(ctx); return err }},
		{"Pool.Keys", func() error { _, err := p.Keys(ctx); return err }},
	}
	// The first pass loads the scripts into the cache of the node owning
	// each key (EVALSHA, then EVAL on NOSCRIPT); the second pass counts.
	for pass := range 2 {
		for _, op := range ops {
			before := hook.n.Load()
			if err := op.run(); err != nil {
				t.Fatalf("pass %d: %s: %v", pass, op.name, err)
			}
			if n := hook.n.Load() - before; pass == 1 && n != 1 {
				t.Errorf("%s: %d round trips, want 1", op.name, n)
			}
		}
	}
}

// TestSeedKeyLayout checks that a lock is stored where the Python
// redis-allocator looks for it: <prefix>|<suffix>:<key> holding the value.
func TestSeedKeyLayout(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		l := mustNew(t, c, ns)
		if _, err := l.Lock(ctx, "job-7", "worker-a", time.Minute); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, ns+"|lock:job-7").Result(); err != nil || v != "worker-a" {
			t.Fatalf("raw GET = %q, %v", v, err)
		}
		if got := l.Key("job-7"); got != ns+"|lock:job-7" {
			t.Fatalf("Key = %q", got)
		}
		// A lock written by another client in the seed layout is seen.
		if err := c.Set(ctx, ns+"|custom:job-8", "py", 0).Err(); err != nil {
			t.Fatal(err)
		}
		custom := mustNew(t, c, ns, lock.WithSuffix("custom"))
		if v, ok, err := custom.Value(ctx, "job-8"); err != nil || !ok || v != "py" {
			t.Fatalf("Value of a seed-written key = %q, %v, %v", v, ok, err)
		}
	})
}

// TestScriptCacheFlushed checks the EVAL fallback after SCRIPT FLUSH.
func TestScriptCacheFlushed(t *testing.T) {
	srv := redistest.Server(t)
	c := srv.Client(t)
	ctx := ctxT(t)
	l := mustNew(t, c, "flush")
	h, err := l.TryAcquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := h.Release(ctx); err != nil {
		t.Fatalf("Release after SCRIPT FLUSH: %v", err)
	}
}

// TestRedisDown checks that errors from Redis surface as errors, not as
// "not obtained" or "not held".
func TestRedisDown(t *testing.T) {
	srv := redistest.Server(t)
	c := srv.Client(t)
	ctx := ctxT(t)
	l := mustNew(t, c, "down")
	h, err := l.TryAcquire(ctx, "k", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryAcquire(ctx, "k2", time.Minute); err == nil || errors.Is(err, lock.ErrNotObtained) {
		t.Fatalf("TryAcquire with Redis down: %v", err)
	}
	if err := h.Refresh(ctx, time.Minute); err == nil || errors.Is(err, lock.ErrNotHeld) {
		t.Fatalf("Refresh with Redis down: %v", err)
	}
	if _, err := l.Lock(ctx, "k3", "v", time.Minute); err == nil {
		t.Fatal("Lock with Redis down succeeded")
	}
}

// TestReleaseHandsOverInQueue checks the wait queue on Redis: a release
// nobody waits for publishes nothing; a waiting Acquire keeps its process's
// entry for about its backoff; a release hands the key straight to the
// waiter (the key holds the waiter's token at once), and tells a waiter of
// another Lock value with one message on that value's wake channel, but
// one of its own without publishing; the waiter's release drops the entry.
func TestReleaseHandsOverInQueue(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		holderSide := mustNew(t, c, ns)
		waiterSide := mustNew(t, c, ns)
		lk := holderSide.Key("k")
		qk, ek := keys.Queue(lk), keys.Queued(lk)
		// Every wake channel of the namespace, and a marker channel on the
		// node that publishes, so that messages arrive in the server's order.
		origin := redis.UniversalClient(c)
		if cc, ok := c.(*redis.ClusterClient); ok {
			node, err := cc.MasterForKey(ctx, lk)
			if err != nil {
				t.Fatal(err)
			}
			origin = node
		}
		ps := c.PSubscribe(ctx, ns+"|lock|wake|*")
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		marker := func() {
			t.Helper()
			if err := origin.Publish(ctx, ns+"|lock|wake|marker", "marker").Err(); err != nil {
				t.Fatal(err)
			}
			if m, err := ps.ReceiveMessage(ctx); err != nil || m.Payload != "marker" {
				t.Fatalf("message before the marker: %v, %v", m, err)
			}
		}

		h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		marker() // nothing was published

		for _, side := range []struct {
			name     string
			l        *lock.Lock
			messages int
		}{{"other value", waiterSide, 1}, {"same value", holderSide, 0}} {
			h, err := holderSide.TryAcquire(ctx, "k", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			const backoff = time.Hour
			got := make(chan *lock.Held, 1)
			go func() {
				w, err := side.l.Acquire(ctx, "k", time.Minute, lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(backoff)))
				if err != nil {
					t.Errorf("%s: waiter: %v", side.name, err)
				}
				got <- w
			}()
			var pttl time.Duration
			for pttl <= 0 && ctx.Err() == nil {
				time.Sleep(5 * time.Millisecond)
				pttl = c.PTTL(ctx, qk).Val()
			}
			if pttl <= backoff-time.Minute || pttl > backoff+time.Second {
				t.Fatalf("%s: queue TTL %v, want about the waiter's backoff %v", side.name, pttl, backoff)
			}
			if n := c.HLen(ctx, ek).Val(); n != 1 {
				t.Fatalf("%s: %d queue entries, want 1", side.name, n)
			}
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			w := <-got
			if w == nil {
				t.FailNow()
			}
			if v := c.Get(ctx, lk).Val(); v != w.Token() {
				t.Fatalf("%s: key holds %q after the hand-over, want the waiter's token", side.name, v)
			}
			if w.Fence() <= h.Fence() {
				t.Fatalf("%s: fence %d not above %d", side.name, w.Fence(), h.Fence())
			}
			for range side.messages {
				if m, err := ps.ReceiveMessage(ctx); err != nil || !strings.HasPrefix(m.Channel, ns+"|lock|wake|") {
					t.Fatalf("%s: wake message: %v, %v", side.name, m, err)
				}
			}
			marker()
			// The waiting process keeps its place while it may have more
			// waiters; its release drops it, nobody waiting there any more.
			if n := c.Exists(ctx, qk, ek).Val(); n != 2 {
				t.Fatalf("%s: %d of the queue keys left while the waiter holds the key, want both", side.name, n)
			}
			if err := w.Release(ctx); err != nil {
				t.Fatal(err)
			}
			if n := c.Exists(ctx, qk, ek).Val(); n != 0 {
				t.Fatalf("%s: queue left after the waiter's release", side.name)
			}
		}
	})
}
