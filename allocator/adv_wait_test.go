package allocator_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// TestAdvWaitExpiredHandOffBecomesPermanent: a waiter that finds its
// hand-off in a turn (its message was lost) after the hand-off's lease
// expired but before it was reclaimed gets "ms left" ≤ 0; wait.go treats
// that as 0 = permanent, so the Lease claims validity for ever, while the
// next GC reclaims the lease and hands the resource to someone else.
func TestAdvWaitExpiredHandOffBecomesPermanent(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	c := srv.Client(t)
	clock := newFakeClock()
	a, err := allocator.New(c, redistest.Namespace(t), allocator.WithClock(clock.Now),
		allocator.WithReclaimBudget(0), allocator.WithWaitEntryTTL(time.Hour))
	ok(t, err)
	defer a.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"only"})))
	held := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Hour)))
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := startWait(wctx, a, allocator.WithLeaseTTL(time.Second))
	waitQueued(t, a, 1)
	// The hand-off's message is lost; by the time the reconnection's kick
	// runs a turn, the hand-off's 1 s lease has run out on the scripts' clock.
	ok(t, c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
	ok(t, held.Free(ctx))
	clock.Advance(5 * time.Second)
	w := <-r
	ok(t, w.err)
	st := must[allocator.GCStats](t)(a.GC(ctx, 10))
	other, err := a.MallocLease(ctx)
	if err == nil && w.l.Err() == nil {
		t.Fatalf("waiter's lease on %q claims validity (ValidUntil %v, TTL %v) while GC reclaimed it (%+v) and %q was leased again (fence %d)",
			w.l.Key(), w.l.ValidUntil(), w.l.TTL(), st, other.Key(), other.Fence())
	}
}

// TestAdvDeadWaiterStrandsForItsTTL: a waiter process that dies (no leave)
// still receives hand-offs until its entry lapses, and such a hand-off is a
// full lease of the TTL the dead waiter asked for (here an hour): the
// resource is stranded for that long, not for the entry's life or the 30 s
// provisional window a permanent request gets.
func TestAdvDeadWaiterStrandsForItsTTL(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	ns := redistest.Namespace(t)
	live, err := allocator.New(srv.Client(t), ns)
	ok(t, err)
	defer live.Close()
	dc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	dead, err := allocator.New(dc, ns, allocator.WithWaitEntryTTL(3*time.Second))
	ok(t, err)
	ok(t, errOnly(live.Extend(ctx, []string{"only"})))
	held := must[*allocator.Lease](t)(live.MallocLease(ctx))
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	_ = startWait(dctx, dead, allocator.WithLeaseTTL(time.Hour))
	waitQueued(t, live, 1)
	// The waiter's process dies: its connections close, it never leaves.
	ok(t, dc.Close())
	dcancel()
	ok(t, held.Free(ctx))
	s := checkInvariants(t, live)
	li, leased := s.Leases["only"]
	if leased && li.Waiter != "" && li.Expires.Sub(s.Now) > 31*time.Second {
		t.Fatalf("a dead waiter was handed %q for %v (its entry lives 3 s): %+v",
			"only", li.Expires.Sub(s.Now).Round(time.Second), li)
	}
	_ = dead.Close()
}

// slowConn delays every read by d after the data arrived: a slow link or a
// descheduled process on the client's side.
type slowConn struct {
	net.Conn
	d time.Duration
}

func (c slowConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		time.Sleep(c.d)
	}
	return n, err
}

// TestAdvHandOffDeliveryDelay: a hand-off announced over pub/sub is given
// the waiter's full TTL from the message's arrival, so when the message is
// delivered late the Lease claims validity after the server's deadline,
// while another client already holds the resource.
func TestAdvHandOffDeliveryDelay(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	ns := redistest.Namespace(t)
	const delay = 1500 * time.Millisecond
	sc := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: 10 * time.Second,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return slowConn{c, delay}, nil
		}})
	defer sc.Close()
	a, err := allocator.New(sc, ns)
	ok(t, err)
	defer a.Close()
	b, err := allocator.New(srv.Client(t), ns)
	ok(t, err)
	defer b.Close()
	ok(t, errOnly(b.Extend(ctx, []string{"only"})))
	ok(t, must[*allocator.Lease](t)(b.MallocWait(ctx)).Free(ctx)) // scripts cached
	held := must[*allocator.Lease](t)(b.MallocLease(ctx))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := startWait(wctx, a, allocator.WithLeaseTTL(time.Second))
	for deadline := time.Now().Add(15 * time.Second); len(checkInvariants(t, b).Waiters) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("A never queued")
		}
	}
	time.Sleep(delay + 100*time.Millisecond) // A's turn reply has arrived; A waits on its channel
	ok(t, held.Free(ctx))                    // hand-off to A: server deadline now + 1 s
	time.Sleep(1100 * time.Millisecond)
	other, err := b.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		t.Fatalf("B: %v", err)
	}
	// A's confirmation of the hand-off arrives after the hand-off expired:
	// it is refused and A waits again, holding nothing.
	select {
	case w := <-r:
		ok(t, w.err)
		if w.l.Err() == nil && other.Err() == nil {
			t.Fatalf("A's hand-off lease on %q claims validity for another %v while B holds %q (fence %d > %d)",
				w.l.Key(), time.Until(w.l.ValidUntil()).Round(time.Millisecond), other.Key(), other.Fence(), w.l.Fence())
		}
	case <-time.After(2*delay + 500*time.Millisecond):
	}
	cancel()
	ok(t, other.Free(ctx))
}
