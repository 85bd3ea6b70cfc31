package lock_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/lock"
)

func TestPool(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, p := ctxT(t), tg.newPool(t)
		keysOf := func() []string {
			t.Helper()
			ks, err := p.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return ks
		}
		if err := p.Extend(ctx, "c", "a", "b"); err != nil {
			t.Fatal(err)
		}
		if err := p.Extend(ctx); err != nil {
			t.Fatalf("Extend with no keys: %v", err)
		}
		if got := keysOf(); !slices.Equal(got, []string{"a", "b", "c"}) {
			t.Fatalf("Keys = %v", got)
		}
		if n, err := p.Len(ctx); err != nil || n != 3 {
			t.Fatalf("Len = %d, %v", n, err)
		}
		if ok, err := p.Contains(ctx, "b"); err != nil || !ok {
			t.Fatalf("Contains(b) = %v, %v", ok, err)
		}
		if ok, _ := p.Contains(ctx, "z"); ok {
			t.Fatal("Contains(z) = true")
		}
		if err := p.Shrink(ctx, "b", "z"); err != nil {
			t.Fatal(err)
		}
		if got := keysOf(); !slices.Equal(got, []string{"a", "c"}) {
			t.Fatalf("Keys after Shrink = %v", got)
		}

		// Locks of members, seen by Statuses and HealthCheck.
		if ok, err := p.Lock(ctx, "a", "owner", time.Minute); err != nil || !ok {
			t.Fatalf("Lock(a) = %v, %v", ok, err)
		}
		st, err := p.Statuses(ctx)
		want := []lock.MemberStatus{{Key: "a", Locked: true}, {Key: "c", Locked: false}}
		if err != nil || !slices.Equal(st, want) {
			t.Fatalf("Statuses = %v, %v; want %v", st, err, want)
		}
		if locked, free, err := p.HealthCheck(ctx); err != nil || locked != 1 || free != 1 {
			t.Fatalf("HealthCheck = %d, %d, %v; want 1, 1", locked, free, err)
		}
		// A lock on a non-member does not count.
		if _, err := p.Lock(ctx, "outsider", "x", time.Minute); err != nil {
			t.Fatal(err)
		}
		if locked, free, _ := p.HealthCheck(ctx); locked != 1 || free != 1 {
			t.Fatalf("HealthCheck counted a non-member: %d, %d", locked, free)
		}

		if err := p.Assign(ctx, "x", "a", "y"); err != nil {
			t.Fatal(err)
		}
		if got := keysOf(); !slices.Equal(got, []string{"a", "x", "y"}) {
			t.Fatalf("Keys after Assign = %v", got)
		}
		if locked, free, _ := p.HealthCheck(ctx); locked != 1 || free != 2 {
			t.Fatalf("HealthCheck after Assign = %d, %d", locked, free)
		}
		if err := p.Assign(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := p.Len(ctx); n != 0 {
			t.Fatalf("Len after empty Assign = %d", n)
		}
		if err := p.Extend(ctx, "q"); err != nil {
			t.Fatal(err)
		}
		if err := p.Clear(ctx); err != nil {
			t.Fatal(err)
		}
		if n, _ := p.Len(ctx); n != 0 {
			t.Fatalf("Len after Clear = %d", n)
		}
		if ok, _ := p.IsLocked(ctx, "a"); !ok {
			t.Fatal("Clear released a member's lock")
		}
		if err := p.Extend(ctx, "ok", ""); !errors.Is(err, lock.ErrInvalidKey) {
			t.Fatalf("Extend with an empty key: %v", err)
		}
		if n, _ := p.Len(ctx); n != 0 {
			t.Fatalf("rejected Extend added %d members", n)
		}
	})
}

func TestPoolLarge(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx, p := ctxT(t), tg.newPool(t)
		ks := make([]string, 12000)
		for i := range ks {
			ks[i] = fmt.Sprintf("m%05d", i)
		}
		if err := p.Assign(ctx, ks...); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < len(ks); i += 3 {
			if _, err := p.Lock(ctx, ks[i], "v", time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		locked, free, err := p.HealthCheck(ctx)
		if err != nil || locked != 4000 || free != 8000 {
			t.Fatalf("HealthCheck = %d, %d, %v; want 4000, 8000", locked, free, err)
		}
	})
}

func TestNewPoolRejectsBraces(t *testing.T) {
	c := redisClientForUnit(t)
	if _, err := lock.NewPool(c, "{app}"); !errors.Is(err, lock.ErrInvalidKey) {
		t.Fatalf("NewPool with a brace: %v", err)
	}
	if _, err := lock.New(c, ""); !errors.Is(err, lock.ErrInvalidKey) {
		t.Fatalf("New with an empty prefix: %v", err)
	}
	if _, err := lock.New(c, "app", lock.WithEpsilon(-1)); !errors.Is(err, lock.ErrInvalidArgument) {
		t.Fatalf("New with a negative epsilon: %v", err)
	}
	if _, err := lock.New(c, "app", lock.WithBatching(-1)); !errors.Is(err, lock.ErrInvalidArgument) {
		t.Fatalf("New with negative batching: %v", err)
	}
	if _, err := lock.NewPool(c, "app", lock.WithBatching(-1)); !errors.Is(err, lock.ErrInvalidArgument) {
		t.Fatalf("NewPool with negative batching: %v", err)
	}
}
