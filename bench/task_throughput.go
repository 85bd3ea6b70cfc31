package bench

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// throughputFloor times Tasks no-op EVALSHAs from Producers goroutines on
// one client: the round trips per second this machine manages.
func (b *taskBench) throughputFloor(ctx context.Context) (RunResult, error) {
	cfg := b.cfg
	if err := b.flush(ctx); err != nil {
		return RunResult{}, err
	}
	r, err := newRig(cfg.URL)
	if err != nil {
		return RunResult{}, err
	}
	defer r.close()
	op := func(ctx context.Context, _ int) (bool, error) {
		return false, floorScript.Run(ctx, r.callers, []string{taskFloorKey}).Err()
	}
	if _, err := runOps(ctx, op, cfg.Producers, 0, int64(min(cfg.Tasks, 2000))); err != nil {
		return RunResult{}, err
	}
	return runOps(ctx, op, cfg.Producers, 0, int64(cfg.Tasks))
}

// throughputSystems are the cases of part 2, in their forward order.
func (b *taskBench) throughputSystems() []system {
	return []system{{}, {asynq: true}, {asynq: true, interval: b.cfg.FastInterval}}
}

// throughput runs part 2 (and gathers part 3): per round, the floor, then
// each system once, in alternating order.
func (b *taskBench) throughput(ctx context.Context) ([]*ThroughputCase, []RunResult, error) {
	cfg := b.cfg
	systems := b.throughputSystems()
	cases := make([]*ThroughputCase, len(systems))
	order := make([]int, len(systems))
	for i, sys := range systems {
		order[i] = i
		name := "taskqueue Submit → Listen"
		if sys.asynq {
			name = "asynq Enqueue → Server, " + sys.intervalString()
		}
		cases[i] = &ThroughputCase{ID: sys.id(), Name: name, Interval: sys.intervalString(), Commands: CmdStats{}, Sent: map[string]int64{}}
	}
	var floors []RunResult
	retries := cfg.Retries
	for round := 0; round < cfg.Rounds; round++ {
		b.progress("throughput round %d/%d: floor, %d EVALSHA return 1 from %d goroutines ...", round+1, cfg.Rounds, cfg.Tasks, cfg.Producers)
		f, err := b.throughputFloor(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("throughput floor, round %d: %w", round+1, err)
		}
		runs := make([]ThroughputRun, len(systems))
		var busy []string
		for _, i := range alternate(order, round) {
			b.progress("throughput round %d/%d: %s, %d tasks, %d producers, %d workers ...", round+1, cfg.Rounds, systems[i].id(), cfg.Tasks, cfg.Producers, cfg.Workers)
			run, err := b.throughputRun(ctx, systems[i])
			if err != nil {
				return nil, nil, fmt.Errorf("throughput %s, round %d: %w", systems[i].id(), round+1, err)
			}
			run.Round = round
			b.progress("  %.0f tasks/s (%s; first task started after %s; other work %.2f cores)", run.TasksPerSec,
				run.Elapsed.Round(time.Millisecond), run.FirstStart.Round(time.Millisecond), run.Redis.OtherCores())
			if o := run.Redis.OtherCores(); o > busyOthers {
				busy = append(busy, fmt.Sprintf("%s %.0f tasks/s with %.2f cores of other work", systems[i].id(), run.TasksPerSec, o))
			}
			runs[i] = run
		}
		if len(busy) > 0 && retries > 0 {
			// Other work on the machine skewed the round: run it again,
			// every case, in the same order.
			retries--
			b.repeated = append(b.repeated, fmt.Sprintf("round %d: %s", round+1, strings.Join(busy, "; ")))
			b.progress("  round %d repeated: other work on the machine", round+1)
			round--
			continue
		}
		floors = append(floors, f)
		for i, run := range runs {
			c := cases[i]
			c.Runs = append(c.Runs, run)
			c.Commands.add(run.Stats.Commands)
			for k, v := range run.Stats.Sent {
				c.Sent[k] += v
			}
			c.Tasks += run.Tasks
		}
	}
	for _, c := range cases {
		summarizeThroughput(c)
	}
	return cases, floors, nil
}

