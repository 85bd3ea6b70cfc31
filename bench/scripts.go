package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/bsm/redislock"

	"github.com/redisallocator/redisallocator/lock"
)

// scriptPassGoroutines is the concurrency of the script passes. Commandstats
// times a command by the wall clock, so a server descheduled mid-script (by
// busy client goroutines on a small machine) counts the pause: one
// goroutine, which waits while the server works, keeps that out.
const scriptPassGoroutines = 1

// lockLib is one library under the script passes: acquire takes key index i
// and keeps the handle, release frees it again.
type lockLib struct {
	name             string
	acquire, release func(ctx context.Context, i int) error
}

func libs(e *env) []lockLib {
	held := make([]*lock.Held, numKeys)
	obtained := make([]*redislock.Lock, numKeys)
	return []lockLib{
		{
			name: "redisallocator",
			acquire: func(ctx context.Context, i int) (err error) {
				held[i], err = e.ours.TryAcquire(ctx, e.keys[i], lockTTL)
				return err
			},
			release: func(ctx context.Context, i int) error { return held[i].Release(ctx) },
		},
		{
			name: "bsm/redislock",
			acquire: func(ctx context.Context, i int) (err error) {
				obtained[i], err = e.bsm.Obtain(ctx, e.rkeys[i], lockTTL, nil)
				return err
			},
			release: func(ctx context.Context, i int) error { return obtained[i].Release(ctx) },
		},
	}
}

// measureScripts separates the acquire script from the release script: per
// round and library it acquires all numKeys keys (free, distinct, TTL
// lockTTL) and reads the command stats, then releases them all and reads
// them again. The libraries alternate their order each round. Per script it
// reports the median over the rounds of the EVALSHA time per call, and the
// stats summed over the rounds.
func measureScripts(ctx context.Context, e *env, rounds int) ([]ScriptCost, error) {
	ls := libs(e)
	// per[lib][phase] holds each round's stats; phase 0 acquires, 1 releases.
	per := make([][2][]CmdStats, len(ls))
	for r := range rounds {
		for j := range ls {
			k := j
			if r%2 == 1 {
				k = len(ls) - 1 - j
			}
			l := ls[k]
			for phase, fn := range []func(context.Context, int) error{l.acquire, l.release} {
				w, err := beginStats(ctx, e.client)
				if err != nil {
					return nil, err
				}
				if err := forEachKey(ctx, fn); err != nil {
					return nil, fmt.Errorf("script pass %s: %w", l.name, err)
				}
				st, _, err := w.end(ctx)
				if err != nil {
					return nil, err
				}
				per[k][phase] = append(per[k][phase], st)
			}
		}
	}
	cost := func(what string, runs []CmdStats) ScriptCost {
		sum := CmdStats{}
		var perCall []float64
		for _, st := range runs {
			sum.add(st)
			perCall = append(perCall, st["evalsha"].UsecPerCall())
		}
		return ScriptCost{What: what, Command: "evalsha", Calls: sum["evalsha"].Calls, UsecPerCall: median(perCall), Commands: sum}
	}
	return []ScriptCost{
		cost("redisallocator acquire script (TryAcquire)", per[0][0]),
		cost("redisallocator release script (Release)", per[0][1]),
		cost("bsm/redislock obtain script (Obtain)", per[1][0]),
		cost("bsm/redislock release script (Release)", per[1][1]),
	}, nil
}

// forEachKey calls fn for every key index from scriptPassGoroutines
// goroutines and returns the first error.
func forEachKey(ctx context.Context, fn func(context.Context, int) error) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range scriptPassGoroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= numKeys {
					return
				}
				if err := fn(ctx, int(i)); err != nil {
					errOnce.Do(func() { first = err })
					next.Store(numKeys)
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
