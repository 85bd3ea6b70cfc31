package allocator_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// TestAdv2WaitConfirmLostLeaksPermanentLease: MallocWait asked for a
// permanent lease; the hand-off arrives and confirm renews it to
// permanent. The renewal is applied but its reply is lost in a short
// network partition, and the give-back Free fails during the partition
// too. MallocWait returns an error ("it expires by itself", says the log),
// but the lease was made permanent: nobody holds it, nothing reclaims it
// and no token-based give-back runs. The pool's resource is gone forever.
func TestAdv2WaitConfirmLostLeaksPermanentLease(t *testing.T) {
	ctx := context.Background()
	ns := redistest.Namespace(t)
	direct := redistest.Client(t)
	holderA, err := allocator.New(direct, ns, allocator.WithBatching(0))
	ok(t, err)
	defer holderA.Close()
	p := newCutProxy(t, redistest.Addr(t))
	viaProxy := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer viaProxy.Close()
	waiterB, err := allocator.New(viaProxy, ns, allocator.WithBatching(0))
	ok(t, err)
	defer waiterB.Close()

	// Warm the script cache through the waiter's client (renew.lua, free.lua).
	ok(t, errOnly(waiterB.Extend(ctx, []string{"warm"})))
	wl := must[*allocator.Lease](t)(waiterB.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
	ok(t, wl.Renew(ctx, time.Minute))
	ok(t, wl.Free(ctx))
	ok(t, errOnly(waiterB.Shrink(ctx, "warm")))
	ok(t, errOnly(holderA.Extend(ctx, []string{"r"})))
	l := must[*allocator.Lease](t)(holderA.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
	type res struct {
		l   *allocator.Lease
		err error
	}
	done := make(chan res, 1)
	go func() {
		wl, err := waiterB.MallocWait(ctx, allocator.WithLeaseTTL(0)) // permanent
		done <- res{wl, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); ; {
		s := must[*allocator.Snapshot](t)(holderA.Snapshot(ctx))
		if len(s.Waiters) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("waiter never queued")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.armed.Store(true) // the waiter's next request (the confirming Renew) is applied, its reply lost
	ok(t, l.Free(ctx))
	var r res
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("MallocWait did not return")
	}
	p.heal()
	if r.err == nil {
		t.Skipf("MallocWait returned a lease (%s): the cut missed the confirmation", r.l.Key())
	}
	t.Logf("MallocWait: %v", r.err)
	time.Sleep(500 * time.Millisecond)
	_, _ = holderA.GC(ctx, 100)
	s := checkInvariants(t, holderA)
	if li, leased := s.Leases["r"]; leased {
		t.Fatalf("MallocWait failed (%v), yet %q is still leased to its waiter %s, permanently (expires %v): nobody holds it and nothing will ever give it back",
			r.err, "r", li.Waiter, li.Expires)
	}
}
