package allocator_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// TestAdvSessionLeaseValidAfterSessionReclaimed: a lease taken in a session
// keeps claiming validity (Err nil, Lost open) after its session lapsed on
// the server and another client was granted the same resource. The holder
// is alive; only its heartbeat was stalled by a server pause.
func TestAdvSessionLeaseValidAfterSessionReclaimed(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	c := srv.Client(t)
	ns := redistest.Namespace(t)
	a, err := allocator.New(c, ns)
	ok(t, err)
	defer a.Close()
	b, err := allocator.New(srv.Client(t), ns)
	ok(t, err)
	defer b.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"r"})))
	s := must[*allocator.Session](t)(a.NewSession(ctx, 400*time.Millisecond))
	l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithSession(s), allocator.WithLeaseTTL(time.Minute)))
	lost := l.Lost()
	// The server stalls longer than the session TTL (a GC pause, a network
	// blip): the heartbeat cannot get through.
	ok(t, c.Do(ctx, "CLIENT", "PAUSE", "1200", "ALL").Err())
	time.Sleep(1300 * time.Millisecond)
	other, err := b.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute))
	if err != nil {
		t.Fatalf("B could not take the resource: %v", err)
	}
	if other.Key() != "r" {
		t.Fatalf("B got %q", other.Key())
	}
	select {
	case <-lost:
	default:
		t.Fatalf("A's lease still claims validity (Err=%v, ValidUntil in %v) while B holds %q (fence %d > %d): leased twice at once",
			l.Err(), time.Until(l.ValidUntil()).Round(time.Second), other.Key(), other.Fence(), l.Fence())
	}
}

// TestAdvSessionLapsedRenewSucceeds: Renew of a lease whose session has
// lapsed (but which no malloc/GC has reclaimed yet) reports success and
// extends the holder's validity; the very next GC reclaims the lease.
func TestAdvSessionLapsedRenewSucceeds(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		clock := newFakeClock()
		a := tg.newAlloc(t, allocator.WithClock(clock.Now))
		ok(t, errOnly(a.Extend(ctx, []string{"r"})))
		s := must[*allocator.Session](t)(a.NewSession(ctx, time.Second))
		l := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithSession(s), allocator.WithLeaseTTL(time.Hour)))
		s.Orphan()
		clock.Advance(2 * time.Second) // the session lapsed on the server
		err := l.Renew(ctx, time.Hour)
		st := must[allocator.GCStats](t)(a.GC(ctx, 100))
		if err == nil {
			t.Fatalf("Renew of a lease whose session lapsed succeeded; the next GC then reclaimed %+v", st)
		}
		if !errors.Is(err, allocator.ErrNotHeld) {
			t.Fatalf("Renew: %v", err)
		}
	})
}

// TestAdvWaitHandOffToClosedSession: a MallocWait in a session that is
// closed while it waits is still handed a lease when a resource is freed.
func TestAdvWaitHandOffToClosedSession(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		held := must[*allocator.Lease](t)(a.MallocLease(ctx))
		s := must[*allocator.Session](t)(a.NewSession(ctx, time.Minute))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r := startWait(wctx, a, allocator.WithSession(s), allocator.WithLeaseTTL(0))
		waitQueued(t, a, 1)
		ok(t, errOnly(s.Close(ctx)))
		ok(t, held.Free(ctx))
		w := <-r
		if w.err == nil {
			ok(t, errOnly(a.GC(ctx, 1000)))
			snap := checkInvariants(t, a)
			t.Fatalf("a closed session took a lease via hand-off: %q (lease %+v, sessions %v); GC does not reclaim it",
				w.l.Key(), snap.Leases[w.l.Key()], snap.Sessions)
		}
		if !errors.Is(w.err, allocator.ErrSessionLost) {
			t.Fatalf("MallocWait: %v", w.err)
		}
	})
}

// TestAdvWaitHandOffToLapsedSession: same with a session that lapsed (its
// heartbeat stopped) while its waiter waits.
func TestAdvWaitHandOffToLapsedSession(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		held := must[*allocator.Lease](t)(a.MallocLease(ctx))
		s := must[*allocator.Session](t)(a.NewSession(ctx, 200*time.Millisecond))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		r := startWait(wctx, a, allocator.WithSession(s), allocator.WithLeaseTTL(time.Minute))
		waitQueued(t, a, 1)
		s.Orphan()
		time.Sleep(400 * time.Millisecond) // lapsed
		ok(t, held.Free(ctx))
		w := <-r
		if w.err == nil {
			t.Fatalf("a lapsed session took a lease via hand-off: %q, Err=%v", w.l.Key(), w.l.Err())
		}
		if !errors.Is(w.err, allocator.ErrSessionLost) {
			t.Fatalf("MallocWait: %v", w.err)
		}
	})
}

// TestAdvOpsAfterClose: errors.go documents "ErrClosed is returned by the
// operations of an Allocator after Close".
func TestAdvOpsAfterClose(t *testing.T) {
	ctx := context.Background()
	a, err := allocator.New(redistest.Client(t), redistest.Namespace(t))
	ok(t, err)
	ok(t, errOnly(a.Extend(ctx, []string{"r"})))
	ok(t, a.Close())
	l, err := a.MallocLease(ctx)
	if !errors.Is(err, allocator.ErrClosed) {
		t.Fatalf("MallocLease after Close: lease %v, err %v (want ErrClosed)", l != nil, err)
	}
}

// TestAdvSessionDoneLateWhileHeartbeatBlocked: Session.Done must close when
// no heartbeat was confirmed within the TTL less a tenth. While a heartbeat
// request hangs (server stalled), the heartbeat goroutine does not watch
// the expiry, so Done closes only when the request returns, long after the
// session lapsed on the server.
func TestAdvSessionDoneLateWhileHeartbeatBlocked(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	c := srv.Client(t)
	a, err := allocator.New(c, redistest.Namespace(t))
	ok(t, err)
	defer a.Close()
	const ttl = 300 * time.Millisecond
	s := must[*allocator.Session](t)(a.NewSession(ctx, ttl))
	time.Sleep(ttl / 2) // one heartbeat confirmed at ~ttl/3
	start := time.Now()
	ok(t, c.Do(ctx, "CLIENT", "PAUSE", "2000", "ALL").Err())
	select {
	case <-s.Done():
		t.Logf("Done after %v", time.Since(start))
	case <-time.After(ttl + 300*time.Millisecond):
		t.Fatalf("no heartbeat confirmed for more than the TTL (%v since the stall began, TTL %v), Done still open: it closes only when the stalled heartbeat returns", time.Since(start).Round(time.Millisecond), ttl)
	}
}
