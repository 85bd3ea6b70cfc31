package lock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// Edge cases of owner handles: concurrent and failed renewals, late
// KeepAlive, TTL rounding, fencing counters and cancelled contexts.

func TestConcurrentRefreshesKeepValidityHonest(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		l := mustNew(t, c, ns)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for range 30 {
			var wg sync.WaitGroup
			wg.Go(func() { _ = h.Refresh(ctx, time.Minute) })
			wg.Go(func() { _ = h.Refresh(ctx, time.Second) })
			wg.Wait()
			pttl, err := c.PTTL(ctx, l.Key("k")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if local := time.Until(h.ValidUntil()); local > pttl {
				t.Fatalf("handle valid for %v, server TTL %v", local, pttl)
			}
		}
	})
}

func TestFailedRefreshAssumesShorterTTL(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		hook := &delayHook{delay: time.Second}
		hc := newClientLike(t, c, hook)
		l := mustNew(t, hc, ns)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		hook.armed.Store(true)
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := h.Refresh(short, 2*time.Second); err == nil || errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh through a stalled connection: %v", err)
		}
		if left := time.Until(h.ValidUntil()); left > 2*time.Second {
			t.Fatalf("validity %v left after a failed refresh to 2s", left)
		}
	})
}

func TestFailedReleaseEndsHandle(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		hook := &delayHook{delay: time.Second}
		hc := newClientLike(t, c, hook)
		l := mustNew(t, hc, ns)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		lost := h.Lost()
		hook.armed.Store(true)
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := h.Release(short); err == nil {
			t.Fatal("Release through a stalled connection succeeded")
		}
		select {
		case <-lost:
		default:
			t.Fatal("handle still looks held after a release of unknown outcome")
		}
		if !errors.Is(h.Err(), lock.ErrNotHeld) {
			t.Fatalf("Err = %v", h.Err())
		}
		hook.armed.Store(false)
		if err := h.Release(ctx); err != nil {
			t.Fatalf("retrying Release: %v", err)
		}
		if ok, _ := l.IsLocked(ctx, "k"); ok {
			t.Fatal("key still locked after the retried Release")
		}
	})
}

func TestRefreshToPermanentStopsKeepAlive(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		hook := &countHook{}
		hc := newClientLike(t, c, hook)
		l := mustNew(t, hc, ns)
		h, err := l.TryAcquire(ctx, "k", 90*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.Refresh(ctx, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // let the loop notice
		before := hook.n.Load()
		time.Sleep(200 * time.Millisecond)
		if n := hook.n.Load() - before; n != 0 {
			t.Fatalf("%d commands sent while nothing needed renewal", n)
		}
		if err := h.Err(); err != nil {
			t.Fatalf("permanent lock lost: %v", err)
		}
	})
}

func TestLateKeepAliveRenewsInTime(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		const ttl = 300 * time.Millisecond
		h, err := l.TryAcquire(ctx, "k", ttl)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // 70ms of validity left
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * ttl)
		if err := h.Err(); err != nil {
			t.Fatalf("lost although KeepAlive started with validity left: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRefreshChecksMargin(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", 10*time.Second, lock.WithSafetyMargin(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Refresh(ctx, time.Second); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("Refresh below the margin: %v", err)
		}
		if err := h.Err(); err != nil {
			t.Fatalf("refused Refresh changed the handle: %v", err)
		}
		if _, err := l.TryAcquire(ctx, "m", time.Second, lock.WithSafetyMargin(0)); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("zero margin: %v", err)
		}
	})
}

func TestTTLRoundedToMilliseconds(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Second+900*time.Microsecond, lock.WithSafetyMargin(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if h.TTL() != time.Second {
			t.Fatalf("TTL = %v, want 1s", h.TTL())
		}
		// The local validity never reaches past the server's expiry.
		if left := time.Until(h.ValidUntil()); left > time.Second-time.Millisecond {
			t.Fatalf("validity %v for a 1s TTL with a 1ms margin", left)
		}
	})
}

func TestFenceCounterIsNotALockKey(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, p := ctxT(t), tg.newPool(t)
		first, err := p.TryAcquire(ctx, "job", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := p.IsLocked(ctx, "job|fence"); ok {
			t.Fatal("the fencing counter of job shows up as lock key job|fence")
		}
		// A caller key that looks like a counter does not disturb fencing.
		if err := p.Update(ctx, "x|fence", "not a number", 0); err != nil {
			t.Fatal(err)
		}
		h, err := p.TryAcquire(ctx, "x", time.Minute)
		if err != nil {
			t.Fatalf("TryAcquire next to a caller key x|fence: %v", err)
		}
		if h.Fence() <= first.Fence() { // the pool's counter is shared
			t.Fatalf("fence %d not above the pool's previous %d", h.Fence(), first.Fence())
		}
	})
}

func TestCancelledContext(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		l := tg.newLocker(t)
		ctx, cancel := context.WithCancel(ctxT(t))
		cancel()
		if _, err := l.TryAcquire(ctx, "k", time.Minute); !errors.Is(err, context.Canceled) {
			t.Fatalf("TryAcquire with a cancelled context: %v", err)
		}
		if _, err := l.Lock(ctx, "k", "v", time.Minute); !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock with a cancelled context: %v", err)
		}
		if ok, err := l.IsLocked(ctxT(t), "k"); err != nil || ok {
			t.Fatalf("cancelled calls changed state: %v %v", ok, err)
		}
	})
}

func TestPoolFenceSpansMembers(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, p := ctxT(t), tg.newPool(t)
		var last int64
		for _, k := range []string{"a", "b", "a", "c"} {
			h, err := p.TryAcquire(ctx, k, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if h.Fence() <= last {
				t.Fatalf("fence %d of %s not above %d", h.Fence(), k, last)
			}
			last = h.Fence()
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
}
