package allocator_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// source is a test Updater source whose keys, failure and calls the test
// controls.
type source struct {
	mu     sync.Mutex
	keys   []string
	err    error
	calls  []time.Time
	block  chan struct{} // when set, Fetch waits for it to close or ctx
	ctxErr error         // the ctx error a blocked Fetch saw
}

func (s *source) set(keys []string, err error) {
	s.mu.Lock()
	s.keys, s.err = keys, err
	s.mu.Unlock()
}

func (s *source) fetch(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, time.Now())
	block := s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			s.mu.Lock()
			s.ctxErr = ctx.Err()
			s.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys), s.err
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *source) times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func TestPolicyGCBeforeMalloc(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		for _, tt := range []struct {
			name   string
			policy *allocator.Policy
			want   error
		}{
			{"no policy", nil, allocator.ErrNoneAvailable},
			{"gc count 0", &allocator.Policy{}, allocator.ErrNoneAvailable},
			{"gc count 4", &allocator.Policy{GCCount: 4}, nil},
		} {
			clk := newFakeClock()
			opts := []allocator.Option{allocator.WithClock(clk.Now), allocator.WithReclaimBudget(0)}
			if tt.policy != nil {
				opts = append(opts, allocator.WithPolicy(*tt.policy))
			}
			a := tg.newAlloc(t, opts...)
			ok(t, errOnly(a.Extend(ctx, []string{"x"})))
			must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Second)))
			clk.Advance(2 * time.Second) // the lease expired; only a GC reclaims it
			if _, err := a.MallocLease(ctx); !errors.Is(err, tt.want) {
				t.Errorf("%s: malloc after the lease expired: %v, want %v", tt.name, err, tt.want)
			}
		}
	})
}

func TestPolicyRefreshOneSourceAssigns(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		src := &source{keys: []string{"a", "b", "c"}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{
			Updater: allocator.UpdaterFunc(src.fetch), MemberTTL: time.Hour, Shuffle: true,
		}))
		ok(t, a.Refresh(ctx))
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("Keys = %v", got)
		}
		s := checkInvariants(t, a)
		if exp := s.Members["a"].ExpiresAt; exp.Before(s.Now.Add(59*time.Minute)) || exp.After(s.Now.Add(time.Hour)) {
			t.Fatalf("membership expiry %v, want an hour after %v", exp, s.Now)
		}
		l := must[*allocator.Lease](t)(a.MallocLease(ctx))

		// The next refresh makes the membership exactly the source's; a
		// leased member that leaves keeps its lease.
		src.set([]string{"d", "", "d", "x"}, nil) // "" is dropped, "d" deduplicated
		ok(t, a.Refresh(ctx))
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"d", "x"}) {
			t.Fatalf("Keys after the second refresh = %v", got)
		}
		ok(t, l.Renew(ctx, time.Minute))

		// An empty result changes nothing; an error is returned.
		src.set(nil, nil)
		ok(t, a.Refresh(ctx))
		src.set([]string{"y"}, errors.New("source down"))
		if err := a.Refresh(ctx); err == nil {
			t.Fatal("Refresh with a failing source returned nil")
		}
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"d", "x"}) {
			t.Fatalf("Keys after an empty and a failed refresh = %v", got)
		}
		checkInvariants(t, a)
	})
}

func TestPolicyRefreshSeveralSourcesExtend(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		s1 := &source{keys: []string{"a", "b"}}
		s2 := &source{keys: []string{"c"}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{
			Updater: allocator.UpdaterFuncs{s1.fetch, s2.fetch},
		}))
		ok(t, a.Refresh(ctx))
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("Keys = %v", got)
		}
		// Several sources only extend: "b" stays though no source lists it.
		s1.set([]string{"a", "e"}, nil)
		s2.set(nil, errors.New("source 2 down"))
		if err := a.Refresh(ctx); err == nil {
			t.Fatal("Refresh with a failing source returned nil")
		}
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"a", "b", "c", "e"}) {
			t.Fatalf("Keys = %v, want the other source applied", got)
		}
		checkInvariants(t, a)
	})
}

