package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// TestAdv2BudgetOneLapsedSessionStarves: with a reclaim budget of 1 (a
// valid setting) the oldest due timer is a lapsed session's "S" timer;
// reclaim spends the whole budget on the timer itself and asks
// session_leases for 0 leases, which never reports "all", so the timer is
// never removed and nothing behind it is ever reclaimed: the pool starves.
func TestAdv2BudgetOneLapsedSessionStarves(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now), allocator.WithReclaimBudget(1))
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		s := must[*allocator.Session](t)(a.NewSession(ctx, time.Second))
		s.Orphan() // the process died; the session holds no lease
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(2*time.Second)))
		_ = l
		clock.Advance(10 * time.Second) // session lapsed at +1s, lease expired at +2s
		for i := 0; i < 20; i++ {
			_, err := a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
			if err == nil {
				return
			}
			if !errors.Is(err, allocator.ErrNoneAvailable) {
				t.Fatal(err)
			}
		}
		var tot allocator.GCStats
		for i := 0; i < 20; i++ {
			st := must[allocator.GCStats](t)(a.GC(ctx, 1))
			tot.Leases += st.Leases
			tot.Sessions += st.Sessions
		}
		snap := checkInvariants(t, a)
		t.Fatalf("20 mallocs with budget 1 found nothing, 20 GC(1) reclaimed %+v; the lease expired 8s ago and is still there: %+v, sessions %v",
			tot, snap.Leases, snap.Sessions)
	})
}
