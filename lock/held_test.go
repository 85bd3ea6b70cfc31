package lock_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

func TestAcquireRelease(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if h.Key() != "k" || h.Token() == "" || h.Fence() < 1 || h.TTL() != time.Minute {
			t.Fatalf("handle: key %q token %q fence %d ttl %v", h.Key(), h.Token(), h.Fence(), h.TTL())
		}
		if v, _, _ := l.Value(ctx, "k"); v != h.Token() {
			t.Fatalf("key holds %q, want the token %q", v, h.Token())
		}
		if _, err := l.TryAcquire(ctx, "k", time.Minute); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("second TryAcquire: %v, want ErrNotObtained", err)
		}
		if ok, _ := l.Lock(ctx, "k", "x", time.Minute); ok {
			t.Fatal("plain Lock took an acquired key")
		}
		if err := h.Refresh(ctx, 2*time.Minute); err != nil || h.TTL() != 2*time.Minute {
			t.Fatalf("Refresh: %v, ttl %v", err, h.TTL())
		}
		if err := h.Err(); err != nil {
			t.Fatalf("Err while held: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _ := l.IsLocked(ctx, "k"); ok {
			t.Fatal("key still locked after Release")
		}
		select {
		case <-h.Lost():
		default:
			t.Fatal("Lost not closed after Release")
		}
		if !errors.Is(h.Err(), lock.ErrReleased) {
			t.Fatalf("Err after Release = %v", h.Err())
		}
		if err := h.Release(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("second Release: %v, want ErrNotHeld", err)
		}
		if err := h.Refresh(ctx, time.Minute); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh after Release: %v, want ErrNotHeld", err)
		}
	})
}

func TestWithToken(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h1, err := l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("worker-1"))
		if err != nil {
			t.Fatal(err)
		}
		h2, err := l.TryAcquire(ctx, "k", time.Hour, lock.WithToken("worker-1"))
		if err != nil {
			t.Fatalf("re-acquire with the owning token: %v", err)
		}
		if h2.Fence() <= h1.Fence() {
			t.Fatalf("re-acquire fence %d not above %d", h2.Fence(), h1.Fence())
		}
		if st, _ := l.Status(ctx, "k", 10*time.Minute); st != lock.Unavailable {
			t.Fatalf("re-acquire did not reset the TTL to an hour: %v", st)
		}
		if _, err := l.TryAcquire(ctx, "k", time.Minute, lock.WithToken("worker-2")); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("other token: %v", err)
		}
	})
}

func TestRefreshReleaseAfterLoss(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		lost := h.Lost()
		next, err := l.Acquire(ctx, "k", time.Minute, lock.WithRetry(lock.LinearRetry(10*time.Millisecond)))
		if err != nil {
			t.Fatalf("acquire after expiry: %v", err)
		}
		select {
		case <-lost:
		default:
			t.Fatal("Lost still open after the key expired and was taken")
		}
		if err := h.Refresh(ctx, time.Minute); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh after loss: %v, want ErrNotHeld", err)
		}
		if err := h.Release(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Release after loss: %v, want ErrNotHeld", err)
		}
		if v, _, _ := l.Value(ctx, "k"); v != next.Token() {
			t.Fatalf("stale Release touched the new owner's key: %q", v)
		}
		if next.Fence() <= h.Fence() {
			t.Fatalf("fence %d after hand-over not above %d", next.Fence(), h.Fence())
		}
		// A key deleted by force is noticed by Refresh.
		if _, err := l.Unlock(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		if err := next.Refresh(ctx, time.Minute); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("Refresh after forced unlock: %v", err)
		}
		if !errors.Is(next.Err(), lock.ErrNotHeld) {
			t.Fatalf("Err after failed refresh = %v", next.Err())
		}
	})
}

