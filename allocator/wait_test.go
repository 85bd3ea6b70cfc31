package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// waitQueued waits until the pool's wait queue has n entries.
func waitQueued(t *testing.T, a *allocator.Allocator, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := checkInvariants(t, a)
		if len(s.Waiters) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d waiters queued, want %d", len(s.Waiters), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type waitResult struct {
	l   *allocator.Lease
	err error
	at  time.Time
}

func startWait(ctx context.Context, a *allocator.Allocator, opts ...allocator.MallocOption) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		l, err := a.MallocWait(ctx, opts...)
		ch <- waitResult{l, err, time.Now()}
	}()
	return ch
}

func TestMallocWaitWokenByFree(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		// A free resource is taken at once.
		l := must[*allocator.Lease](t)(a.MallocWait(ctx, allocator.WithLeaseTTL(time.Minute)))
		r := startWait(ctx, a, allocator.WithLeaseTTL(time.Minute))
		waitQueued(t, a, 1)
		freed := time.Now()
		ok(t, l.Free(ctx))
		select {
		case w := <-r:
			ok(t, w.err)
			if w.l.Key() != "only" || w.l.Fence() <= l.Fence() {
				t.Fatalf("hand-off %s fence %d", w.l.Key(), w.l.Fence())
			}
			// Woken by the free, not by the entry renewal (every 10 s).
			if d := w.at.Sub(freed); d > 2*time.Second {
				t.Fatalf("woken %v after the free", d)
			}
			s := checkInvariants(t, a)
			if len(s.Waiters) != 0 || len(s.Free) != 0 || s.Leases["only"].Fence != w.l.Fence() {
				t.Fatalf("after the hand-off: %+v", s)
			}
			ok(t, w.l.Free(ctx))
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not woken")
		}
	})
}

func TestMallocWaitFIFOAcrossProcesses(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		procs := []*allocator.Allocator{tg.allocOn(t, ns), tg.allocOn(t, ns), tg.allocOn(t, ns)}
		a := procs[0]
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		held := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
		const n = 9
		var results []<-chan waitResult
		for i := range n {
			results = append(results, startWait(ctx, procs[i%len(procs)], allocator.WithLeaseTTL(time.Minute)))
			waitQueued(t, a, i+1)
		}
		// A plain malloc does not jump the queue.
		if _, err := procs[1].MallocLease(ctx); !errors.Is(err, allocator.ErrNoneAvailable) {
			t.Fatalf("malloc while waiters queue: %v", err)
		}
		cur := held
		for i := range n {
			ok(t, cur.Free(ctx))
			for j := range n {
				if j == i {
					continue
				}
				select {
				case w := <-results[j]:
					t.Fatalf("waiter %d served before waiter %d (err %v)", j, i, w.err)
				default:
				}
			}
			select {
			case w := <-results[i]:
				ok(t, w.err)
				cur = w.l
			case <-time.After(5 * time.Second):
				t.Fatalf("waiter %d not served", i)
			}
		}
		ok(t, cur.Free(ctx))
		if s := checkInvariants(t, a); len(s.Free) != 1 || len(s.Waiters) != 0 {
			t.Fatalf("after the queue drained: %+v", s)
		}
	})
}

func TestMallocWaitCancelled(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		held := must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
		wctx, cancel := context.WithCancel(ctx)
		r := startWait(wctx, a)
		waitQueued(t, a, 1)
		cancel()
		w := <-r
		if !errors.Is(w.err, context.Canceled) {
			t.Fatalf("cancelled MallocWait: %v", w.err)
		}
		waitQueued(t, a, 0)
		ok(t, held.Free(ctx))
		if s := checkInvariants(t, a); len(s.Free) != 1 {
			t.Fatalf("the free went to a departed waiter: %+v", s)
		}
		// Cancellation racing with the hand-off never strands the
		// resource: it is leased by the waiter or free again.
		for i := range 40 {
			held = must[*allocator.Lease](t)(a.MallocLease(ctx, allocator.WithLeaseTTL(time.Minute)))
			wctx, cancel := context.WithCancel(ctx)
			r := startWait(wctx, a, allocator.WithLeaseTTL(time.Minute))
			waitQueued(t, a, 1)
			var wg sync.WaitGroup
			wg.Go(func() {
				time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
				cancel()
			})
			ok(t, held.Free(ctx))
			wg.Wait()
			w := <-r
			if w.err == nil {
				ok(t, w.l.Free(ctx))
			} else if !errors.Is(w.err, context.Canceled) {
				t.Fatal(w.err)
			}
			s := checkInvariants(t, a)
			if len(s.Free) != 1 || len(s.Leases) != 0 || len(s.Waiters) != 0 {
				t.Fatalf("round %d: resource stranded: %+v", i, s)
			}
		}
	})
}

