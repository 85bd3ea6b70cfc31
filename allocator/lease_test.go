package allocator_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

func TestLeaseKeepAliveAndLost(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(300*time.Millisecond)))
		kctx, stop := context.WithCancel(ctx)
		ok(t, l.KeepAlive(kctx))
		time.Sleep(time.Second)
		select {
		case <-l.Lost():
			t.Fatalf("kept-alive lease lost: %v", l.Err())
		default:
		}
		// Nobody else can take it meanwhile.
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("kept-alive lease handed out: %v", err)
		}
		// Forced free: the next renewal reports the loss.
		ok(t, errOnly(a.FreeKeys(ctx, "r")))
		select {
		case <-l.Lost():
			if !errors.Is(l.Err(), allocator.ErrNotHeld) || errors.Is(l.Err(), allocator.ErrFreed) {
				t.Fatalf("Err = %v", l.Err())
			}
		case <-time.After(2 * time.Second):
			t.Fatal("loss after FreeKeys not reported")
		}
		stop()

		// Without renewal, Lost closes before the server could regrant.
		start := time.Now()
		l2 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(200*time.Millisecond)))
		// Its validity ends before the server's TTL can (which started after
		// start); Lost closes then (a timer: late only if the process is).
		if vu := l2.ValidUntil(); vu.After(start.Add(200 * time.Millisecond)) {
			t.Fatalf("valid until %v after the malloc began, past the TTL", vu.Sub(start))
		}
		<-l2.Lost()
		time.Sleep(time.Until(start.Add(250 * time.Millisecond)))
		if err := l2.KeepAlive(ctx); !errors.Is(err, allocator.ErrNotHeld) {
			t.Fatalf("KeepAlive of a lost lease: %v", err)
		}
		perm := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(0)))
		if err := perm.KeepAlive(ctx); !errors.Is(err, allocator.ErrInvalidArgument) {
			t.Fatalf("KeepAlive of a permanent lease: %v", err)
		}
		// Free stops the renewals.
		ok(t, errOnly(a.FreeKeys(ctx, perm.Key())))
		l3 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(300*time.Millisecond)))
		ok(t, l3.KeepAlive(ctx))
		ok(t, l3.Free(ctx))
		<-l3.Lost()
		if !errors.Is(l3.Err(), allocator.ErrFreed) {
			t.Fatalf("Err after Free = %v", l3.Err())
		}
		checkInvariants(t, a)
	})
}

// TestLostFirstWatchedAfterExpiry: Lost, first called once the validity
// has run out, returns a closed channel (it used to close it twice and
// panic).
func TestLostFirstWatchedAfterExpiry(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(50*time.Millisecond)))
		time.Sleep(80 * time.Millisecond)
		select {
		case <-l.Lost():
		default:
			t.Fatal("Lost open after the validity ran out")
		}
		time.Sleep(20 * time.Millisecond) // the server's TTL ends too
		err := l.Free(ctx)
		if !errors.Is(err, allocator.ErrNotHeld) || !strings.Contains(err.Error(), "on the server") {
			t.Fatalf("late Free: %v", err)
		}
	})
}
