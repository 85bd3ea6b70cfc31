package allocator_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// interval is one holder's claim on a resource: from the malloc's return
// to the earlier of its free call and the end of its local validity.
type interval struct {
	key        string
	fence      int64
	start, end time.Time
	who        string
}

type intervals struct {
	mu  sync.Mutex
	all []interval
}

func (iv *intervals) add(i interval) {
	iv.mu.Lock()
	iv.all = append(iv.all, i)
	iv.mu.Unlock()
}

// check returns overlaps of intervals on the same key and fences that do
// not grow with the grants' real-time order.
func (iv *intervals) check() []string {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	by := map[string][]interval{}
	for _, i := range iv.all {
		by[i.key] = append(by[i.key], i)
	}
	var out []string
	for k, is := range by {
		sort.Slice(is, func(a, b int) bool { return is[a].start.Before(is[b].start) })
		var maxEnd time.Time
		var maxI interval
		for j, i := range is {
			if j > 0 && i.start.Before(maxEnd) {
				out = append(out, fmt.Sprintf("%q: %s [fence %d] started %v before %s [fence %d] ended", k, i.who, i.fence, maxEnd.Sub(i.start), maxI.who, maxI.fence))
			}
			if j > 0 && i.fence <= is[j-1].fence && !i.start.Before(is[j-1].end) {
				out = append(out, fmt.Sprintf("%q: fence %d after fence %d", k, i.fence, is[j-1].fence))
			}
			if i.end.After(maxEnd) {
				maxEnd, maxI = i.end, i
			}
		}
	}
	return out
}

// reportProblems fails t with the problems a hammer recorded and those of
// its intervals (the first 20).
func reportProblems(t *testing.T, probs *sync.Map, iv *intervals) {
	t.Helper()
	var ps []string
	probs.Range(func(k, _ any) bool { ps = append(ps, k.(string)); return true })
	ps = append(ps, iv.check()...)
	if len(ps) > 20 {
		ps = ps[:20]
	}
	if len(ps) > 0 {
		t.Fatalf("problems:\n%s", strings.Join(ps, "\n"))
	}
}

// advHold keeps l for a while (maybe renewing), then frees it or lets it run
// out, and records the interval.
func advHold(ctx context.Context, rng *rand.Rand, iv *intervals, l *allocator.Lease, start time.Time, who string) {
	time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
	if rng.IntN(3) == 0 && l.TTL() > 0 {
		_ = l.Renew(ctx, l.TTL())
		time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
	}
	end := time.Now()
	if v := l.ValidUntil(); !v.IsZero() && v.Before(end) {
		end = v
	}
	if l.TTL() > 0 && rng.IntN(8) == 0 {
		// drop it: it runs out by itself
		iv.add(interval{key: l.Key(), fence: l.Fence(), start: start, end: l.ValidUntil(), who: who + " (dropped)"})
		return
	}
	iv.add(interval{key: l.Key(), fence: l.Fence(), start: start, end: end, who: who})
	_ = l.Free(ctx)
}

func TestAdvHammerIntervals(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		ctx := context.Background()
		a1 := tg.newAlloc(t)
		a2 := tg.allocOn(t, a1.Prefix())
		keys := names("r", 6)
		ok(t, errOnly(a1.Extend(ctx, keys)))
		iv := &intervals{}
		var stop atomic.Bool
		var wg sync.WaitGroup
		var probs sync.Map
		var nLeases, nOps atomic.Int64
		ttls := []time.Duration{25 * time.Millisecond, 60 * time.Millisecond, 300 * time.Millisecond, 0}
		worker := func(id int, a *allocator.Allocator) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 7))
			for i := 0; !stop.Load(); i++ {
				nOps.Add(1)
				who := fmt.Sprintf("w%d#%d", id, i)
				ttl := ttls[rng.IntN(len(ttls))]
				switch op := rng.IntN(20); {
				case op < 8:
					start := time.Now()
					l, err := a.MallocLease(ctx, allocator.WithLeaseTTL(ttl))
					if err != nil {
						if !errors.Is(err, allocator.ErrNoneAvailable) {
							probs.Store(err.Error(), true)
						}
						continue
					}
					_ = start
					nLeases.Add(1)
					advHold(ctx, rng, iv, l, time.Now(), who)
				case op < 10:
					ls, err := a.MallocN(ctx, 2+rng.IntN(2), allocator.WithLeaseTTL(ttl))
					if err != nil {
						continue
					}
					now := time.Now()
					for _, l := range ls {
						nLeases.Add(1)
						advHold(ctx, rng, iv, l, now, who)
					}
				case op < 14 && os.Getenv("ADV_NOWAIT") != "":
					continue
				case op < 14:
					wctx, cancel := context.WithTimeout(ctx, time.Duration(1+rng.IntN(80))*time.Millisecond)
					l, err := a.MallocWait(wctx, allocator.WithLeaseTTL(ttl))
					cancel()
					if err != nil {
						continue
					}
					nLeases.Add(1)
					advHold(ctx, rng, iv, l, time.Now(), who+" (wait)")
				case op < 15:
					k := keys[rng.IntN(len(keys))]
					_, _ = a.Shrink(ctx, k)
					time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					_, _ = a.Extend(ctx, []string{k})
				case op < 16:
					_, _, _ = a.Assign(ctx, keys, allocator.WithMemberTTL(time.Duration(rng.IntN(2))*time.Second))
				case op < 17:
					k := keys[rng.IntN(len(keys))]
					if rng.IntN(2) == 0 {
						_, _ = a.Quarantine(ctx, 20*time.Millisecond, k)
					} else {
						_, _ = a.Unquarantine(ctx, k)
					}
				case op < 18:
					_, _ = a.GC(ctx, rng.IntN(5))
				case op < 19:
					_ = a.Clear
					if rng.IntN(10) == 0 {
						_, _ = a.Clear(ctx)
						_, _ = a.Extend(ctx, keys)
					}
				default:
					s, err := a.Snapshot(ctx)
					if err == nil {
						for _, p := range s.Problems() {
							probs.Store("invariant: "+p, true)
						}
					}
				}
			}
		}
		for i := range 12 {
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
		t.Logf("%d leases checked, %d ops", nLeases.Load(), nOps.Load())
		reportProblems(t, &probs, iv)
	})
}
