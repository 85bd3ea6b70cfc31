package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// failOn returns a check that fails for the given keys.
func failOn(bad ...string) allocator.CheckFunc {
	return func(_ context.Context, key string) error {
		if slices.Contains(bad, key) {
			return fmt.Errorf("%s is down", key)
		}
		return nil
	}
}

// quarantined returns the members quarantined at the snapshot's time.
func quarantined(s *allocator.Snapshot) []string {
	var out []string
	for k, m := range s.Members {
		if m.QuarantinedUntil.After(s.Now) {
			out = append(out, k)
		}
	}
	return sorted(out)
}

func TestHealthCheckQuarantineAndReturn(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, names("r", 5))))
		ok(t, a.UpdateSoftBind(ctx, "sticky", "r1", 0))

		h, u, err := a.HealthCheck(ctx, failOn("r1", "r3"), allocator.WithCooldown(time.Minute))
		ok(t, err)
		if h != 3 || u != 2 {
			t.Fatalf("HealthCheck = %d healthy, %d unhealthy; want 3, 2", h, u)
		}
		s := checkInvariants(t, a)
		if q := quarantined(s); !slices.Equal(q, []string{"r1", "r3"}) {
			t.Fatalf("quarantined = %v, want [r1 r3]", q)
		}
		if got, want := s.Members["r1"].QuarantinedUntil, clk.Now().Add(time.Minute); !got.Equal(want) {
			t.Fatalf("r1 quarantined until %v, want %v", got, want)
		}
		if _, found, err := a.GetSoftBind(ctx, "sticky"); err != nil || found {
			t.Fatalf("binding to an unhealthy member survived: %v %v", found, err)
		}

		var got []string
		for range 3 {
			got = append(got, must[*allocator.Lease](t)(a.MallocLease(ctx)).Key())
		}
		if !slices.Equal(sorted(got), []string{"r0", "r2", "r4"}) {
			t.Fatalf("allocated %v, want the healthy r0 r2 r4", got)
		}
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("malloc with only quarantined members free: %v", err)
		}

		clk.Advance(time.Minute)
		got = got[:0]
		for range 2 {
			got = append(got, must[*allocator.Lease](t)(a.MallocLease(ctx)).Key())
		}
		if !slices.Equal(sorted(got), []string{"r1", "r3"}) {
			t.Fatalf("after the cooldown allocated %v, want r1 r3", got)
		}
		checkInvariants(t, a)
	})
}

func TestHealthCheckHangingAndPanickingChecks(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"hang", "boom", "ok1", "ok2", "ok3"})))
		release := make(chan struct{})
		defer close(release)
		check := func(_ context.Context, key string) error {
			switch key {
			case "hang":
				<-release // ignores its ctx
			case "boom":
				panic("check exploded")
			}
			return nil
		}
		var mu sync.Mutex
		reports := map[string]error{}
		report := func(key string, err error) {
			mu.Lock()
			reports[key] = err
			mu.Unlock()
		}
		start := time.Now()
		h, u, err := a.HealthCheck(ctx, check, allocator.WithCheckTimeout(100*time.Millisecond),
			allocator.WithCheckConcurrency(1), allocator.WithCheckReport(report))
		ok(t, err)
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("a hanging check held the run up for %v", took)
		}
		if h != 3 || u != 2 {
			t.Fatalf("HealthCheck = %d healthy, %d unhealthy; want 3, 2", h, u)
		}
		mu.Lock()
		defer mu.Unlock()
		if !errors.Is(reports["hang"], allocator.ErrCheckTimeout) {
			t.Fatalf("hanging check reported %v", reports["hang"])
		}
		if !errors.Is(reports["boom"], allocator.ErrCheckPanic) {
			t.Fatalf("panicking check reported %v", reports["boom"])
		}
		if len(reports) != 5 || reports["ok1"] != nil {
			t.Fatalf("reports = %v", reports)
		}
		if q := quarantined(checkInvariants(t, a)); !slices.Equal(q, []string{"boom", "hang"}) {
			t.Fatalf("quarantined = %v, want [boom hang]", q)
		}
	})
}

func TestHealthCheckLeasedMember(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"busy", "idle"})))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
		if l.Key() != "busy" {
			t.Fatalf("leased %s, want busy", l.Key())
		}
		if _, u, err := a.HealthCheck(ctx, failOn("busy")); err != nil || u != 1 {
			t.Fatalf("HealthCheck: %d unhealthy, %v", u, err)
		}
		s := checkInvariants(t, a)
		if _, leased := s.Leases["busy"]; !leased {
			t.Fatal("the unhealthy member lost its lease")
		}
		ok(t, l.Renew(ctx, time.Hour)) // the holder keeps it
		ok(t, l.Free(ctx))
		s = checkInvariants(t, a)
		if s.Members["busy"].Free {
			t.Fatal("a quarantined member came back when its lease ended")
		}
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "idle" {
			t.Fatalf("allocated %s, want idle", k)
		}
		clk.Advance(allocator.DefaultCooldown)
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "busy" {
			t.Fatalf("after the cooldown allocated %s, want busy", k)
		}
		checkInvariants(t, a)
	})
}

