package lock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// Tests of the wait queue behind Acquire with WithReleaseNotify: releases
// hand the key over in arrival order, to the TTL and token each waiter asked
// for, and skip waiters that left or died.

// notifyWait is an Acquire that only a hand-over (or its own attempts an
// hour apart) can end.
func notifyWait(ctx context.Context, l lock.Locker, key string, ttl time.Duration, opts ...lock.AcquireOption) (*lock.Held, error) {
	opts = append([]lock.AcquireOption{lock.WithReleaseNotify(), lock.WithRetry(lock.LinearRetry(time.Hour))}, opts...)
	return l.Acquire(ctx, key, ttl, opts...)
}

// TestHandOverInArrivalOrder queues waiters one after another and checks
// that they get the key in that order, each holding it alone: in one
// process, the waiters' order; across processes, the processes' turns.
func TestHandOverInArrivalOrder(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		for _, n := range []int{1, 3} {
			t.Run(fmt.Sprint(n, " processes"), func(t *testing.T) {
				ctx := ctxT(t)
				lockers := tg.newProcesses(t, n)
				h, err := lockers[0].TryAcquire(ctx, "k", time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				const waiters = 6
				var (
					mu      sync.Mutex
					order   []int
					holding int
					wg      sync.WaitGroup
				)
				for i := range waiters {
					wg.Go(func() {
						w, err := notifyWait(ctx, lockers[i%len(lockers)], "k", time.Minute)
						if err != nil {
							t.Errorf("waiter %d: %v", i, err)
							return
						}
						mu.Lock()
						order = append(order, i)
						holding++
						if holding > 1 {
							t.Errorf("%d holders at once", holding)
						}
						mu.Unlock()
						time.Sleep(time.Millisecond)
						mu.Lock()
						holding--
						mu.Unlock()
						if err := w.Release(ctx); err != nil {
							t.Errorf("waiter %d: release: %v", i, err)
						}
					})
					time.Sleep(30 * time.Millisecond) // the next one arrives later
				}
				if err := h.Release(ctx); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				// With one waiter per process at a time in turn, arrival
				// order holds across processes too.
				for i, w := range order {
					if w != i {
						t.Fatalf("hand-over order %v, want arrival order", order)
					}
				}
				if len(order) != waiters {
					t.Fatalf("%d of %d waiters got the key", len(order), waiters)
				}
			})
		}
	})
}

// TestHandOverKeepsWaitersTerms: a waiter gets the key with the TTL it
// asked for (none, or another than the holder's), and with its own token
// when it gave one.
func TestHandOverKeepsWaitersTerms(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		for _, tc := range []struct {
			name  string
			ttl   time.Duration
			token string
		}{
			{"no expiry", 0, ""},
			{"long TTL", time.Hour, ""},
			{"own token", time.Minute, "worker-7"},
		} {
			h, err := l.TryAcquire(ctx, "k", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan *lock.Held, 1)
			go func() {
				var opts []lock.AcquireOption
				if tc.token != "" {
					opts = append(opts, lock.WithToken(tc.token))
				}
				w, err := notifyWait(ctx, l, "k", tc.ttl, opts...)
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
				}
				got <- w
			}()
			time.Sleep(50 * time.Millisecond)
			if err := h.Release(ctx); err != nil {
				t.Fatal(err)
			}
			w := <-got
			if w == nil {
				t.FailNow()
			}
			if tc.token != "" && w.Token() != tc.token {
				t.Fatalf("%s: handle token %q", tc.name, w.Token())
			}
			if v, _, _ := l.Value(ctx, "k"); v != w.Token() {
				t.Fatalf("%s: key holds %q, handle token %q", tc.name, v, w.Token())
			}
			st, err := l.Status(ctx, "k", 10*time.Minute)
			want := map[time.Duration]lock.Status{0: lock.Permanent, time.Hour: lock.Unavailable, time.Minute: lock.Locked}[tc.ttl]
			if err != nil || st != want || w.TTL() != tc.ttl {
				t.Fatalf("%s: status %v (%v), handle TTL %v; want %v", tc.name, st, err, w.TTL(), want)
			}
			if w.Fence() <= h.Fence() {
				t.Fatalf("%s: fence %d not above %d", tc.name, w.Fence(), h.Fence())
			}
			if err := w.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// TestHandOverSkipsWaiterThatLeft: a waiter that gave up is not handed the
// key; the next one is, or the key is freed.
func TestHandOverSkipsWaiterThatLeft(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, l := ctxT(t), tg.newLocker(t)
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		gaveUp, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := notifyWait(gaveUp, l, "k", time.Minute); !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("waiter past its deadline: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, err := l.IsLocked(ctx, "k"); err != nil || ok {
			t.Fatalf("key handed to a waiter that left: %v %v", ok, err)
		}
		// Again with a second waiter behind the one that leaves.
		if h, err = l.TryAcquire(ctx, "k", time.Minute); err != nil {
			t.Fatal(err)
		}
		gaveUp, cancel = context.WithTimeout(ctx, 80*time.Millisecond)
		defer cancel()
		left := make(chan error, 1)
		go func() { _, err := notifyWait(gaveUp, l, "k", time.Minute); left <- err }()
		time.Sleep(20 * time.Millisecond)
		next := make(chan *lock.Held, 1)
		go func() {
			w, err := notifyWait(ctx, l, "k", time.Minute)
			if err != nil {
				t.Error(err)
			}
			next <- w
		}()
		if err := <-left; !errors.Is(err, lock.ErrNotObtained) {
			t.Fatalf("first waiter: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case w := <-next:
			if w == nil {
				t.FailNow()
			}
			if err := w.Release(ctx); err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the second waiter was not handed the key")
		}
	})
}

