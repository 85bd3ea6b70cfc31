package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redisallocator/redisallocator/allocator"
)

// WaitRun is one timed run of MallocWait hand-offs.
type WaitRun struct {
	Round int `json:"round"`
	// Handoffs counts the acquisitions whose MallocWait returned within
	// the timed window.
	Handoffs       int64   `json:"handoffs"`
	Seconds        float64 `json:"seconds"`
	HandoffsPerSec float64 `json:"handoffs_per_sec"`
	// Wake latency of the next holder, per hand-off: from the previous
	// holder's call of Free to the return of MallocWait (Wake), and from
	// the return of that Free (WakeAfterReturn; negative when the waiter
	// woke before the freeing client read its reply).
	WakeP50            time.Duration `json:"wake_p50_ns"`
	WakeP99            time.Duration `json:"wake_p99_ns"`
	WakeAfterReturnP50 time.Duration `json:"wake_after_return_p50_ns"`
	WakeAfterReturnP99 time.Duration `json:"wake_after_return_p99_ns"`
	// Overlaps counts acquisitions that returned before the previous
	// holder called Free: it must be 0.
	Overlaps int64 `json:"overlaps"`
	// Published is the number of PUBLISH calls (hand-offs announced to a
	// queued waiter) in the window.
	Published int64 `json:"published"`
	// Server side, per hand-off: the process CPU (INFO cpu) and the
	// execution time of the commands the clients sent (commandstats:
	// scripts and pub/sub commands).
	RedisCPUUsecPerHandoff float64  `json:"redis_cpu_usec_per_handoff"`
	RedisUsecPerHandoff    float64  `json:"redis_usec_per_handoff"`
	ScriptsPerHandoff      float64  `json:"scripts_per_handoff"`
	Commands               CmdStats `json:"commands"`
}

// WaitCase is one waiter count over the rounds; figures are medians over
// the runs.
type WaitCase struct {
	Waiters                int           `json:"waiters"`
	Runs                   []WaitRun     `json:"runs"`
	Handoffs               int64         `json:"handoffs"` // summed
	HandoffsPerSec         float64       `json:"handoffs_per_sec"`
	WakeP50                time.Duration `json:"wake_p50_ns"`
	WakeP99                time.Duration `json:"wake_p99_ns"`
	WakeAfterReturnP50     time.Duration `json:"wake_after_return_p50_ns"`
	WakeAfterReturnP99     time.Duration `json:"wake_after_return_p99_ns"`
	Overlaps               int64         `json:"overlaps"` // summed
	PublishedShare         float64       `json:"published_share"`
	RedisCPUUsecPerHandoff float64       `json:"redis_cpu_usec_per_handoff"`
	RedisUsecPerHandoff    float64       `json:"redis_usec_per_handoff"`
	ScriptsPerHandoff      float64       `json:"scripts_per_handoff"`
	Commands               CmdStats      `json:"commands"` // summed
	// CPURatio and UsecRatio are this case's Redis CPU and Redis µs per
	// hand-off ÷ those of the fewest waiters, within each round (median
	// and quartiles); set on every case but the first.
	CPURatio           float64    `json:"cpu_ratio,omitempty"`
	CPURatioQuartiles  [2]float64 `json:"cpu_ratio_quartiles,omitzero"`
	UsecRatio          float64    `json:"usec_ratio,omitempty"`
	UsecRatioQuartiles [2]float64 `json:"usec_ratio_quartiles,omitzero"`
}

// holdRecord is one lease of a hand-off run.
type holdRecord struct {
	fence    int64
	acquired time.Time // MallocWait returned
	freeCall time.Time // Free called
	freeDone time.Time // Free returned
}

// measureWait runs, per round, each waiter count once (alternating order):
// waiters+1 goroutines loop MallocWait, hold, Free on a fresh pool of one
// member, so that waiters of them wait while one holds and every Free hands
// the member to the longest waiter.
func measureWait(ctx context.Context, e *allocEnv) ([]*WaitCase, error) {
	cases := map[int]*WaitCase{}
	var out []*WaitCase
	for _, w := range e.cfg.Waiters {
		if cases[w] == nil {
			cases[w] = &WaitCase{Waiters: w, Commands: CmdStats{}}
			out = append(out, cases[w])
		}
	}
	for r := range e.cfg.WaitRounds {
		for _, c := range alternate(out, r) {
			e.progress("MallocWait round %d/%d, %d waiters ...", r+1, e.cfg.WaitRounds, c.Waiters)
			run, err := waitRun(ctx, e, r, c.Waiters)
			if err != nil {
				return nil, fmt.Errorf("%d waiters: %w", c.Waiters, err)
			}
			c.Runs = append(c.Runs, run)
			c.Handoffs += run.Handoffs
			c.Overlaps += run.Overlaps
			c.Commands.add(run.Commands)
		}
	}
	for _, c := range out {
		var hps, pub, cpu, us, spc []float64
		var p50, p99, rp50, rp99 []time.Duration
		for _, r := range c.Runs {
			hps = append(hps, r.HandoffsPerSec)
			pub = append(pub, float64(r.Published)/float64(max(r.Handoffs, 1)))
			cpu = append(cpu, r.RedisCPUUsecPerHandoff)
			us = append(us, r.RedisUsecPerHandoff)
			spc = append(spc, r.ScriptsPerHandoff)
			p50, p99 = append(p50, r.WakeP50), append(p99, r.WakeP99)
			rp50, rp99 = append(rp50, r.WakeAfterReturnP50), append(rp99, r.WakeAfterReturnP99)
		}
		c.HandoffsPerSec, c.PublishedShare = median(hps), median(pub)
		c.RedisCPUUsecPerHandoff, c.RedisUsecPerHandoff, c.ScriptsPerHandoff = median(cpu), median(us), median(spc)
		c.WakeP50, c.WakeP99 = median(p50), median(p99)
		c.WakeAfterReturnP50, c.WakeAfterReturnP99 = median(rp50), median(rp99)
	}
	base := out[0]
	for _, c := range out[1:] {
		c.CPURatio, c.CPURatioQuartiles = ratioQuartiles(waitValues(c, cpuPerHandoff), waitValues(base, cpuPerHandoff))
		c.UsecRatio, c.UsecRatioQuartiles = ratioQuartiles(waitValues(c, usecPerHandoff), waitValues(base, usecPerHandoff))
	}
	return out, nil
}

