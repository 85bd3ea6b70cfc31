package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/keys"
)

// pairWarmupOps is how many operations each case runs, at the largest
// goroutine count, before the timed rounds: they open the connections, load
// the scripts and create the fencing counters.
const pairWarmupOps = 2000

// Ids of the floor cases of the malloc+free runs.
const (
	floorID     = "floor"
	floorArgsID = "floor-args"
)

// allocPairCase is one case of the malloc+free runs.
type allocPairCase struct {
	id      string
	name    string
	pool    int  // pool size; 0 for the floors
	batched bool // the allocator's default batching, else WithBatching(0)
	op      opFunc
}

// FloorRatio is a case's ops/s divided by the floor's, within each round:
// the median of the per-round ratios and their quartiles.
type FloorRatio struct {
	Case       string     `json:"case"`
	Goroutines int        `json:"goroutines"`
	Median     float64    `json:"median"`
	Quartiles  [2]float64 `json:"quartiles"`
}

// GrowthRatio compares the cost of a pair on the largest pool with the
// smallest, for one batching mode and goroutine count.
type GrowthRatio struct {
	Batched    bool `json:"batched"`
	Goroutines int  `json:"goroutines"`
	From       int  `json:"from_pool"`
	To         int  `json:"to_pool"`
	// Time is the time per pair on To ÷ on From (pairs/s on From ÷ on To),
	// the median of the per-round ratios, with quartiles.
	Time          float64    `json:"time"`
	TimeQuartiles [2]float64 `json:"time_quartiles"`
	// RedisUsec is the median Redis µs per pair (commandstats) on To ÷ on
	// From; RedisCPU the same for the server's process CPU.
	RedisUsec float64 `json:"redis_usec"`
	RedisCPU  float64 `json:"redis_cpu"`
}

// pairCases fills the pools and returns the cases in their forward order:
// the floor, the floor with a malloc's arguments, then per pool size the
// allocator with batching off and on.
func pairCases(ctx context.Context, e *allocEnv) ([]allocPairCase, error) {
	fkeys := make([]string, numKeys)
	for i := range fkeys {
		fkeys[i] = e.prefix + "|floor:k" + strconv.Itoa(i)
	}
	cases := []allocPairCase{{
		id: floorID, name: "floor: EVALSHA return 1, 1 key",
		op: func(ctx context.Context, i int) (bool, error) {
			n, err := floorScript.Run(ctx, e.client, fkeys[i:i+1]).Int64()
			if err == nil && n != 1 {
				err = fmt.Errorf("floor script returned %d", n)
			}
			return false, err
		},
	}}
	// The same no-op script sent with what a malloc sends: the pool's 13
	// keys and 7 arguments. The difference to the floor is what parsing
	// the larger command costs.
	pkeys := keys.NewPool(e.poolPrefix("floor"), allocator.DefaultSuffix).Scripts()
	token := rand.Text()[:26] + "000000"
	cases = append(cases, allocPairCase{
		id: floorArgsID, name: "floor: EVALSHA return 1, a malloc's 13 keys + 7 args",
		op: func(ctx context.Context, _ int) (bool, error) {
			return false, floorScript.Run(ctx, e.client, pkeys, "", allocator.DefaultReclaimBudget, allocLeaseTTL.Milliseconds(), token, "-", 1, 0).Err()
		},
	})
	for _, size := range e.cfg.PoolSizes {
		prefix, err := e.pool(ctx, size)
		if err != nil {
			return nil, err
		}
		for _, batched := range []bool{false, true} {
			opts, id, mode := []allocator.Option{allocator.WithBatching(0)}, "unbatched", "WithBatching(0)"
			if batched {
				opts, id, mode = nil, "batched", "default batching"
			}
			a, err := e.newAlloc(prefix, opts...)
			if err != nil {
				return nil, err
			}
			cases = append(cases, allocPairCase{
				id:   fmt.Sprintf("p%d-%s", size, id),
				name: fmt.Sprintf("malloc+free, pool %s, %s", count(size), mode),
				pool: size, batched: batched, op: pairOp(a),
			})
		}
	}
	return cases, nil
}

// pairOp leases a resource and frees it: two round trips. A pool found
// empty counts as busy (never seen: pools are larger than the goroutine
// count).
func pairOp(a *allocator.Allocator) opFunc {
	return func(ctx context.Context, _ int) (bool, error) {
		l, err := a.MallocLease(ctx, allocator.WithLeaseTTL(allocLeaseTTL))
		if errors.Is(err, allocator.ErrNoneAvailable) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return false, l.Free(ctx)
	}
}