// TestHandOverSkipsDeadProcess plants the queue entry of a process that
// died (its deadline passed): a release skips it and frees the key, and one
// still within its deadline gets the key, which it cannot release.
func TestHandOverSkipsDeadProcess(t *testing.T) {
	forEachRedis(t, func(t *testing.T, c redisClient) {
		ctx, ns := ctxT(t), redistest.Namespace(t)
		l := mustNew(t, c, ns)
		lk := l.Key("k")
		plant := func(id string, deadline time.Time) {
			t.Helper()
			if err := c.ZAdd(ctx, keys.Queue(lk), redisZ(float64(time.Now().UnixMilli()), id)).Err(); err != nil {
				t.Fatal(err)
			}
			entry := fmt.Sprintf("%d 60000 0 %s|lock|wake|dead", deadline.UnixMilli(), ns)
			if err := c.HSet(ctx, keys.Queued(lk), id, entry).Err(); err != nil {
				t.Fatal(err)
			}
		}
		h, err := l.TryAcquire(ctx, "k", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		plant("dead.1", time.Now().Add(-time.Second))
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _ := l.IsLocked(ctx, "k"); ok {
			t.Fatal("key handed to an entry past its deadline")
		}
		if n := c.Exists(ctx, keys.Queue(lk), keys.Queued(lk)).Val(); n != 0 {
			t.Fatal("dead entry left in the queue")
		}
		if h, err = l.TryAcquire(ctx, "k", time.Minute); err != nil {
			t.Fatal(err)
		}
		plant("alive.1", time.Now().Add(time.Minute))
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		v, _, _ := l.Value(ctx, "k")
		if len(v) < len("alive.1:") || v[:len("alive.1:")] != "alive.1:" {
			t.Fatalf("key holds %q, want the live entry's grant", v)
		}
	})
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// TestHandOverSurvivesLostMessage kills the waiting process's subscription
// just before the release, so that the hand-over message is lost: the
// waiter must still get the key soon (its next attempt finds the key
// handed to its process), not when the key's TTL runs out.
func TestHandOverSurvivesLostMessage(t *testing.T) {
	srv := redistest.Server(t)
	ctx := ctxT(t)
	admin := srv.Client(t)
	ns := "lost"
	holderSide := mustNew(t, srv.Client(t), ns)
	waiterSide := mustNew(t, srv.Client(t), ns)
	for round := range 3 {
		key := fmt.Sprint("k", round)
		h, err := holderSide.TryAcquire(ctx, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			w, err := waiterSide.Acquire(ctx, key, time.Minute, lock.WithReleaseNotify())
			if err == nil {
				err = w.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(100 * time.Millisecond) // the waiter subscribed and queued
		if err := admin.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := h.Release(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the waiter did not get the key within 5s of the release (TTL 1m)", round)
		}
		t.Logf("round %d: handed over in %v", round, time.Since(start))
	}
}