func TestMallocWaitPermanent(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"only"})))
		held := must[*allocator.Lease](t)(a.MallocLease(ctx))
		r := startWait(ctx, a, allocator.WithLeaseTTL(0))
		waitQueued(t, a, 1)
		ok(t, held.Free(ctx))
		w := <-r
		ok(t, w.err)
		s := checkInvariants(t, a)
		if !s.Leases["only"].Expires.IsZero() || w.l.TTL() != 0 || !w.l.ValidUntil().IsZero() {
			t.Fatalf("hand-off to a permanent waiter: %+v, TTL %v", s.Leases["only"], w.l.TTL())
		}
		ok(t, w.l.Free(ctx))
	})
}

// TestMallocWaitLostMessage kills the subscription connection while a
// waiter waits: the hand-off message is lost, and the waiter still gets the
// resource (a reconnection kicks it, and its entry renewal finds the grant).
func TestMallocWaitLostMessage(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	c := srv.Client(t)
	a, err := allocator.New(c, redistest.Namespace(t), allocator.WithWaitEntryTTL(600*time.Millisecond))
	ok(t, err)
	defer a.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"only"})))
	held := must[*allocator.Lease](t)(a.MallocLease(ctx))
	r := startWait(ctx, a, allocator.WithLeaseTTL(time.Minute))
	waitQueued(t, a, 1)
	// Pause the subscriber's reads by killing it, then free at once.
	ok(t, c.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
	ok(t, held.Free(ctx))
	select {
	case w := <-r:
		ok(t, w.err)
		if w.l.Key() != "only" {
			t.Fatalf("got %s", w.l.Key())
		}
		ok(t, w.l.Free(ctx))
	case <-time.After(5 * time.Second):
		t.Fatal("hand-off lost with its message")
	}
	s := checkInvariants(t, a)
	if len(s.Free) != 1 {
		t.Fatalf("after: %+v", s)
	}
}

// TestMallocWaitSkipsDeadWaiter: a waiter whose process vanished without
// leaving is skipped once its entry lapses.
func TestMallocWaitSkipsDeadWaiter(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	ns := redistest.Namespace(t)
	live, err := allocator.New(srv.Client(t), ns)
	ok(t, err)
	defer live.Close()
	dc := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	dead, err := allocator.New(dc, ns, allocator.WithWaitEntryTTL(300*time.Millisecond))
	ok(t, err)
	ok(t, errOnly(live.Extend(ctx, []string{"only"})))
	held := must[*allocator.Lease](t)(live.MallocLease(ctx))
	dctx, dcancel := context.WithCancel(ctx)
	defer dcancel()
	_ = startWait(dctx, dead)
	waitQueued(t, live, 1)
	// The "process" dies: its connections close, nothing leaves the queue.
	ok(t, dc.Close())
	dcancel()
	r := startWait(ctx, live, allocator.WithLeaseTTL(time.Minute))
	waitQueued(t, live, 2)
	time.Sleep(400 * time.Millisecond) // the dead entry lapses
	ok(t, held.Free(ctx))
	select {
	case w := <-r:
		ok(t, w.err)
		ok(t, w.l.Free(ctx))
	case <-time.After(5 * time.Second):
		t.Fatal("the live waiter was not served")
	}
	_ = dead.Close()
	if s := checkInvariants(t, live); len(s.Free) != 1 || len(s.Waiters) != 0 {
		t.Fatalf("after: free %v waiters %v", s.Free, s.Waiters)
	}
}

