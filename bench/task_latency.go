package bench

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
)

// taskFloorKey is the key of the no-op script of the floor cases.
const taskFloorKey = "taskbench-floor"

// latency runs part 1: per caller count the floor (one no-op EVALSHA per
// call), taskqueue's Query against a listener and asynq's RPC (Enqueue,
// then GetTaskInfo every Poll until completed) with TaskCheckInterval
// FastInterval; then asynq's RPC with its default interval at the fewest
// callers.
func (b *taskBench) latency(ctx context.Context) ([]*LatencyCase, error) {
	cfg := b.cfg
	fewest := slices.Min(cfg.Callers)
	type spec struct {
		id, name      string
		sys           *system // nil: the floor
		callers       int
		calls, warmup int
	}
	var specs []spec
	for _, n := range cfg.Callers {
		specs = append(specs, spec{"floor", "floor: EVALSHA return 1", nil, n, cfg.Calls, cfg.Warmup})
	}
	for _, n := range cfg.Callers {
		specs = append(specs, spec{"taskqueue", "taskqueue Query (Remote) → Listen", &system{}, n, cfg.Calls, cfg.Warmup})
	}
	fast := system{asynq: true, interval: cfg.FastInterval}
	for _, n := range cfg.Callers {
		specs = append(specs, spec{fast.id(), "asynq Enqueue + GetTaskInfo poll, " + fast.intervalString(), &fast, n, cfg.AsynqCalls, min(cfg.Warmup, 20)})
	}
	slow := system{asynq: true}
	specs = append(specs, spec{slow.id(), "asynq Enqueue + GetTaskInfo poll, " + slow.intervalString(), &slow, fewest, cfg.AsynqSlowCalls, 1})

	var out []*LatencyCase
	for _, s := range specs {
		b.progress("latency: %s, %d caller(s), %d calls ...", s.id, s.callers, s.calls)
		c, err := b.latencyRun(ctx, s.sys, s.callers, s.calls, s.warmup)
		if err != nil {
			return nil, fmt.Errorf("latency %s, %d callers: %w", s.id, s.callers, err)
		}
		c.ID, c.Name = s.id, s.name
		if s.sys != nil {
			c.Interval = s.sys.intervalString()
		}
		out = append(out, c)
	}
	return out, nil
}

// latencyRun times calls RPCs of sys (the floor when sys is nil) from
// callers goroutines in closed loops, after warmup untimed ones, on a
// flushed server and fresh clients.
func (b *taskBench) latencyRun(ctx context.Context, sys *system, callers, calls, warmup int) (*LatencyCase, error) {
	if err := b.flush(ctx); err != nil {
		return nil, err
	}
	r, err := newRig(b.cfg.URL)
	if err != nil {
		return nil, err
	}
	defer r.close()
	s := &sink{}
	var op opFunc
	if sys == nil {
		op = func(ctx context.Context, _ int) (bool, error) {
			return false, floorScript.Run(ctx, r.callers, []string{taskFloorKey}).Err()
		}
	} else {
		c, err := start(*sys, r, s, b.cfg.Workers, b.cfg.Poll)
		if err != nil {
			return nil, err
		}
		defer c.stop()
		var seq atomic.Int64
		op = func(ctx context.Context, _ int) (bool, error) {
			id := "c" + strconv.FormatInt(seq.Add(1), 10)
			s.begin(id)
			return false, c.rpc(ctx, id)
		}
	}
	if warmup > 0 {
		if _, err := runOps(ctx, op, callers, 0, int64(warmup)); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	s.starts()
	w, err := b.open(ctx, r)
	if err != nil {
		return nil, err
	}
	res, err := runOps(ctx, op, callers, 0, int64(calls))
	if err != nil {
		return nil, err
	}
	red, st, err := w.close(ctx, res.Ops)
	if err != nil {
		return nil, err
	}
	return &LatencyCase{Callers: callers, RPC: res, Start: latencyStats(s.starts()), Redis: red, Stats: st}, nil
}