// throughputRun submits Tasks tasks to sys from Producers goroutines and
// times them until the task function has run Tasks times, on a flushed
// server and fresh clients, after WarmupTasks untimed tasks.
func (b *taskBench) throughputRun(ctx context.Context, sys system) (ThroughputRun, error) {
	cfg := b.cfg
	if err := b.flush(ctx); err != nil {
		return ThroughputRun{}, err
	}
	r, err := newRig(cfg.URL)
	if err != nil {
		return ThroughputRun{}, err
	}
	defer r.close()
	s := &sink{}
	c, err := start(sys, r, s, cfg.Workers, cfg.Poll)
	if err != nil {
		return ThroughputRun{}, err
	}
	defer c.stop()

	if cfg.WarmupTasks > 0 {
		p := newPhase(cfg.WarmupTasks)
		s.phase.Store(p)
		if err := produce(ctx, c.submit, cfg.Producers, cfg.WarmupTasks, "w"); err != nil {
			return ThroughputRun{}, fmt.Errorf("warm-up: %w", err)
		}
		if err := p.wait(ctx); err != nil {
			return ThroughputRun{}, fmt.Errorf("warm-up: %w", err)
		}
		if err := b.settle(ctx, c); err != nil {
			return ThroughputRun{}, fmt.Errorf("warm-up: %w", err)
		}
	}

	p := newPhase(cfg.Tasks)
	s.phase.Store(p)
	w, err := b.open(ctx, r)
	if err != nil {
		return ThroughputRun{}, err
	}
	if b.onWindow != nil {
		if err := b.onWindow(ctx); err != nil {
			return ThroughputRun{}, err
		}
	}
	t0 := time.Now()
	if err := produce(ctx, c.submit, cfg.Producers, cfg.Tasks, "t"); err != nil {
		return ThroughputRun{}, err
	}
	submitted := time.Since(t0)
	if err := p.wait(ctx); err != nil {
		return ThroughputRun{}, err
	}
	// The completions of the last tasks are stored after their task
	// function returned; they belong to the window.
	if err := b.settle(ctx, c); err != nil {
		return ThroughputRun{}, err
	}
	red, st, err := w.close(ctx, int64(cfg.Tasks))
	if err != nil {
		return ThroughputRun{}, err
	}
	if err := c.verify(ctx); err != nil {
		return ThroughputRun{}, err
	}
	if n := p.n.Load(); n != int64(cfg.Tasks) {
		return ThroughputRun{}, fmt.Errorf("the task function ran %d times for %d tasks", n, cfg.Tasks)
	}
	elapsed := p.end.Sub(t0)
	first := time.Unix(0, p.first.Load()).Sub(t0)
	run := ThroughputRun{
		Tasks:       int64(cfg.Tasks),
		Elapsed:     elapsed,
		TasksPerSec: float64(cfg.Tasks) / elapsed.Seconds(),
		Submitted:   submitted,
		FirstStart:  first,
		Redis:       red,
		Stats:       st,
	}
	if elapsed > first {
		run.Steady = float64(cfg.Tasks) / (elapsed - first).Seconds()
	}
	return run, nil
}

// summarizeThroughput sets a case's medians over its runs.
func summarizeThroughput(c *ThroughputCase) {
	var tps, steady, el, sub, first []float64
	fields := make([][]float64, 11)
	for _, r := range c.Runs {
		tps = append(tps, r.TasksPerSec)
		steady = append(steady, r.Steady)
		el = append(el, float64(r.Elapsed))
		sub = append(sub, float64(r.Submitted))
		first = append(first, float64(r.FirstStart))
		for i, v := range []float64{r.Redis.Sent, r.Redis.RoundTrips, r.Redis.Scripts, r.Redis.Run, r.Redis.ExecUsec,
			r.Redis.AllLinesUsec, r.Redis.CPUUsec, r.Redis.ClientCPUUsec, r.Redis.RedisCores, r.Redis.ClientCores, r.Redis.MachineCores} {
			fields[i] = append(fields[i], v)
		}
	}
	c.TasksPerSec, c.Steady = median(tps), median(steady)
	c.Elapsed, c.Submitted, c.FirstStart = time.Duration(median(el)), time.Duration(median(sub)), time.Duration(median(first))
	c.Redis = TaskRedis{
		Sent: median(fields[0]), RoundTrips: median(fields[1]), Scripts: median(fields[2]), Run: median(fields[3]),
		ExecUsec: median(fields[4]), AllLinesUsec: median(fields[5]), CPUUsec: median(fields[6]), ClientCPUUsec: median(fields[7]),
		RedisCores: median(fields[8]), ClientCores: median(fields[9]), MachineCores: median(fields[10]),
	}
}

// ratios sets taskqueue's tasks/s ÷ each asynq case's, within each round.
func (r *TaskReport) ratios() {
	ours := r.throughputCase("taskqueue")
	if ours == nil {
		return
	}
	for _, c := range r.Throughput {
		if c == ours {
			continue
		}
		var num, den []float64
		for i := range min(len(ours.Runs), len(c.Runs)) {
			num = append(num, ours.Runs[i].TasksPerSec)
			den = append(den, c.Runs[i].TasksPerSec)
		}
		m, q := ratioQuartiles(num, den)
		r.Ratios = append(r.Ratios, TaskRatio{Baseline: c.ID, Median: m, Quartiles: q})
	}
}

func (r *TaskReport) throughputCase(id string) *ThroughputCase {
	for _, c := range r.Throughput {
		if c.ID == id {
			return c
		}
	}
	return nil
}
