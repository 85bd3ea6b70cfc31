package allocator_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// TestAdv2SessionCloseLostAfterRegrant: Session.Close ends the session's
// leases on the server first and only then ends the session locally, so a
// goroutine that uses a lease of the session (and watches Lost / Err) still
// sees it valid while another client already holds the resource.
func TestAdv2SessionCloseLostAfterRegrant(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		b := tg.allocOn(t, a.Prefix())
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		for i := 0; i < 200; i++ {
			s := must[*allocator.Session](t)(a.NewSession(ctx, time.Minute))
			l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithSession(s), allocator.WithLeaseTTL(time.Minute)))
			lost := l.Lost()
			var got atomic.Pointer[allocator.Lease]
			var stillValid atomic.Bool
			done := make(chan struct{})
			go func() {
				defer close(done)
				for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
					o, err := b.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
					if errors.Is(err, allocator.ErrNoneAvailable) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					select {
					case <-lost:
					default:
						stillValid.Store(true)
					}
					got.Store(o)
					return
				}
			}()
			time.Sleep(time.Millisecond)
			_ = errOnly(s.Close(ctx))
			<-done
			o := got.Load()
			if o == nil {
				t.Fatal("B never got the resource")
			}
			if stillValid.Load() {
				t.Fatalf("iteration %d: B holds %q (fence %d) while A's session lease (fence %d) had not reported Lost yet", i, o.Key(), o.Fence(), l.Fence())
			}
			ok(t, o.Free(ctx))
		}
	})
}
