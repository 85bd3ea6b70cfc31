package allocator_test

import (
	"context"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// The fencing counter overwritten by another client (the library says it
// tolerates it): every later malloc still works, leaves a consistent pool,
// and its fences keep growing.
func TestAdv3FenceCounterOverwritten(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		c := tg.client(t)
		for _, v := range []string{"abc", "1.5", "hash", "9223372036854775807", "9223372036854775806", "4611686018427387904", "9007199254740993"} {
			a := tg.newAlloc(t)
			ok(t, errOnly(a.Extend(ctx, names("r", 6))))
			first := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
			fk := "{" + a.Prefix() + "|" + a.Suffix() + "}|fence"
			ok(t, c.Del(ctx, fk).Err())
			if v == "hash" {
				ok(t, c.HSet(ctx, fk, "f", "1").Err())
			} else {
				ok(t, c.Set(ctx, fk, v, 0).Err())
			}
			prev := first.Fence()
			var fs []int64
			for i := 0; i < 4; i++ {
				var l *allocator.Lease
				var err error
				if i%2 == 0 {
					l, err = a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
				} else {
					l, err = a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute), allocator.WithBind("b", 0))
				}
				if err != nil {
					t.Fatalf("counter %q: malloc %d: %v", v, i, err)
				}
				fs = append(fs, l.Fence())
				if l.Fence() <= prev && (i > 0 || prev > 1<<62) {
					t.Errorf("counter %q: fences %d then %d do not grow (all: %v)", v, prev, l.Fence(), fs)
				}
				prev = l.Fence()
			}
			t.Logf("counter %q: first %d, then %v", v, first.Fence(), fs)
			checkInvariants(t, a)
		}
	})
}