func TestFencingIncreases(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		var (
			mu     sync.Mutex
			fences []int64
			wg     sync.WaitGroup
		)
		for range 10 {
			wg.Go(func() {
				for range 10 {
					h, err := l.Acquire(ctx, "k", time.Minute, lock.WithRetry(lock.LinearRetry(time.Millisecond)))
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					fences = append(fences, h.Fence())
					mu.Unlock()
					if err := h.Release(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		// Acquisitions are serialised by the lock, so in acquisition order
		// the fences must strictly increase: the recorded order is the
		// acquisition order because each append happens while holding it.
		for i := 1; i < len(fences); i++ {
			if fences[i] <= fences[i-1] {
				t.Fatalf("fence %d at position %d not above %d", fences[i], i, fences[i-1])
			}
		}
		if len(fences) != 100 {
			t.Fatalf("%d acquisitions, want 100", len(fences))
		}
	})
}

func TestAcquireWaitsForRelease(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var released atomic.Bool
		go func() {
			time.Sleep(100 * time.Millisecond)
			released.Store(true)
			if err := h.Release(context.WithoutCancel(ctx)); err != nil {
				t.Error(err)
			}
		}()
		// A retry interval far beyond the test's patience: only the release
		// notification can wake the waiter in time. The largest Duration
		// also checks that the wait the waiter announces cannot overflow.
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got, err := l.Acquire(waitCtx, "k", time.Minute,
			lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(math.MaxInt64)))
		if err != nil {
			t.Fatalf("Acquire with release notify: %v", err)
		}
		if !released.Load() {
			t.Fatal("acquired before the holder released")
		}
		if got.Fence() <= h.Fence() {
			t.Fatalf("fence %d not above %d", got.Fence(), h.Fence())
		}
	})
}

// TestReleaseNotifyChain has several waiters with hour-long backoffs queue
// for one key: each release must wake the next, so every waiter that is
// still waiting after a wake-up has to announce itself again.
func TestReleaseNotifyChain(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		const waiters = 4
		waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		var holders atomic.Int32
		fences := make(chan int64, waiters)
		for range waiters {
			wg.Go(func() {
				got, err := l.Acquire(waitCtx, "k", time.Minute,
					lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(time.Hour)))
				if err != nil {
					t.Errorf("waiter: %v", err)
					return
				}
				if n := holders.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				fences <- got.Fence()
				time.Sleep(5 * time.Millisecond)
				holders.Add(-1)
				if err := got.Release(ctx); err != nil {
					t.Errorf("release: %v", err)
				}
			})
		}
		time.Sleep(100 * time.Millisecond) // let the waiters subscribe
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(fences)
		if len(fences) != waiters {
			t.Fatalf("%d of %d waiters got the lock", len(fences), waiters)
		}
		for f := range fences {
			if f <= h.Fence() {
				t.Fatalf("fence %d not above the first holder's %d", f, h.Fence())
			}
		}
	})
}

func TestAcquireGivesUp(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		if _, err := l.TryAcquire(ctx, "k", time.Minute); err != nil {
			t.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err := l.Acquire(waitCtx, "k", time.Minute, lock.WithReleaseNotify())
		if !errors.Is(err, lock.ErrNotObtained) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire past its deadline: %v, want ErrNotObtained and DeadlineExceeded", err)
		}
		_, err = l.Acquire(ctx, "k", time.Minute, lock.WithRetry(lock.LimitRetry(lock.LinearRetry(time.Millisecond), 3)))
		if !errors.Is(err, lock.ErrNotObtained) || ctx.Err() != nil {
			t.Fatalf("Acquire with 3 retries: %v, want ErrNotObtained", err)
		}
		_, err = l.Acquire(ctx, "k", time.Minute, lock.WithRetry(lock.NoRetry()))
		if !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("Acquire with NoRetry: %v", err)
		}
	})
}

func TestKeepAlive(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		const ttl = 300 * time.Millisecond
		h, err := l.TryAcquire(ctx, "k", ttl)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatalf("second KeepAlive: %v", err)
		}
		lost := h.Lost()
		// Hold for five TTLs, checking ownership all along.
		end := time.Now().Add(5 * ttl)
		for time.Now().Before(end) {
			if v, ok, err := l.Value(ctx, "k"); err != nil || !ok || v != h.Token() {
				t.Fatalf("lock not kept: %q %v %v", v, ok, err)
			}
			select {
			case <-lost:
				t.Fatalf("Lost closed while kept alive: %v", h.Err())
			case <-time.After(ttl / 6):
			}
		}
		// Delete it behind the holder's back: Lost must close within one
		// renewal period (ttl/3), with scheduling slack.
		if _, err := l.Unlock(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		deleted := time.Now()
		select {
		case <-lost:
		case <-time.After(ttl):
			t.Fatal("Lost not closed after the key was deleted")
		}
		if took, period := time.Since(deleted), ttl/3; took > period+period/2 {
			t.Fatalf("loss signalled %v after deletion, renewal period is %v", took, period)
		}
		if !errors.Is(h.Err(), lock.ErrNotHeld) {
			t.Fatalf("Err = %v, want ErrNotHeld", h.Err())
		}
	})
}