// TestThousandWaitersFewConnections: 1 000 MallocWait calls in one process
// are served one after another through the client's connections (8 in the
// main pool, 2 in go-redis's pipeline pool, which batching uses) plus the
// one subscription.
func TestThousandWaitersFewConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("1 000 waiters")
	}
	ctx := context.Background()
	name := "thousand-" + strings.ReplaceAll(redistest.Namespace(t), "|", "-")
	c := redis.NewClient(&redis.Options{
		Addr: redistest.Addr(t), PoolSize: 8, MaxActiveConns: 8, PipelinePoolSize: 2,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ClientSetName(ctx, name).Err() },
	})
	defer c.Close()
	a, err := allocator.New(c, redistest.Namespace(t))
	ok(t, err)
	defer a.Close()
	ok(t, errOnly(a.Extend(ctx, []string{"only"})))
	held := must[*allocator.Lease](t)(a.MallocLease(ctx))
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			l, err := a.MallocWait(ctx, allocator.WithLeaseTTL(time.Minute))
			if err == nil {
				time.Sleep(100 * time.Microsecond)
				err = l.Free(ctx)
			}
			errs <- err
		})
	}
	waitQueued(t, a, n)
	maxConns := 0
	admin := redistest.Client(t)
	count := func() int {
		list, err := admin.ClientList(ctx).Result()
		ok(t, err)
		return strings.Count(list, "name="+name+" ")
	}
	maxConns = count()
	ok(t, held.Free(ctx))
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(20 * time.Millisecond):
			maxConns = max(maxConns, count())
		}
	}
	close(errs)
	for err := range errs {
		ok(t, err)
	}
	if maxConns > 11 {
		t.Fatalf("%d connections for %d waiters, want ≤ 11 (8 + 2 pipeline + subscription)", maxConns, n)
	}
	t.Logf("%d waiters served through at most %d connections", n, maxConns)
	if s := checkInvariants(t, a); len(s.Free) != 1 || len(s.Waiters) != 0 {
		t.Fatalf("after: %+v", s)
	}
}

func TestMallocWaitModes(t *testing.T) {
	ctx := context.Background()
	tg := targets[0]
	sh := tg.newAlloc(t, allocator.WithShared())
	if _, err := sh.MallocWait(ctx); !errors.Is(err, allocator.ErrInvalidArgument) {
		t.Fatalf("MallocWait in shared mode: %v", err)
	}
	a := tg.newAlloc(t)
	ok(t, a.Close())
	if _, err := a.MallocWait(ctx); !errors.Is(err, allocator.ErrClosed) {
		t.Fatalf("MallocWait after Close: %v", err)
	}
	b := tg.newAlloc(t)
	ok(t, errOnly(b.Extend(ctx, []string{"x"})))
	held := must[*allocator.Lease](t)(b.MallocLease(ctx))
	r := startWait(ctx, b)
	waitQueued(t, b, 1)
	ok(t, b.Close())
	if w := <-r; !errors.Is(w.err, allocator.ErrClosed) {
		t.Fatalf("MallocWait across Close: %v", w.err)
	}
	waitQueued(t, b, 0)
	ok(t, held.Free(ctx))
	_ = fmt.Sprint()
}

// TestFenceCounterOverwritten: a fencing counter overwritten with a
// non-number (by another client) restarts from the clock: leases are still
// granted with larger fences, and no script fails halfway (Redis does not
// roll back the writes of a failed script).
func TestFenceCounterOverwritten(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a := tg.newAlloc(t)
		ok(t, errOnly(a.Extend(ctx, []string{"a", "b"})))
		first := must[*allocator.Lease](t)(a.MallocLease(ctx))
		fenceKey := "{" + a.Prefix() + "|allocator}|fence"
		for i, malloc := range []func() (*allocator.Lease, error){
			func() (*allocator.Lease, error) { return a.MallocLease(ctx) },
			func() (*allocator.Lease, error) { return a.MallocWait(ctx) },
		} {
			ok(t, tg.client(t).Set(ctx, fenceKey, "not a number", 0).Err())
			l, err := malloc()
			if err != nil {
				t.Fatalf("malloc %d after the counter was overwritten: %v", i, err)
			}
			if l.Fence() <= first.Fence() {
				t.Fatalf("fence %d after %d", l.Fence(), first.Fence())
			}
			ok(t, l.Free(ctx))
			checkInvariants(t, a)
		}
		// A free that hands over to a waiter grants too.
		second := must[*allocator.Lease](t)(a.MallocLease(ctx))
		r := startWait(ctx, a, allocator.WithLeaseTTL(time.Minute))
		waitQueued(t, a, 1)
		ok(t, tg.client(t).Set(ctx, fenceKey, "not a number", 0).Err())
		ok(t, first.Free(ctx))
		w := <-r
		ok(t, w.err)
		if w.l.Fence() <= second.Fence() {
			t.Fatalf("hand-off fence %d after %d", w.l.Fence(), second.Fence())
		}
		ok(t, w.l.Free(ctx))
		ok(t, second.Free(ctx))
		if s := checkInvariants(t, a); len(s.Free) != 2 {
			t.Fatalf("after: %+v", s)
		}
	})
}