func TestHealthCheckOnlyFreeMember(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"solo"})))
		if h, u, err := a.HealthCheck(ctx, failOn("solo"), allocator.WithCooldown(30*time.Second)); err != nil || h != 0 || u != 1 {
			t.Fatalf("HealthCheck = %d, %d, %v", h, u, err)
		}
		if _, found, err := a.MallocKey(ctx); err != nil || found {
			t.Fatalf("MallocKey with the only member quarantined: %v %v", found, err)
		}
		clk.Advance(29 * time.Second)
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("malloc before the cooldown ended: %v", err)
		}
		clk.Advance(time.Second)
		if k := must[*allocator.Lease](t)(a.MallocLease(ctx)).Key(); k != "solo" {
			t.Fatalf("allocated %s", k)
		}
		checkInvariants(t, a)
	})
}

func TestHealthCheckSharedMode(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clk := newFakeClock()
		a := tg.newAlloc(t, allocator.WithShared(), allocator.WithClock(clk.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c"})))
		if _, u, err := a.HealthCheck(ctx, failOn("b")); err != nil || u != 1 {
			t.Fatalf("HealthCheck: %d unhealthy, %v", u, err)
		}
		seen := map[string]int{}
		for range 9 {
			seen[must[*allocator.Lease](t)(a.MallocLease(ctx)).Key()]++
		}
		if seen["b"] != 0 || seen["a"] == 0 || seen["c"] == 0 {
			t.Fatalf("shared mallocs during the quarantine: %v", seen)
		}
		clk.Advance(allocator.DefaultCooldown)
		clear(seen)
		for range 9 {
			seen[must[*allocator.Lease](t)(a.MallocLease(ctx)).Key()]++
		}
		if seen["b"] == 0 {
			t.Fatalf("b did not come back after the cooldown: %v", seen)
		}
		checkInvariants(t, a)
	})
}

func TestHealthCheckCancelled(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("k", 20))))
		cctx, cancel := context.WithCancel(ctx)
		var calls atomic.Int32
		check := func(ctx context.Context, key string) error {
			if calls.Add(1) == 3 {
				cancel()
			}
			<-ctx.Done()
			return ctx.Err()
		}
		_, _, err := a.HealthCheck(cctx, check, allocator.WithCheckConcurrency(4))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("HealthCheck with a cancelled ctx: %v", err)
		}
		if q := quarantined(checkInvariants(t, a)); len(q) != 0 {
			t.Fatalf("a cancelled run quarantined %v", q)
		}
	})
}

func TestHealthCheckInvalidArguments(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		for name, opt := range map[string]allocator.HealthOption{
			"zero concurrency":  allocator.WithCheckConcurrency(0),
			"zero timeout":      allocator.WithCheckTimeout(0),
			"negative cooldown": allocator.WithCooldown(-time.Second),
		} {
			if _, _, err := a.HealthCheck(ctx, failOn(), opt); !errors.Is(err, allocator.ErrInvalidArgument) {
				t.Errorf("HealthCheck with %s: %v", name, err)
			}
			if _, err := a.StartHealthChecker(ctx, time.Second, failOn(), opt); !errors.Is(err, allocator.ErrInvalidArgument) {
				t.Errorf("StartHealthChecker with %s: %v", name, err)
			}
		}
		if _, _, err := a.HealthCheck(ctx, nil); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("HealthCheck with a nil check: %v", err)
		}
		if _, err := a.StartHealthChecker(ctx, 0, failOn()); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Errorf("StartHealthChecker with interval 0: %v", err)
		}
	})
}

func TestStartHealthChecker(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"good", "bad"})))
		var runs atomic.Int32
		check := func(_ context.Context, key string) error {
			if key == "good" {
				runs.Add(1)
				return nil
			}
			return errors.New("down")
		}
		bg := must[*allocator.Background](t)(a.StartHealthChecker(ctx, 30*time.Millisecond, check))
		eventually(t, 2*time.Second, "three runs", func() bool { return runs.Load() >= 3 })
		if q := quarantined(checkInvariants(t, a)); !slices.Equal(q, []string{"bad"}) {
			t.Fatalf("quarantined = %v, want [bad]", q)
		}

		// Stopped by its ctx.
		cctx, cancel := context.WithCancel(ctx)
		bg2 := must[*allocator.Background](t)(a.StartHealthChecker(cctx, time.Hour, check))
		cancel()
		<-bg2.Done()

		// Stopped by Close.
		ok(t, a.Close())
		<-bg.Done()
		n := runs.Load()
		time.Sleep(100 * time.Millisecond)
		if runs.Load() != n {
			t.Fatal("the health checker runs after Close")
		}
		if _, err := a.StartHealthChecker(ctx, time.Second, check); !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("StartHealthChecker after Close: %v", err)
		}
		bg.Stop() // idempotent after Close
	})
}
