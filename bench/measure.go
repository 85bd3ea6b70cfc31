package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RunResult is one timed run of one case.
type RunResult struct {
	Ops       int64         `json:"ops"`
	Busy      int64         `json:"busy"` // operations that found the key taken
	Elapsed   time.Duration `json:"elapsed_ns"`
	OpsPerSec float64       `json:"ops_per_sec"`
	Mean      time.Duration `json:"mean_ns"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// Set by Run from the server's stats around the run.
	RedisUsecPerOp    float64 `json:"redis_usec_per_op,omitempty"`
	RedisCPUUsecPerOp float64 `json:"redis_cpu_usec_per_op,omitempty"`
}

// runOps runs op from goroutines goroutines until dur has passed (fixedOps
// ≤ 0) or fixedOps operations were started, and times each operation. Op k
// (counted from 0 across all goroutines) uses key index k mod numKeys. The
// first error stops the run and is returned.
func runOps(ctx context.Context, op opFunc, goroutines int, dur time.Duration, fixedOps int64) (RunResult, error) {
	var (
		seq      atomic.Int64
		stop     atomic.Bool
		busy     atomic.Int64
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, goroutines)
	perWorker := 4096
	if fixedOps > 0 {
		perWorker = int(fixedOps)/goroutines + 1
	}

	start := time.Now()
	if fixedOps <= 0 {
		t := time.AfterFunc(dur, func() { stop.Store(true) })
		defer t.Stop()
	}
	for w := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, perWorker)
			defer func() { lat[w] = l }()
			for !stop.Load() {
				k := seq.Add(1) - 1
				if fixedOps > 0 && k >= fixedOps {
					return
				}
				t0 := time.Now()
				b, err := op(ctx, int(k%numKeys))
				d := time.Since(t0)
				if err == nil {
					err = ctx.Err()
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				if b {
					busy.Add(1)
				}
				l = append(l, d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return RunResult{}, firstErr
	}

	all := slices.Concat(lat...)
	if len(all) == 0 {
		return RunResult{}, fmt.Errorf("no operation completed")
	}
	slices.Sort(all)
	var sum time.Duration
	for _, d := range all {
		sum += d
	}
	n := int64(len(all))
	return RunResult{
		Ops:       n,
		Busy:      busy.Load(),
		Elapsed:   elapsed,
		OpsPerSec: float64(n) / elapsed.Seconds(),
		Mean:      sum / time.Duration(n),
		P50:       percentile(all, 0.50),
		P99:       percentile(all, 0.99),
	}, nil
}

// percentile returns the q-quantile (nearest rank) of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// median returns the median of xs (the mean of the middle two for an even
// count). xs is not modified.
func median[T ~int64 | ~float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
