package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// TestAdv2HammerSessions: concurrent holders with sessions (closed,
// orphaned, lapsing), MallocWait in sessions, member expiry churn, priority
// changes, quarantine and renewals to permanent and back, on two
// allocators of one pool (budget 2) and a shared pool alongside. Checks: no
// overlap of validity intervals on a resource, fences grow, invariants.
func TestAdv2HammerSessions(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a1 := tg.newAlloc(t, allocator.WithReclaimBudget(2))
		a2 := tg.allocOn(t, a1.Prefix(), allocator.WithReclaimBudget(2))
		sh := tg.newAlloc(t, allocator.WithShared())
		keys := names("r", 5)
		ok(t, errOnly(a1.Extend(ctx, keys)))
		ok(t, errOnly(sh.Extend(ctx, keys)))
		iv := &intervals{}
		var stop atomic.Bool
		var wg sync.WaitGroup
		var probs sync.Map
		var nLeases, nOps, nSess atomic.Int64
		ttls := []time.Duration{30 * time.Millisecond, 80 * time.Millisecond, 300 * time.Millisecond, 0}
		var dropped sync.WaitGroup
		// hold keeps l a while and frees it, or drops it: its interval then
		// ends when Lost closes (the holder's own view of its validity).
		hold := func(rng *rand.Rand, l *allocator.Lease, start time.Time, who string) {
			time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
			if l.TTL() > 0 && rng.IntN(6) == 0 {
				lost := l.Lost()
				dropped.Add(1)
				go func() {
					defer dropped.Done()
					<-lost
					end := time.Now()
					if v := l.ValidUntil(); !v.IsZero() && v.Before(end) {
						end = v // observed late by this goroutine
					}
					iv.add(interval{key: l.Key(), fence: l.Fence(), start: start, end: end, who: who + " (dropped: " + fmt.Sprint(l.Err()) + ")"})
				}()
				return
			}
			end := time.Now()
			if v := l.ValidUntil(); !v.IsZero() && v.Before(end) {
				end = v
			}
			iv.add(interval{key: l.Key(), fence: l.Fence(), start: start, end: end, who: who})
			_ = l.Free(ctx)
		}
		worker := func(id int, a *allocator.Allocator) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 11))
			var sess *allocator.Session
			for i := 0; !stop.Load(); i++ {
				nOps.Add(1)
				who := fmt.Sprintf("w%d#%d", id, i)
				ttl := ttls[rng.IntN(len(ttls))]
				if sess == nil || sess.Err() != nil || rng.IntN(15) == 0 {
					if sess != nil {
						// (Close is left out: see TestAdv2SessionCloseLostAfterRegrant.)
						if rng.IntN(2) == 0 {
							sess.Orphan()
						}
					}
					s, err := a.NewSession(ctx, time.Duration(40+rng.IntN(200))*time.Millisecond)
					if err != nil {
						probs.Store(err.Error(), true)
						continue
					}
					sess = s
					nSess.Add(1)
				}
				var opts []allocator.MallocOption
				opts = append(opts, allocator.WithLeaseTTL(ttl))
				if rng.IntN(2) == 0 {
					opts = append(opts, allocator.WithSession(sess))
				}
				switch op := rng.IntN(22); {
				case op < 7:
					l, err := a.MallocLease(ctx, opts...)
					if err != nil {
						if !errors.Is(err, allocator.ErrNoneAvailable) && !errors.Is(err, allocator.ErrSessionLost) {
							probs.Store(err.Error(), true)
						}
						continue
					}
					nLeases.Add(1)
					if rng.IntN(4) == 0 {
						// to permanent and back
						_ = l.Renew(ctx, 0)
						_ = l.Renew(ctx, ttls[rng.IntN(3)])
					}
					hold(rng, l, time.Now(), who)
				case op < 9:
					ls, err := a.MallocN(ctx, 1+rng.IntN(len(keys)), opts...)
					if err != nil {
						continue
					}
					now := time.Now()
					for _, l := range ls {
						nLeases.Add(1)
						hold(rng, l, now, who)
					}
				case op < 13:
					wctx, cancel := context.WithTimeout(ctx, time.Duration(1+rng.IntN(120))*time.Millisecond)
					l, err := a.MallocWait(wctx, opts...)
					cancel()
					if err != nil {
						continue
					}
					nLeases.Add(1)
					hold(rng, l, time.Now(), who+" (wait)")
				case op < 14:
					k := keys[rng.IntN(len(keys))]
					_, _ = a.Extend(ctx, []string{k}, allocator.WithMemberTTL(time.Duration(rng.IntN(3))*40*time.Millisecond))
				case op < 15:
					k := keys[rng.IntN(len(keys))]
					_, _ = a.Shrink(ctx, k)
					_, _ = a.Extend(ctx, []string{k}, allocator.WithPriority(float64(rng.IntN(3))))
				case op < 16:
					_, _ = a.SetPriority(ctx, float64(rng.IntN(3)), keys[rng.IntN(len(keys))], keys[rng.IntN(len(keys))])
				case op < 17:
					k := keys[rng.IntN(len(keys))]
					if rng.IntN(2) == 0 {
						_, _ = a.Quarantine(ctx, 20*time.Millisecond, k)
					} else {
						_, _ = a.Unquarantine(ctx, k)
					}
				case op < 18:
					_, _ = a.GC(ctx, rng.IntN(4))
				case op < 19:
					_, _, _ = sh.MallocKey(ctx, allocator.WithBind(fmt.Sprint("c", rng.IntN(3)), 0))
				case op < 20:
					// keep the pool populated
					_, _ = a.Extend(ctx, keys)
				default:
					s, err := a.Snapshot(ctx)
					if err == nil {
						for _, p := range s.Problems() {
							probs.Store("invariant: "+p, true)
						}
					}
				}
			}
			if sess != nil {
				sess.Orphan()
			}
		}
		for i := range 10 {
			wg.Add(1)
			a := a1
			if i%2 == 1 {
				a = a2
			}
			go worker(i, a)
		}
		time.Sleep(6 * time.Second)
		stop.Store(true)
		wg.Wait()
		dropped.Wait()
		// Everything ends: after the TTLs, GC returns the pool whole.
		time.Sleep(400 * time.Millisecond)
		_, _ = a1.Extend(ctx, keys)
		for range 20 {
			_, _ = a1.GC(ctx, 1000)
		}
		s := checkInvariants(t, a1)
		for k, l := range s.Leases {
			if !l.Expires.IsZero() {
				probs.Store(fmt.Sprintf("lease on %q still there after its TTL: %+v", k, l), true)
			}
		}
		t.Logf("%d leases checked, %d sessions, %d ops", nLeases.Load(), nSess.Load(), nOps.Load())
		reportProblems(t, &probs, iv)
	})
}
