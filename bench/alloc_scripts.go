package bench

import (
	"context"
	"fmt"

	"github.com/redisallocator/redisallocator/allocator"
)

// AllocScript is the cost of one allocator script measured alone on one
// pool.
type AllocScript struct {
	Pool   int    `json:"pool"`
	Script string `json:"script"`
	Calls  int64  `json:"calls"`
	// UsecPerCall is the median over the rounds of the EVALSHA execution
	// time per call (INFO commandstats; the commands the script runs are
	// part of it).
	UsecPerCall float64 `json:"usec_per_call"`
	// Commands sums the stats of the passes over the rounds: the EVALSHAs
	// and the commands the script ran.
	Commands CmdStats `json:"commands"`
}

// measureAllocScripts separates the malloc script from the free script on
// each pool: per round, one goroutine leases ScriptLeases resources (all
// of a smaller pool, repeated until as many calls were made), reading INFO
// commandstats before and after, then frees them all and reads again. One
// goroutine, because commandstats times a command by the wall clock and a
// busy client on a small machine would deschedule the server mid-script.
func measureAllocScripts(ctx context.Context, e *allocEnv) ([]AllocScript, error) {
	var out []AllocScript
	for _, size := range e.cfg.PoolSizes {
		prefix, err := e.pool(ctx, size)
		if err != nil {
			return nil, err
		}
		a, err := e.newAlloc(prefix, allocator.WithBatching(0))
		if err != nil {
			return nil, err
		}
		k := min(size, e.cfg.ScriptLeases)
		reps := (e.cfg.ScriptLeases + k - 1) / k
		leases := make([]*allocator.Lease, k)
		var mallocs, frees []CmdStats
		for r := range e.cfg.ScriptRounds {
			e.progress("script pass %d/%d, pool of %d: %d × (malloc %d, free %d) ...", r+1, e.cfg.ScriptRounds, size, reps, k, k)
			m, f := CmdStats{}, CmdStats{}
			for range reps {
				s0, err := commandStats(ctx, e.client)
				if err != nil {
					return nil, err
				}
				for i := range leases {
					if leases[i], err = a.MallocLease(ctx, allocator.WithLeaseTTL(allocLeaseTTL)); err != nil {
						return nil, fmt.Errorf("malloc %d of %d on a pool of %d: %w", i+1, k, size, err)
					}
				}
				s1, err := commandStats(ctx, e.client)
				if err != nil {
					return nil, err
				}
				for _, l := range leases {
					if err := l.Free(ctx); err != nil {
						return nil, fmt.Errorf("free %s: %w", l.Key(), err)
					}
				}
				s2, err := commandStats(ctx, e.client)
				if err != nil {
					return nil, err
				}
				m.add(s1.minus(s0))
				f.add(s2.minus(s1))
			}
			mallocs, frees = append(mallocs, m), append(frees, f)
		}
		out = append(out, scriptCost(size, "malloc.lua (MallocLease)", mallocs), scriptCost(size, "free.lua (Lease.Free)", frees))
	}
	return out, nil
}

// scriptCost sums the rounds of one script's passes and takes the median
// µs per call.
func scriptCost(size int, script string, rounds []CmdStats) AllocScript {
	sum := CmdStats{}
	var perCall []float64
	for _, st := range rounds {
		sum.add(st)
		perCall = append(perCall, float64(st.sentUsec())/float64(max(st.scriptCalls(), 1)))
	}
	return AllocScript{Pool: size, Script: script, Calls: sum.scriptCalls(), UsecPerCall: median(perCall), Commands: sum}
}
