package allocator_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// One hanging check (ignoring ctx), one panicking, one failing: the run
// ends in about one timeout, counts them, quarantines the bad ones, leaves
// leases alone, and the quarantined members come back after the cooldown.
func TestAdv3HealthMixed(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 12))))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))) // r0
		block := make(chan struct{})
		defer close(block)
		var running, peak atomic.Int32
		var mu sync.Mutex
		reports := map[string]error{}
		check := func(ctx context.Context, key string) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			switch key {
			case "r0":
				return errors.New("leased one is bad")
			case "r1":
				<-block // ignores ctx
				return nil
			case "r2":
				panic("boom")
			case "r3":
				<-ctx.Done()
				return ctx.Err()
			case "r4":
				var s []int
				_ = s[len(key)] // runtime panic: index out of range
			}
			time.Sleep(5 * time.Millisecond)
			return nil
		}
		t0 := time.Now()
		h, u, err := a.HealthCheck(ctx, check, allocator.WithCheckConcurrency(3), allocator.WithCheckTimeout(150*time.Millisecond),
			allocator.WithCooldown(400*time.Millisecond), allocator.WithCheckReport(func(k string, e error) { mu.Lock(); reports[k] = e; mu.Unlock() }))
		d := time.Since(t0)
		if err != nil || h != 7 || u != 5 {
			t.Fatalf("HealthCheck = %d healthy, %d unhealthy, %v; reports %v", h, u, err, reports)
		}
		if d > time.Second {
			t.Fatalf("run took %v", d)
		}
		if !errors.Is(reports["r2"], allocator.ErrCheckPanic) || !errors.Is(reports["r4"], allocator.ErrCheckPanic) || !errors.Is(reports["r1"], allocator.ErrCheckTimeout) {
			t.Fatalf("reports %v", reports)
		}
		ok(t, l.Renew(ctx, time.Minute))
		s := checkInvariants(t, a)
		if len(s.Free) != 7 {
			t.Fatalf("free %v", s.Free)
		}
		// the leased bad member keeps its lease, stays out when freed
		ok(t, l.Free(ctx))
		s = checkInvariants(t, a)
		if len(s.Free) != 7 {
			t.Fatalf("free after freeing the quarantined lease: %v", s.Free)
		}
		time.Sleep(450 * time.Millisecond)
		var got []string
		for {
			l, err := a.MallocLease(ctx)
			if err != nil {
				break
			}
			got = append(got, l.Key())
		}
		if len(got) != 12 {
			t.Fatalf("after the cooldown malloc got %d members: %v", len(got), sorted(got))
		}
		checkInvariants(t, a)
	})
}

// StartHealthChecker: Stop idempotent and concurrent, Done closed, Close
// afterwards fine; a ctx already ended.
func TestAdv3HealthCheckerStop(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 3))))
		var runs atomic.Int32
		bg := must[*allocator.Background](t)(a.StartHealthChecker(ctx, 20*time.Millisecond, func(ctx context.Context, key string) error {
			runs.Add(1)
			if key == "r1" {
				return errors.New("bad")
			}
			return nil
		}, allocator.WithCooldown(time.Hour)))
		time.Sleep(150 * time.Millisecond)
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() { defer wg.Done(); bg.Stop() }()
		}
		wg.Wait()
		<-bg.Done()
		n := runs.Load()
		time.Sleep(60 * time.Millisecond)
		if runs.Load() != n {
			t.Fatal("checks ran after Stop")
		}
		s := checkInvariants(t, a)
		if len(s.Free) != 2 {
			t.Fatalf("free %v", s.Free)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		bg2 := must[*allocator.Background](t)(a.StartHealthChecker(cctx, time.Millisecond, func(ctx context.Context, key string) error { return nil }))
		select {
		case <-bg2.Done():
		case <-time.After(time.Second):
			t.Fatal("checker with an ended ctx still running")
		}
		ok(t, a.Close())
		if _, err := a.StartHealthChecker(ctx, time.Millisecond, func(ctx context.Context, key string) error { return nil }); !errors.Is(err, allocator.ErrClosed) {
			t.Fatalf("after Close: %v", err)
		}
	})
}

// ctx ending mid-run quarantines nothing.
func TestAdv3HealthCtxEnds(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 10))))
		cctx, cancel := context.WithCancel(ctx)
		var n atomic.Int32
		_, _, err := a.HealthCheck(cctx, func(ctx context.Context, key string) error {
			if n.Add(1) == 5 {
				cancel()
			}
			return errors.New("bad")
		}, allocator.WithCheckConcurrency(1))
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v", err)
		}
		s := checkInvariants(t, a)
		if len(s.Free) != 10 {
			t.Fatalf("quarantined after a cut-short run: free %v", s.Free)
		}
	})
}