// runPairs times the malloc+free cases and the floors: per round and
// goroutine count every case runs once, in forward order on even rounds
// and reversed on odd ones.
func runPairs(ctx context.Context, e *allocEnv, rep *AllocReport) error {
	cases, err := pairCases(ctx, e)
	if err != nil {
		return err
	}
	rep.cases = cases
	maxG := 0
	for _, n := range e.cfg.Goroutines {
		maxG = max(maxG, n)
	}
	for _, c := range cases {
		e.progress("warm-up %s ...", c.name)
		if _, err := runOps(ctx, c.op, maxG, 0, pairWarmupOps); err != nil {
			return fmt.Errorf("warm-up %s: %w", c.id, err)
		}
	}
	results := map[string]*CaseResult{}
	key := func(id string, n int) string { return id + "/" + strconv.Itoa(n) }
	for _, n := range e.cfg.Goroutines {
		for _, c := range cases {
			cr := &CaseResult{Impl: c.id, Name: c.name, Goroutines: n, Commands: CmdStats{}}
			results[key(c.id, n)] = cr
			rep.Pairs = append(rep.Pairs, cr)
		}
	}
	for r := range e.cfg.Rounds {
		for _, n := range e.cfg.Goroutines {
			for _, c := range alternate(cases, r) {
				e.progress("round %d/%d goroutines=%d %s ...", r+1, e.cfg.Rounds, n, c.name)
				w, err := beginStats(ctx, e.client)
				if err != nil {
					return err
				}
				res, err := runOps(ctx, c.op, n, e.cfg.Duration, 0)
				if err != nil {
					return fmt.Errorf("%s, %d goroutines: %w", c.name, n, err)
				}
				st, cpu, err := w.end(ctx)
				if err != nil {
					return err
				}
				res.RedisUsecPerOp = float64(st.sentUsec()) / float64(res.Ops)
				res.RedisCPUUsecPerOp = cpu * 1e6 / float64(res.Ops)
				cr := results[key(c.id, n)]
				cr.Runs = append(cr.Runs, res)
				cr.Ops += res.Ops
				cr.Busy += res.Busy
				cr.Commands.add(st)
				cr.CPUSecond += cpu
			}
		}
	}
	for _, cr := range rep.Pairs {
		summarizeRuns(cr)
	}
	for _, n := range e.cfg.Goroutines {
		floor := results[key(floorID, n)]
		for _, c := range cases[1:] {
			m, q := roundRatios(results[key(c.id, n)], floor)
			rep.VsFloor = append(rep.VsFloor, FloorRatio{Case: c.id, Goroutines: n, Median: m, Quartiles: q})
		}
	}
	if small, large := minMax(e.cfg.PoolSizes); small != large {
		for _, n := range e.cfg.Goroutines {
			for _, batched := range []bool{false, true} {
				from, to := results[key(pairID(small, batched), n)], results[key(pairID(large, batched), n)]
				m, q := roundRatios(from, to)
				rep.Growth = append(rep.Growth, GrowthRatio{
					Batched: batched, Goroutines: n, From: small, To: large, Time: m, TimeQuartiles: q,
					RedisUsec: to.RedisUsecPerOp / from.RedisUsecPerOp,
					RedisCPU:  to.RedisCPUUsecPerOp / from.RedisCPUUsecPerOp,
				})
			}
		}
	}
	return nil
}

// pairID is the id of the malloc+free case of a pool size and batching.
func pairID(size int, batched bool) string {
	if batched {
		return fmt.Sprintf("p%d-batched", size)
	}
	return fmt.Sprintf("p%d-unbatched", size)
}

// summarizeRuns sets a case's medians over its runs.
func summarizeRuns(c *CaseResult) {
	var ops, rus, rcpu []float64
	var mean, p50, p99 []time.Duration
	for _, r := range c.Runs {
		ops = append(ops, r.OpsPerSec)
		mean = append(mean, r.Mean)
		p50 = append(p50, r.P50)
		p99 = append(p99, r.P99)
		rus = append(rus, r.RedisUsecPerOp)
		rcpu = append(rcpu, r.RedisCPUUsecPerOp)
	}
	c.OpsPerSec, c.Mean, c.P50, c.P99 = median(ops), median(mean), median(p50), median(p99)
	c.RedisUsecPerOp, c.RedisCPUUsecPerOp = median(rus), median(rcpu)
}

// minMax returns the smallest and largest of xs (not empty).
func minMax(xs []int) (int, int) {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// count formats n with thin groups of three digits: 1 000 000.
func count(n int) string {
	s := strconv.Itoa(n)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ' ')
		}
		out = append(out, s[i])
	}
	return string(out)
}
