package allocator_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// TestAdvHugeReclaimBudget: a large GC count or reclaim budget (≥ 1e17) is
// formatted by Redis' Lua as "1e+17" when passed to LIMIT, which Redis
// rejects: GC fails, and with WithReclaimBudget every malloc fails.
func TestAdvHugeReclaimBudget(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, names("r", 2))))
		for _, n := range []int{1 << 40, 1e17, math.MaxInt} {
			if _, err := a.GC(ctx, n); err != nil {
				t.Errorf("GC(%d): %v", n, err)
			}
		}
		b := tg.allocOn(t, a.Prefix(), allocator.WithReclaimBudget(math.MaxInt))
		if _, err := b.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)); err != nil {
			t.Errorf("MallocLease with WithReclaimBudget(MaxInt): %v", err)
		}
	})
}

// TestAdvExtremeDurations: the largest and smallest durations on every
// path that takes one.
func TestAdvExtremeDurations(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		const huge = time.Duration(math.MaxInt64)
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b", "c"}, allocator.WithMemberTTL(huge), allocator.WithPriority(1e308))))
		ok(t, errOnly(a.Extend(ctx, []string{"d"}, allocator.WithPriority(-1e308))))
		ok(t, errOnly(a.Extend(ctx, []string{"e"}, allocator.WithPriority(math.Copysign(0, -1)))))
		ok(t, errOnly(a.Extend(ctx, []string{"f"}, allocator.WithPriority(5e-324))))
		s := checkInvariants(t, a)
		if want := []string{"a", "b", "c", "f", "e", "d"}; len(s.Free) != 6 || s.Free[3] != "f" || s.Free[5] != "d" {
			t.Fatalf("free order %q, want %q", s.Free, want)
		}
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(huge), allocator.WithBind("n", huge)))
		ok(t, l.Renew(ctx, huge))
		if l.Err() != nil || l.ValidUntil().Before(time.Now().Add(100*365*24*time.Hour)) {
			t.Fatalf("huge lease: %v %v", l.Err(), l.ValidUntil())
		}
		ok(t, l.Free(ctx))
		if k, found, err := a.GetSoftBind(ctx, "n"); err != nil || !found || k != "a" {
			t.Fatalf("binding %q", k)
		}
		ok(t, a.UpdateSoftBind(ctx, "m", "b", huge))
		ok(t, errOnly(a.Quarantine(ctx, huge, "c")))
		sess := must[*allocator.Session](t)(a.NewSession(ctx, huge))
		l2 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithSession(sess), allocator.WithLeaseTTL(time.Nanosecond)))
		if l2.Err() == nil {
			t.Fatalf("a 1 ns lease claims validity until %v", l2.ValidUntil())
		}
		ok(t, errOnly(sess.Close(ctx)))
		l3 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Nanosecond)))
		time.Sleep(5 * time.Millisecond)
		ok(t, errOnly(a.GC(ctx, 10)))
		if _, still := checkInvariants(t, a).Leases[l3.Key()]; still {
			t.Fatalf("1 ns lease not reclaimed")
		}
		checkInvariants(t, a)
	})
}
