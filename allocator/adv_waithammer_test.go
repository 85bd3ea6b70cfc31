package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// TestAdvWaitHammer: many MallocWait callers in two "processes" with random
// cancellation, permanent and TTL leases, while the subscriptions are
// killed and scripts flushed. Afterwards nothing may be stranded: every
// resource is free and the queue empty; during the run no two holders
// overlap.
func TestAdvWaitHammer(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Server(t)
	ns := redistest.Namespace(t)
	mk := func(batch int) *allocator.Allocator {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 20})
		t.Cleanup(func() { _ = c.Close() })
		a, err := allocator.New(c, ns, allocator.WithBatching(batch), allocator.WithWaitEntryTTL(600*time.Millisecond))
		ok(t, err)
		t.Cleanup(func() { _ = a.Close() })
		return a
	}
	a1, a2 := mk(0), mk(2)
	keys := names("r", 3)
	ok(t, errOnly(a1.Extend(ctx, keys)))
	admin := srv.Client(t)
	iv := &intervals{}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var nLeases, nCancelled atomic.Int64
	var probs sync.Map
	for i := range 20 {
		a := a1
		if i%2 == 1 {
			a = a2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			for j := 0; !stop.Load(); j++ {
				ttl := []time.Duration{0, 80 * time.Millisecond, 400 * time.Millisecond}[rng.IntN(3)]
				wctx, cancel := context.WithTimeout(ctx, time.Duration(1+rng.IntN(60))*time.Millisecond)
				l, err := a.MallocWait(wctx, allocator.WithLeaseTTL(ttl))
				cancel()
				if err != nil {
					if !errors.Is(err, context.DeadlineExceeded) {
						probs.Store("MallocWait: "+err.Error(), true)
					}
					nCancelled.Add(1)
					continue
				}
				nLeases.Add(1)
				start := time.Now()
				time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
				end := time.Now()
				if v := l.ValidUntil(); !v.IsZero() && v.Before(end) {
					end = v
				}
				iv.add(interval{key: l.Key(), fence: l.Fence(), start: start, end: end, who: fmt.Sprintf("w%d#%d ttl %v", i, j, ttl)})
				if err := l.Free(ctx); err != nil && ttl == 0 {
					probs.Store("free of a permanent lease: "+err.Error(), true)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !stop.Load(); n++ {
			time.Sleep(150 * time.Millisecond)
			if n%2 == 0 {
				_ = admin.ClientKillByFilter(ctx, "TYPE", "pubsub").Err()
			} else {
				_ = admin.ScriptFlush(ctx).Err()
			}
		}
	}()
	time.Sleep(6 * time.Second)
	stop.Store(true)
	wg.Wait()
	var ps []string
	probs.Range(func(k, _ any) bool { ps = append(ps, k.(string)); return true })
	ps = append(ps, iv.check()...)
	// Let TTL leases run out; nothing else may remain.
	time.Sleep(700 * time.Millisecond)
	ok(t, errOnly(a1.GC(ctx, 1000)))
	s := checkInvariants(t, a1)
	if len(s.Free) != len(keys) || len(s.Waiters) != 0 {
		ps = append(ps, fmt.Sprintf("stranded after the run: free %q, leases %+v, waiters %q", s.Free, s.Leases, s.Waiters))
	}
	t.Logf("%d leases, %d cancelled waits", nLeases.Load(), nCancelled.Load())
	if len(ps) > 0 {
		t.Fatalf("problems:\n%s", strings.Join(ps, "\n"))
	}
}