func cpuPerHandoff(r WaitRun) float64  { return r.RedisCPUUsecPerHandoff }
func usecPerHandoff(r WaitRun) float64 { return r.RedisUsecPerHandoff }

func waitValues(c *WaitCase, f func(WaitRun) float64) []float64 {
	out := make([]float64, len(c.Runs))
	for i, r := range c.Runs {
		out[i] = f(r)
	}
	return out
}

// waitRun is one run: warm-up, then a timed window bracketed by the
// server's stats, then the goroutines stop (the waiters' MallocWait ends
// with the context and leaves the queue).
func waitRun(ctx context.Context, e *allocEnv, round, waiters int) (WaitRun, error) {
	a, err := e.newAlloc(e.poolPrefix(fmt.Sprintf("wait-r%d-w%d", round, waiters)))
	if err != nil {
		return WaitRun{}, err
	}
	defer a.Close()
	if _, err := a.Extend(ctx, []string{"only"}); err != nil {
		return WaitRun{}, err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		recs    []holdRecord
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { runErr = err })
		cancel()
	}
	for range waiters + 1 {
		wg.Go(func() {
			var mine []holdRecord
			defer func() {
				mu.Lock()
				recs = append(recs, mine...)
				mu.Unlock()
			}()
			for rctx.Err() == nil {
				l, err := a.MallocWait(rctx, allocator.WithLeaseTTL(allocLeaseTTL))
				if err != nil {
					if rctx.Err() == nil {
						fail(fmt.Errorf("MallocWait: %w", err))
					}
					return
				}
				rec := holdRecord{fence: l.Fence(), acquired: time.Now()}
				if e.cfg.Hold > 0 {
					time.Sleep(e.cfg.Hold)
				}
				rec.freeCall = time.Now()
				err = l.Free(context.WithoutCancel(rctx))
				rec.freeDone = time.Now()
				if err != nil {
					fail(fmt.Errorf("free: %w", err))
					return
				}
				mine = append(mine, rec)
			}
		})
	}
	stop := func() { cancel(); wg.Wait() }
	select {
	case <-time.After(e.cfg.WaitWarmup):
	case <-rctx.Done():
	}
	w, err := beginStats(ctx, e.client)
	if err != nil {
		stop()
		return WaitRun{}, err
	}
	t0 := time.Now()
	select {
	case <-time.After(e.cfg.WaitDuration):
	case <-rctx.Done():
	}
	t1 := time.Now()
	st, cpu, err := w.end(ctx)
	stop()
	if runErr != nil {
		return WaitRun{}, runErr
	}
	if err != nil {
		return WaitRun{}, err
	}
	return summarizeWait(round, recs, t0, t1, st, cpu)
}

// summarizeWait pairs each lease with the one before it (by fence: the
// pool's fences rise by one per grant) and counts the hand-offs of the
// window [t0, t1].
func summarizeWait(round int, recs []holdRecord, t0, t1 time.Time, st CmdStats, cpu float64) (WaitRun, error) {
	slices.SortFunc(recs, func(x, y holdRecord) int { return cmp.Compare(x.fence, y.fence) })
	var wake, after []time.Duration
	run := WaitRun{Round: round, Seconds: t1.Sub(t0).Seconds(), Commands: st, Published: st["publish"].Calls}
	for i, r := range recs {
		if r.acquired.Before(t0) || r.acquired.After(t1) {
			continue
		}
		run.Handoffs++
		if i == 0 || recs[i-1].fence != r.fence-1 {
			continue // its predecessor was not recorded
		}
		p := recs[i-1]
		if r.acquired.Before(p.freeCall) {
			run.Overlaps++
		}
		wake = append(wake, r.acquired.Sub(p.freeCall))
		after = append(after, r.acquired.Sub(p.freeDone))
	}
	if run.Handoffs == 0 || len(wake) == 0 {
		return run, fmt.Errorf("no hand-off in the timed window")
	}
	slices.Sort(wake)
	slices.Sort(after)
	n := float64(run.Handoffs)
	run.HandoffsPerSec = n / run.Seconds
	run.WakeP50, run.WakeP99 = percentile(wake, 0.5), percentile(wake, 0.99)
	run.WakeAfterReturnP50, run.WakeAfterReturnP99 = percentile(after, 0.5), percentile(after, 0.99)
	run.RedisCPUUsecPerHandoff = cpu * 1e6 / n
	run.RedisUsecPerHandoff = float64(st.usecOf(append(slices.Clone(scriptCommands), pubsubCommands...))) / n
	run.ScriptsPerHandoff = float64(st.scriptCalls()) / n
	return run, nil
}
