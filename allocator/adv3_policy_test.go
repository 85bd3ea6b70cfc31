package allocator_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// adv3Updater counts fetches and runs a hook.
type adv3Updater struct {
	n     int
	calls atomic.Int32
	f     func(ctx context.Context, call int32, i int) ([]string, error)
}

func (u *adv3Updater) Sources() int { return u.n }
func (u *adv3Updater) Fetch(ctx context.Context, i int) ([]string, error) {
	c := u.calls.Add(1)
	return u.f(ctx, c, i)
}

// StartRefresher: a Fetch that honours ctx but hangs until it ends keeps
// the refresher's loop stuck forever: its ctx is the loop's, which is not
// bounded by the interval (unlike the malloc-started refresh), so the pool
// is never refreshed again while nobody mallocs.
func TestAdv3RefresherHungFetchNotBounded(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		u := &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
			if call == 1 {
				<-ctx.Done() // honours ctx
				return nil, ctx.Err()
			}
			return []string{"r0", "r1"}, nil
		}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: 100 * time.Millisecond}))
		bg := must[*allocator.Background](t)(a.StartRefresher(ctx))
		defer bg.Stop()
		time.Sleep(800 * time.Millisecond)
		if n := u.calls.Load(); n < 2 {
			ks, _ := a.Keys(ctx)
			t.Fatalf("after 8 intervals the refresher fetched %d time(s); pool %v (a refresh should end within its interval)", n, ks)
		}
	})
}

// A failing Updater never fails malloc, releases the lock (another process
// can refresh at once) and is retried at the next interval.
func TestAdv3FailingUpdater(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		var fail atomic.Bool
		fail.Store(true)
		mk := func(panicky bool) *adv3Updater {
			return &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
				if fail.Load() {
					if panicky {
						panic("boom")
					}
					return nil, errors.New("source down")
				}
				return []string{"r0", "r1", "r2"}, nil
			}}
		}
		for _, panicky := range []bool{false, true} {
			u := mk(panicky)
			a := tg.allocOn(t, ns, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: 300 * time.Millisecond}))
			ok(t, errOnly(a.Extend(ctx, []string{"s0"})))
			for range 20 {
				l, err := a.MallocLease(ctx)
				if err != nil {
					t.Fatalf("malloc with a failing updater: %v", err)
				}
				ok(t, l.Free(ctx))
			}
			deadline := time.Now().Add(2 * time.Second)
			for u.calls.Load() < 1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond)
			if n := u.calls.Load(); n != 1 {
				t.Fatalf("fetches after 20 quick mallocs: %d, want 1", n)
			}
			// lock released: another process can refresh now
			fail.Store(false)
			u2 := mk(false)
			b := tg.allocOn(t, ns, allocator.WithPolicy(allocator.Policy{Updater: u2, RefreshInterval: 300 * time.Millisecond}))
			did, err := b.RefreshIfDue(ctx)
			if err != nil || !did {
				t.Fatalf("panicky=%v: RefreshIfDue by another process after a failed refresh: %v %v (lock not released)", panicky, did, err)
			}
			ks := sorted(must[[]string](t)(a.Keys(ctx)))
			if len(ks) != 3 {
				t.Fatalf("keys %v", ks)
			}
			fail.Store(true)
			ok(t, a.Close())
			ok(t, b.Close())
			checkInvariants(t, a)
			ok(t, errOnly(a.Clear(ctx)))
			// the lock is now held by b's successful refresh; wait it out
			time.Sleep(350 * time.Millisecond)
		}
	})
}

