package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// stall makes the server stall (DEBUG SLEEP) for d from another connection,
// returning once the stall has begun.
func stall(t *testing.T, srv *redistest.Srv, d time.Duration) <-chan error {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: d + 5*time.Second})
	done := make(chan error, 1)
	go func() {
		done <- c.Do(context.Background(), "DEBUG", "SLEEP", d.Seconds()).Err()
		_ = c.Close()
	}()
	time.Sleep(50 * time.Millisecond)
	return done
}

// TestAdvMallocUnknownOutcomePermanentLeak: a MallocLease of a permanent
// lease whose reply is lost (the client gave up while the server stalled;
// the server ran the script afterwards) leaves a permanent lease nobody
// holds: no GC or malloc ever reclaims it, and nothing in the API can find
// its token to free it. The pool's only member is gone for good.
func TestAdvMallocUnknownOutcomePermanentLeak(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t, "--enable-debug-command", "yes")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	a, err := allocator.New(c, redistest.Namespace(t))
	ok(t, err)
	defer a.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"only"})))
	ok(t, must[*allocator.Lease](t)(a.MallocLease(ctx)).Free(ctx)) // scripts loaded
	checkInvariants(t, a)
	done := stall(t, srv, time.Second)
	_, err = a.MallocLease(ctx, allocator.WithLeaseTTL(0))
	if err == nil {
		t.Fatal("malloc answered during the stall")
	}
	t.Logf("malloc: %v", err)
	ok(t, <-done)
	// The give-back runs in the background, with retries: wait for it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ok(t, errOnly(a.GC(ctx, 1000)))
		s := checkInvariants(t, a)
		li, leased := s.Leases["only"]
		if !leased {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a malloc that reported failure left a permanent lease nobody holds: %+v (free %v); GC never reclaims it", li, s.Free)
		}
	}
}

// TestAdvMallocWaitUnknownOutcomeSelfDeadlock: a MallocWait whose first
// turn's reply is lost (the server stalled past the client's read timeout)
// takes the resource directly in that turn, then retries, joins the queue
// and waits for the resource it holds itself, until its ctx ends. The
// resource stays leased (permanently) to a token nobody has.
func TestAdvMallocWaitUnknownOutcomeSelfDeadlock(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t, "--enable-debug-command", "yes")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 300 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	a, err := allocator.New(c, redistest.Namespace(t))
	ok(t, err)
	defer a.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"only"})))
	// Warm up: subscribe and load the scripts.
	l := must[*allocator.Lease](t)(a.MallocWait(ctx, allocator.WithLeaseTTL(0)))
	ok(t, l.Free(ctx))
	checkInvariants(t, a)

	done := stall(t, srv, time.Second)
	wctx, cancel := context.WithTimeout(ctx, 4*time.Second)
	defer cancel()
	l, err = a.MallocWait(wctx, allocator.WithLeaseTTL(0))
	ok(t, <-done)
	if err == nil {
		t.Logf("MallocWait got %q", l.Key())
		ok(t, l.Free(ctx))
	} else {
		t.Logf("MallocWait: %v", err)
	}
	ok(t, errOnly(a.GC(ctx, 1000)))
	s := checkInvariants(t, a)
	if li, leased := s.Leases["only"]; leased {
		t.Fatalf("MallocWait (err=%v) left %q leased to nobody: %+v; waiters %v", err, "only", li, s.Waiters)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("MallocWait waited for its own resource until ctx ended")
	}
}

// TestLateRequestAfterGiveBack: the give-back after a request of unknown
// outcome may run before the request itself reaches Redis (it travels on
// another connection). The request must then grant nothing.
func TestLateRequestAfterGiveBack(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		// A permanent malloc: give-back first, then the late request.
		ok(t, a.GiveBackToken(ctx, "late-malloc-token"))
		v, err := a.LateMalloc(ctx, "late-malloc-token", 0)
		ok(t, err)
		if r, _ := v.([]any); len(r) != 1 || r[0] != int64(0) {
			t.Fatalf("late malloc after its give-back: %v", v)
		}
		if s := checkInvariants(t, a); len(s.Leases) != 0 || len(s.Free) != 1 {
			t.Fatalf("the late malloc granted: %+v", s)
		}
		// A MallocWait turn: leave first, then the late turn.
		ok(t, a.LeaveWait(ctx, "late-waiter", "late-wait-token"))
		v, err = a.LateWaitTurn(ctx, "late-waiter", "late-wait-token", 0)
		ok(t, err)
		if r, _ := v.([]any); len(r) != 1 || r[0] != int64(-2) {
			t.Fatalf("late turn after its leave: %v", v)
		}
		if s := checkInvariants(t, a); len(s.Leases) != 0 || len(s.Free) != 1 || len(s.Waiters) != 0 {
			t.Fatalf("the late turn changed the pool: %+v", s)
		}
		// Other tokens are not affected.
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(0)))
		ok(t, l.Free(ctx))
	})
}
