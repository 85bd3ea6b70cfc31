package allocator_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

func TestPoolMembership(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		if n := must[int](t)(a.Extend(ctx, []string{"a", "b", "c"})); n != 3 {
			t.Fatalf("Extend added %d, want 3", n)
		}
		if n := must[int](t)(a.Extend(ctx, []string{"c", "d"})); n != 1 {
			t.Fatalf("Extend of c, d added %d, want 1", n)
		}
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
			t.Fatalf("Keys = %v", got)
		}
		if n := must[int](t)(a.Len(ctx)); n != 4 {
			t.Fatalf("Len = %d", n)
		}
		if !must[bool](t)(a.Contains(ctx, "b")) || must[bool](t)(a.Contains(ctx, "z")) {
			t.Fatal("Contains wrong")
		}
		if n := must[int](t)(a.Shrink(ctx, "b", "z")); n != 1 {
			t.Fatalf("Shrink removed %d", n)
		}
		added, removed, err := a.Assign(ctx, []string{"a", "e"})
		ok(t, err)
		if added != 1 || removed != 2 {
			t.Fatalf("Assign: added %d removed %d, want 1, 2", added, removed)
		}
		if got := sorted(must[[]string](t)(a.Keys(ctx))); !slices.Equal(got, []string{"a", "e"}) {
			t.Fatalf("Keys after Assign = %v", got)
		}
		checkInvariants(t, a)
		if n := must[int](t)(a.Clear(ctx)); n != 2 {
			t.Fatalf("Clear removed %d", n)
		}
		if n := must[int](t)(a.Len(ctx)); n != 0 {
			t.Fatalf("Len after Clear = %d", n)
		}
		checkInvariants(t, a)
	})
}

func TestMallocFreeRenew(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"r1", "r2"})))
		l1 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
		l2 := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
		if l1.Key() == l2.Key() {
			t.Fatalf("one resource leased twice: %s", l1.Key())
		}
		if l2.Fence() <= l1.Fence() {
			t.Fatalf("fences not increasing: %d then %d", l1.Fence(), l2.Fence())
		}
		if _, err := a.MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("malloc on an exhausted pool: %v, want ErrNoneAvailable", err)
		}
		if _, found, err := a.MallocKey(ctx); err != nil || found {
			t.Fatalf("MallocKey on an exhausted pool: %v %v", found, err)
		}
		checkInvariants(t, a)
		ok(t, l1.Renew(ctx, 2*time.Minute))
		ok(t, l1.Free(ctx))
		ok(t, l1.Free(ctx)) // idempotent
		if err := l1.Renew(ctx, time.Minute); !errors.Is(err, allocator.ErrNotHeld) {
			t.Fatalf("Renew after Free: %v", err)
		}
		select {
		case <-l1.Lost():
		default:
			t.Fatal("Lost not closed after Free")
		}
		if !errors.Is(l1.Err(), allocator.ErrFreed) {
			t.Fatalf("Err after Free = %v", l1.Err())
		}
		l3 := must[*allocator.Lease](t)(a.MallocLease(ctx))
		if l3.Key() != l1.Key() {
			t.Fatalf("got %s, want the freed %s", l3.Key(), l1.Key())
		}
		checkInvariants(t, a)
	})
}

func errOnly[T any](_ T, err error) error { return err }