// Refresh at most once per interval across processes.
func TestAdv3RefreshOncePerIntervalAcrossProcesses(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		var total atomic.Int32
		var mu sync.Mutex
		var times []time.Time
		interval := 250 * time.Millisecond
		var as []*allocator.Allocator
		for range 3 {
			u := &adv3Updater{n: 2, f: func(ctx context.Context, call int32, i int) ([]string, error) {
				if i == 0 {
					total.Add(1)
					mu.Lock()
					times = append(times, time.Now())
					mu.Unlock()
				}
				return []string{"r0", "r1", "r2", "r3"}, nil
			}}
			a := tg.allocOn(t, ns, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: interval, MemberTTL: time.Minute, Shuffle: true, GCCount: 5}))
			as = append(as, a)
		}
		bg := must[*allocator.Background](t)(as[0].StartRefresher(ctx))
		defer bg.Stop()
		start := time.Now()
		var wg sync.WaitGroup
		for _, a := range as {
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Since(start) < 1500*time.Millisecond {
						l, err := a.MallocLease(ctx, allocator.WithLeaseTTL(time.Second))
						if errors.Is(err, allocator.ErrNoneAvailable) {
							time.Sleep(time.Millisecond)
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						_ = l.Free(ctx)
					}
				}()
			}
		}
		wg.Wait()
		el := time.Since(start)
		mu.Lock()
		defer mu.Unlock()
		max := int32(el/interval) + 1
		for i := 1; i < len(times); i++ {
			if d := times[i].Sub(times[i-1]); d < interval-20*time.Millisecond {
				t.Errorf("refreshes %d and %d only %v apart", i-1, i, d)
			}
		}
		if n := total.Load(); n > max || n < 3 {
			t.Fatalf("%d refreshes in %v with interval %v (want ≤ %d and a few)", n, el, interval, max)
		}
		checkInvariants(t, as[0])
	})
}

// Close returns promptly while a background refresh hangs (honouring ctx),
// and leaves no goroutine behind.
func TestAdv3CloseWhileRefreshing(t *testing.T) {
	ctx := context.Background()
	tg := targets[0]
	base := runtime.NumGoroutine()
	for round := 0; round < 5; round++ {
		started := make(chan struct{}, 1)
		u := &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: time.Minute}))
		ok(t, errOnly(a.Extend(ctx, []string{"r0"})))
		bg := must[*allocator.Background](t)(a.StartRefresher(ctx))
		hc := must[*allocator.Background](t)(a.StartHealthChecker(ctx, 10*time.Millisecond, func(ctx context.Context, key string) error { return nil }))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx))
		ok(t, l.KeepAlive(ctx))
		<-started
		t0 := time.Now()
		ok(t, a.Close())
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("Close took %v", d)
		}
		select {
		case <-bg.Done():
		default:
			t.Fatal("refresher not done after Close")
		}
		select {
		case <-hc.Done():
		default:
			t.Fatal("health checker not done after Close")
		}
		bg.Stop()
		hc.Stop()
		ok(t, l.Free(ctx))
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("malloc after close: %v", err)
		}
	}
	var n int
	for range 100 {
		n = runtime.NumGoroutine()
		if n <= base+3 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	t.Fatalf("goroutines %d before, %d after Close\n%s", base, n, buf)
}

// The malloc-started background refresh: at most one in flight; a slow
// updater does not slow malloc.
func TestAdv3BackgroundRefreshOneInFlight(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		var inflight, peak atomic.Int32
		u := &adv3Updater{n: 1, f: func(ctx context.Context, call int32, _ int) ([]string, error) {
			n := inflight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			defer inflight.Add(-1)
			select {
			case <-time.After(300 * time.Millisecond):
			case <-ctx.Done():
			}
			return []string{"r0", "r1"}, nil
		}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: u, RefreshInterval: 50 * time.Millisecond}))
		ok(t, errOnly(a.Extend(ctx, []string{"r0", "r1"})))
		start := time.Now()
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Since(start) < time.Second {
					t0 := time.Now()
					l, err := a.MallocLease(ctx)
					if d := time.Since(t0); d > 500*time.Millisecond {
						t.Errorf("malloc took %v", d)
					}
					if err == nil {
						_ = l.Free(ctx)
					}
				}
			}()
		}
		wg.Wait()
		if p := peak.Load(); p > 1 {
			t.Fatalf("%d refreshes in flight at once", p)
		}
	})
}