func TestPolicyRefreshOncePerIntervalAcrossProcesses(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		const interval = 250 * time.Millisecond
		src := &source{keys: names("k", 4)}
		ns := redistest.Namespace(t)
		p := allocator.Policy{Updater: allocator.UpdaterFunc(src.fetch), RefreshInterval: interval}
		a := tg.allocOn(t, ns, allocator.WithPolicy(p))
		b := tg.allocOn(t, ns, allocator.WithPolicy(p))

		if !must[bool](t)(a.RefreshIfDue(ctx)) {
			t.Fatal("the first RefreshIfDue did not run")
		}
		if must[bool](t)(b.RefreshIfDue(ctx)) || must[bool](t)(a.RefreshIfDue(ctx)) {
			t.Fatal("a second refresh ran within the interval")
		}
		// Both allocators malloc for a while; the refreshes they start keep
		// an interval apart.
		end := time.Now().Add(900 * time.Millisecond)
		for time.Now().Before(end) {
			for _, x := range []*allocator.Allocator{a, b} {
				l := must[*allocator.Lease](t)(x.MallocLease(ctx))
				ok(t, l.Free(ctx))
			}
			time.Sleep(5 * time.Millisecond)
		}
		calls := src.times()
		if len(calls) < 3 {
			t.Fatalf("%d refreshes in a second with an interval of %v", len(calls), interval)
		}
		for i := 1; i < len(calls); i++ {
			if gap := calls[i].Sub(calls[i-1]); gap < interval-20*time.Millisecond {
				t.Fatalf("refreshes %d and %d only %v apart", i-1, i, gap)
			}
		}
		checkInvariants(t, a)
	})
}

func TestPolicyFailingUpdaterNeverBreaksMalloc(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		const interval = 200 * time.Millisecond

		// A failed refresh releases the lock: another process takes over
		// at once.
		src := &source{err: errors.New("source down")}
		ns := redistest.Namespace(t)
		p := allocator.Policy{Updater: allocator.UpdaterFunc(src.fetch), RefreshInterval: interval}
		a := tg.allocOn(t, ns, allocator.WithPolicy(p))
		b := tg.allocOn(t, ns, allocator.WithPolicy(p))
		ok(t, errOnly(a.Extend(ctx, []string{"seed"})))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx)) // starts the failing refresh
		ok(t, l.Free(ctx))
		eventually(t, time.Second, "the refresh runs", func() bool { return src.count() == 1 })
		src.set([]string{"fresh"}, nil)
		eventually(t, time.Second, "another process takes over", func() bool { return must[bool](t)(b.RefreshIfDue(ctx)) })
		if got := must[[]string](t)(a.Keys(ctx)); !slices.Equal(got, []string{"fresh"}) {
			t.Fatalf("Keys = %v, want [fresh]", got)
		}

		// A failed refresh is retried at the next interval, not before.
		src2 := &source{err: errors.New("source down")}
		c := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: allocator.UpdaterFunc(src2.fetch), RefreshInterval: interval}))
		ok(t, errOnly(c.Extend(ctx, []string{"seed"})))
		start := time.Now()
		must[*allocator.Lease](t)(c.MallocLease(ctx))
		eventually(t, time.Second, "the refresh runs", func() bool { return src2.count() == 1 })
		src2.set([]string{"fresh"}, nil)
		for time.Since(start) < interval-50*time.Millisecond {
			_, _, err := c.MallocKey(ctx)
			ok(t, err)
			time.Sleep(10 * time.Millisecond)
		}
		if n := src2.count(); n != 1 {
			t.Fatalf("%d refreshes within the interval after a failure", n)
		}
		time.Sleep(time.Until(start.Add(interval)))
		eventually(t, time.Second, "the retry", func() bool {
			_, _, err := c.MallocKey(ctx)
			ok(t, err)
			ks, err := c.Keys(ctx)
			return err == nil && slices.Equal(ks, []string{"fresh"})
		})

		// A panicking updater is an error too.
		d := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: allocator.UpdaterFunc(func(context.Context) ([]string, error) {
			panic("updater exploded")
		})}))
		ok(t, errOnly(d.Extend(ctx, []string{"seed"})))
		if err := d.Refresh(ctx); err == nil {
			t.Fatal("Refresh with a panicking updater returned nil")
		}
		must[*allocator.Lease](t)(d.MallocLease(ctx))
		if ran, err := d.RefreshIfDue(ctx); !ran || err == nil {
			t.Fatalf("RefreshIfDue after a failed Refresh: ran %v, %v; want it to run and fail", ran, err)
		}
	})
}

