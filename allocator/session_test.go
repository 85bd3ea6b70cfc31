package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

func TestSessionLapseReclaimsAllItsLeases(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, names("r", 6))))
		s := must[*allocator.Session](t)(a.NewSession(ctx, time.Second))
		var ls []*allocator.Lease
		for range 4 {
			ls = append(ls, must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithSession(s), allocator.WithLeaseTTL(0))))
		}
		other := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(0)))
		snap := checkInvariants(t, a)
		if snap.Leases[ls[0].Key()].Session != s.ID() {
			t.Fatalf("lease not in the session: %+v", snap.Leases[ls[0].Key()])
		}
		// The process "dies": no more heartbeats. Time passes beyond the
		// session's TTL; one malloc reclaims all four leases at once.
		s.Orphan()
		clock.Advance(2 * time.Second)
		got := must[[]*allocator.Lease](t)(a.MallocN(ctx, 5))
		if len(got) != 5 {
			t.Fatalf("got %d", len(got))
		}
		snap = checkInvariants(t, a)
		if len(snap.Sessions) != 0 {
			t.Fatalf("lapsed session still listed: %v", snap.Sessions)
		}
		if _, still := snap.Leases[other.Key()]; !still {
			t.Fatal("a lease outside the session was reclaimed")
		}
		for _, l := range ls {
			if err := l.Renew(ctx, 0); !errors.Is(err, allocator.ErrNotHeld) {
				t.Fatalf("renew of a reclaimed session lease: %v", err)
			}
		}
		if _, err := a.MallocLease(ctx, allocator.WithSession(s)); !errors.Is(err, allocator.ErrSessionLost) {
			t.Fatalf("malloc in a lapsed session: %v", err)
		}
	})
}

func TestSessionCloseAndHeartbeat(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 3))))
		s := must[*allocator.Session](t)(a.NewSession(ctx, 300*time.Millisecond))
		ls := must[[]*allocator.Lease](t)(a.MallocN(ctx, 2, allocator.WithSession(s), allocator.WithLeaseTTL(0)))
		// Heartbeats keep it alive well past its TTL.
		time.Sleep(time.Second)
		select {
		case <-s.Done():
			t.Fatalf("session lost while heartbeating: %v", s.Err())
		default:
		}
		ok(t, errOnly(a.GC(ctx, 100)))
		if snap := checkInvariants(t, a); len(snap.Leases) != 2 {
			t.Fatalf("heartbeating session lost leases: %+v", snap.Leases)
		}
		if n := must[int](t)(s.Close(ctx)); n != 2 {
			t.Fatalf("Close ended %d leases", n)
		}
		<-s.Done()
		if !errors.Is(s.Err(), allocator.ErrSessionLost) {
			t.Fatalf("Err after Close: %v", s.Err())
		}
		if snap := checkInvariants(t, a); len(snap.Free) != 3 || len(snap.Leases) != 0 {
			t.Fatalf("after Close: %+v", snap)
		}
		for _, l := range ls {
			if err := l.Free(ctx); !errors.Is(err, allocator.ErrNotHeld) {
				t.Fatalf("Free after session Close: %v", err)
			}
		}
	})
}

// TestSessionLossSignalled: a session whose entry is gone (an operator,
// or a lapse during a long pause) reports the loss at its next heartbeat.
func TestSessionLossSignalled(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		s := must[*allocator.Session](t)(a.NewSession(ctx, 150*time.Millisecond))
		defer s.Orphan()
		ok(t, errOnly(a.GC(ctx, 0)))
		snap := checkInvariants(t, a)
		if _, ok := snap.Sessions[s.ID()]; !ok {
			t.Fatal("session not listed")
		}
		// Make it lapse behind its back, as an operator's clean-up would.
		ok(t, tg.client(t).ZRem(ctx, "{"+a.Prefix()+"|allocator}|timers", "S"+s.ID()).Err())
		select {
		case <-s.Done():
			if !errors.Is(s.Err(), allocator.ErrSessionLost) {
				t.Fatalf("Err = %v", s.Err())
			}
		case <-time.After(2 * time.Second):
			t.Fatal("loss of the session not signalled")
		}
	})
}