func TestKeepAliveStopsOnRelease(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", 150*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		if ok, _ := l.IsLocked(ctx, "k"); ok {
			t.Fatal("key re-created after Release")
		}
		if err := h.KeepAlive(ctx); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("KeepAlive after Release: %v", err)
		}
	})
}

// TestLostBeforeServerExpiry cuts the holder off from Redis (its commands
// are delayed beyond the TTL) and checks that Lost closes while the key is
// still alive on the server, i.e. before anyone else could take it.
func TestLostBeforeServerExpiry(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx := ctxT(t)
		ns := redistest.Namespace(t)
		const ttl = 600 * time.Millisecond
		hook := &delayHook{delay: 10 * ttl}
		holderClient := newClientLike(t, c, hook)
		holder := mustNew(t, holderClient, ns)
		observer := mustNew(t, c, ns)

		h, err := holder.TryAcquire(ctx, "k", ttl, lock.WithSafetyMargin(ttl/3))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		lost := h.Lost()
		hook.armed.Store(true) // partition: renewals hang
		select {
		case <-lost:
		case <-time.After(2 * ttl):
			t.Fatal("Lost not closed while renewals could not get through")
		}
		ok, err := observer.IsLocked(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatal("Lost closed only after the server had expired the key")
		}
		if _, err := observer.TryAcquire(ctx, "k", time.Minute); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("another owner could take the key before Lost: %v", err)
		}
		if !errors.Is(h.Err(), lock.ErrNotHeld) {
			t.Fatalf("Err = %v", h.Err())
		}
	})
}

func TestKeepAliveRestartsAfterCtx(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		const ttl = 300 * time.Millisecond
		h, err := l.TryAcquire(ctx, "k", ttl)
		if err != nil {
			t.Fatal(err)
		}
		first, cancel := context.WithCancel(ctx)
		if err := h.KeepAlive(first); err != nil {
			t.Fatal(err)
		}
		cancel() // the old loop may still be running: restart at once
		if err := h.KeepAlive(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * ttl)
		if err := h.Err(); err != nil {
			t.Fatalf("lock lost although renewal was restarted: %v", err)
		}
		if v, _, _ := l.Value(ctx, "k"); v != h.Token() {
			t.Fatalf("key holds %q", v)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReleaseToken(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.ReleaseToken(ctx, "k", "not-the-token"); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("ReleaseToken with a wrong token: %v", err)
		}
		if ok, _ := l.IsLocked(ctx, "k"); !ok {
			t.Fatal("a wrong token released the key")
		}
		if err := l.ReleaseToken(ctx, "k", ""); !errors.Is(err, lock.ErrInvalidArgument) {
			t.Fatalf("ReleaseToken with no token: %v", err)
		}
		if err := l.ReleaseToken(ctx, "k", h.Token()); err != nil {
			t.Fatal(err)
		}
		if ok, _ := l.IsLocked(ctx, "k"); ok {
			t.Fatal("key still locked")
		}
		if err := l.ReleaseToken(ctx, "k", h.Token()); !errors.Is(err, lock.ErrNotHeld) {
			t.Fatalf("second ReleaseToken: %v", err)
		}
	})
}

// TestLostFirstWatchedAfterExpiry: Lost, first called once the validity
// has run out, returns a closed channel (it used to close it twice and
// panic).
func TestLostFirstWatchedAfterExpiry(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(80 * time.Millisecond)
		select {
		case <-h.Lost():
		default:
			t.Fatal("Lost open after the validity ran out")
		}
		if !errors.Is(h.Err(), lock.ErrNotHeld) {
			t.Fatalf("Err = %v", h.Err())
		}
	})
}

// TestFenceCounterBeyond2To53: a fencing counter that someone set to 2^53
// or more (where Lua numbers lose integers) makes the acquisition fail
// cleanly instead of issuing repeated or negative fences.
func TestFenceCounterBeyond2To53(t *testing.T) {
	ctx := ctxT(t)
	c := redistest.Client(t)
	l, err := lock.New(c, redistest.Namespace(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"9007199254740992", "4611686018427387904", "9223372036854775806"} {
		if err := c.Set(ctx, keys.Fence(l.Key("k")), v, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if h, err := l.TryAcquire(ctx, "k", time.Minute); err == nil {
			t.Fatalf("counter %s: acquired with fence %d", v, h.Fence())
		}
		if held, err := l.IsLocked(ctx, "k"); err != nil || held {
			t.Fatalf("counter %s: a failed acquisition left the key held (%v, %v)", v, held, err)
		}
	}
}
