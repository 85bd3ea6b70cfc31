package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// gcLeaseTTL is the TTL of the leases GC reclaims, and gcSettle how long
// the harness waits for them to expire.
const (
	gcLeaseTTL = time.Millisecond
	gcSettle   = 5 * time.Millisecond
)

// GCRun is one GC call.
type GCRun struct {
	Reclaimed int `json:"reclaimed"`
	// Usec is the EVALSHA execution time of the call (INFO commandstats).
	Usec int64 `json:"usec"`
	// CPUUsec is the server process CPU (user + sys) between two INFO cpu
	// calls around the GC call: it includes the INFO calls' own work.
	CPUUsec float64       `json:"cpu_usec"`
	Wall    time.Duration `json:"wall_ns"` // GC's round trip in the client
}

// GCCase is GC on one pool with a number of expired leases, over the
// rounds.
type GCCase struct {
	Pool    int     `json:"pool"`
	Expired int     `json:"expired"`
	Runs    []GCRun `json:"runs"`
	// Medians over the rounds.
	UsecPerCall    float64       `json:"usec_per_call"`
	CPUUsecPerCall float64       `json:"cpu_usec_per_call"`
	Wall           time.Duration `json:"wall_ns"`
	// UsecPerLease is UsecPerCall ÷ Expired (0 when nothing expired).
	UsecPerLease float64  `json:"usec_per_lease"`
	Commands     CmdStats `json:"commands"` // summed over the rounds
}

// gcWarmCalls is how many GC calls with nothing to reclaim run back to
// back for the warm fixed cost of a call.
const gcWarmCalls = 200

// GCWarm is the fixed cost of GC measured warm: gcWarmCalls calls with
// nothing to reclaim, back to back, in one stats window.
type GCWarm struct {
	Pool        int     `json:"pool"`
	Calls       int64   `json:"calls"`
	UsecPerCall float64 `json:"usec_per_call"`
}

// gcBudget is the count given to GC: more than the most expired leases of
// any run, so every call reclaims all of them.
func (c AllocConfig) gcBudget() int {
	_, hi := minMax(c.GCExpired)
	return 2 * hi
}

// measureGC times one GC call per pool, expired count and round. Before
// each call, MallocN leases that many members with a TTL of 1 ms and the
// harness sleeps until they expired. The allocator's reclaim budget is 0,
// so nothing but GC reclaims them. A call with nothing expired gives the
// fixed cost. The expired counts alternate their order each round.
func measureGC(ctx context.Context, e *allocEnv) ([]*GCCase, []GCWarm, error) {
	expired := append([]int{0}, e.cfg.GCExpired...)
	var out []*GCCase
	var warm []GCWarm
	for _, size := range e.cfg.GCPools {
		prefix, err := e.pool(ctx, size)
		if err != nil {
			return nil, nil, err
		}
		a, err := e.newAlloc(prefix, allocator.WithBatching(0), allocator.WithReclaimBudget(0))
		if err != nil {
			return nil, nil, err
		}
		cases := map[int]*GCCase{}
		for _, x := range expired {
			cases[x] = &GCCase{Pool: size, Expired: x, Commands: CmdStats{}}
			out = append(out, cases[x])
		}
		// Reclaim whatever earlier parts left to expire (nothing, normally).
		if _, err := a.GC(ctx, e.cfg.gcBudget()); err != nil {
			return nil, nil, err
		}
		for r := range e.cfg.GCRounds {
			e.progress("GC round %d/%d, pool of %d ...", r+1, e.cfg.GCRounds, size)
			for _, x := range alternate(expired, r) {
				run, st, err := gcRun(ctx, e, a, x)
				if err != nil {
					return nil, nil, fmt.Errorf("pool of %d, %d expired: %w", size, x, err)
				}
				c := cases[x]
				c.Runs = append(c.Runs, run)
				c.Commands.add(st)
			}
		}
		for _, x := range expired {
			summarizeGC(cases[x])
		}
		w, err := gcWarm(ctx, e, a, size)
		if err != nil {
			return nil, nil, err
		}
		warm = append(warm, w)
	}
	return out, warm, nil
}

// gcWarm times gcWarmCalls GC calls with nothing to reclaim, back to back.
func gcWarm(ctx context.Context, e *allocEnv, a *allocator.Allocator, size int) (GCWarm, error) {
	w, err := beginStats(ctx, e.client)
	if err != nil {
		return GCWarm{}, err
	}
	for range gcWarmCalls {
		got, err := a.GC(ctx, e.cfg.gcBudget())
		if err != nil {
			return GCWarm{}, err
		}
		if got.Total() != 0 {
			return GCWarm{}, fmt.Errorf("GC with nothing expired reclaimed %+v", got)
		}
	}
	st, _, err := w.end(ctx)
	if err != nil {
		return GCWarm{}, err
	}
	calls := st.scriptCalls()
	return GCWarm{Pool: size, Calls: calls, UsecPerCall: float64(st.sentUsec()) / float64(max(calls, 1))}, nil
}

// gcRun lets expired leases expire and times one GC call.
func gcRun(ctx context.Context, e *allocEnv, a *allocator.Allocator, expired int) (GCRun, CmdStats, error) {
	if expired > 0 {
		if _, err := a.MallocN(ctx, expired, allocator.WithLeaseTTL(gcLeaseTTL)); err != nil {
			return GCRun{}, nil, fmt.Errorf("MallocN: %w", err)
		}
	}
	time.Sleep(gcSettle)
	w, err := beginStats(ctx, e.client)
	if err != nil {
		return GCRun{}, nil, err
	}
	t0 := time.Now()
	got, err := a.GC(ctx, e.cfg.gcBudget())
	wall := time.Since(t0)
	if err != nil {
		return GCRun{}, nil, err
	}
	st, cpu, err := w.end(ctx)
	if err != nil {
		return GCRun{}, nil, err
	}
	if got.Leases != expired || got.Total() != expired {
		return GCRun{}, nil, fmt.Errorf("GC reclaimed %+v, want %d expired leases and nothing else", got, expired)
	}
	return GCRun{Reclaimed: got.Leases, Usec: st.sentUsec(), CPUUsec: cpu * 1e6, Wall: wall}, st, nil
}

func summarizeGC(c *GCCase) {
	var us, cpu []float64
	var wall []time.Duration
	for _, r := range c.Runs {
		us = append(us, float64(r.Usec))
		cpu = append(cpu, r.CPUUsec)
		wall = append(wall, r.Wall)
	}
	c.UsecPerCall, c.CPUUsecPerCall, c.Wall = median(us), median(cpu), median(wall)
	if c.Expired > 0 {
		c.UsecPerLease = c.UsecPerCall / float64(c.Expired)
	}
}

// gcMarginal returns, for a pool, the Redis µs per reclaimed lease beyond
// the fixed cost: (µs of the call with the most expired − µs of the empty
// call) ÷ that many leases.
func gcMarginal(cases []*GCCase, pool int) (float64, bool) {
	var empty, most *GCCase
	for _, c := range cases {
		if c.Pool != pool {
			continue
		}
		if c.Expired == 0 {
			empty = c
		} else if most == nil || c.Expired > most.Expired {
			most = c
		}
	}
	if empty == nil || most == nil {
		return 0, false
	}
	return (most.UsecPerCall - empty.UsecPerCall) / float64(most.Expired), true
}

// gcPools returns the distinct pool sizes of cases, in order.
func gcPools(cases []*GCCase) []int {
	var out []int
	for _, c := range cases {
		if !slices.Contains(out, c.Pool) {
			out = append(out, c.Pool)
		}
	}
	return out
}