func TestPolicyRefreshNeverSlowsMalloc(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		// mallocFor mallocs on x for d and fails if one waits.
		mallocFor := func(x *allocator.Allocator, d time.Duration) {
			t.Helper()
			for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
				start := time.Now()
				l := must[*allocator.Lease](t)(x.MallocLease(ctx))
				// A blocked refresh would hold malloc for its whole 1 s.
				if took := time.Since(start); took > 500*time.Millisecond {
					t.Fatalf("malloc took %v while a refresh was blocked", took)
				}
				ok(t, l.Free(ctx))
			}
		}

		// A refresh blocked (until its ctx ends) slows no malloc; a second
		// does not start; Close cancels it and waits for it.
		src := &source{keys: []string{"x"}, block: make(chan struct{})}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: allocator.UpdaterFunc(src.fetch), RefreshInterval: time.Second}))
		ok(t, errOnly(a.Extend(ctx, []string{"seed"})))
		mallocFor(a, 300*time.Millisecond)
		if n := src.count(); n != 1 {
			t.Fatalf("%d refreshes, want 1", n)
		}
		ok(t, a.Close())
		// Close cancelled the refresh; the Fetch, abandoned by then, sees it
		// on its own goroutine.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			src.mu.Lock()
			ctxErr := src.ctxErr
			src.mu.Unlock()
			if ctxErr != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("Close did not cancel the blocked refresh")
			}
		}

		// An updater that ignores its ctx is abandoned at the end of the
		// interval and retried at the next; Close does not wait for it.
		const interval = 100 * time.Millisecond
		hang := make(chan struct{})
		defer close(hang)
		var mu sync.Mutex
		calls := 0
		b := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: allocator.UpdaterFunc(func(context.Context) ([]string, error) {
			mu.Lock()
			calls++
			mu.Unlock()
			<-hang
			return nil, nil
		}), RefreshInterval: interval}))
		ok(t, errOnly(b.Extend(ctx, []string{"seed"})))
		mallocFor(b, 3*interval+interval/2)
		mu.Lock()
		n := calls
		mu.Unlock()
		if n < 2 || n > 4 {
			t.Fatalf("%d refreshes in 3.5 intervals, want one per interval", n)
		}
		start := time.Now()
		ok(t, b.Close())
		if took := time.Since(start); took > interval+300*time.Millisecond {
			t.Fatalf("Close took %v with a hanging updater", took)
		}
	})
}

func TestStartRefresher(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		src := &source{keys: []string{"x"}}
		a := tg.newAlloc(t, allocator.WithPolicy(allocator.Policy{Updater: allocator.UpdaterFunc(src.fetch), RefreshInterval: 40 * time.Millisecond}))
		cctx, cancel := context.WithCancel(ctx)
		bg := must[*allocator.Background](t)(a.StartRefresher(cctx))
		eventually(t, 2*time.Second, "three refreshes", func() bool { return src.count() >= 3 })
		if got := must[[]string](t)(a.Keys(ctx)); !slices.Equal(got, []string{"x"}) {
			t.Fatalf("Keys = %v", got)
		}
		cancel()
		<-bg.Done()

		bg = must[*allocator.Background](t)(a.StartRefresher(ctx))
		ok(t, a.Close())
		<-bg.Done()
		n := src.count()
		time.Sleep(100 * time.Millisecond)
		if src.count() != n {
			t.Fatal("the refresher runs after Close")
		}
		if _, err := a.StartRefresher(ctx); !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("StartRefresher after Close: %v", err)
		}
	})
}

func TestPolicyInvalid(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		c := tg.client(t)
		ns := redistest.Namespace(t)
		for name, p := range map[string]allocator.Policy{
			"negative GC count": {GCCount: -1},
			"negative interval": {RefreshInterval: -time.Second},
			"sub-ms interval":   {RefreshInterval: time.Microsecond},
			"no sources":        {Updater: allocator.UpdaterFuncs{}},
		} {
			if _, err := allocator.New(c, ns, allocator.WithPolicy(p)); !errors.Is(err, allocator.ErrInvalidArgument) {
				t.Errorf("New with %s: %v", name, err)
			}
		}
		for _, opts := range [][]allocator.Option{nil, {allocator.WithPolicy(allocator.Policy{GCCount: 1})}} {
			a := tg.newAlloc(t, opts...)
			if err := a.Refresh(ctx); !errors.Is(err, allocator.ErrNoUpdater) {
				t.Errorf("Refresh without an updater: %v", err)
			}
			if _, err := a.RefreshIfDue(ctx); !errors.Is(err, allocator.ErrNoUpdater) {
				t.Errorf("RefreshIfDue without an updater: %v", err)
			}
			if _, err := a.StartRefresher(ctx); !errors.Is(err, allocator.ErrNoUpdater) {
				t.Errorf("StartRefresher without an updater: %v", err)
			}
		}
	})
}
