package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// HandoffConfig sets what RunHandoff measures.
type HandoffConfig struct {
	URL        string        // the Redis every process connects to, redis://host:port/db
	Duration   time.Duration // timed part of each run
	Warmup     time.Duration // untimed contention on another key before each run; 0: none
	Goroutines int           // contending goroutines per run, split over the processes
	Processes  []int         // process counts; 1 runs in this process, more start children
	Rounds     int           // rounds; the case order alternates each round
	Hold       time.Duration // how long each acquisition holds the lock
	// Executable is the binary started for the processes of a run with
	// more than one; it must call IsHandoffChild and RunHandoffChild first
	// thing. "" means os.Executable(), this program.
	Executable string
	Server     string    // description of the server, for the report
	Progress   io.Writer // receives a line per run; nil: none
}

// HandoffRun is one timed run of one case at one process count.
type HandoffRun struct {
	Round          int           `json:"round"`
	Key            string        `json:"key"` // the caller key; every case uses its redisallocator Redis key
	Acquisitions   int64         `json:"acquisitions"`
	Wall           time.Duration `json:"wall_ns"` // first process's start to last goroutine's end
	HandoffsPerSec float64       `json:"handoffs_per_sec"`
	WaitMean       time.Duration `json:"wait_mean_ns"`
	WaitP50        time.Duration `json:"wait_p50_ns"`
	WaitP99        time.Duration `json:"wait_p99_ns"`
	WaitMax        time.Duration `json:"wait_max_ns"`
	// Fewest and most acquisitions of one goroutine.
	MinPerGoroutine int64 `json:"min_per_goroutine"`
	MaxPerGoroutine int64 `json:"max_per_goroutine"`
	// Regrabs is the share of acquisitions that went to the goroutine that
	// had held the lock just before: no hand-off to a waiter took place.
	Regrabs float64 `json:"regrabs"`
	// Server side, from INFO cpu and INFO commandstats around the run.
	// Commands leaves out only the harness's own INFO and CONFIG RESETSTAT;
	// it counts the commands that scripts run as well.
	RedisCPUSeconds        float64  `json:"redis_cpu_seconds"`
	RedisCPUUsecPerHandoff float64  `json:"redis_cpu_usec_per_handoff"`
	Commands               CmdStats `json:"commands"`
	CommandsPerHandoff     float64  `json:"commands_per_handoff"` // every call in Commands
	// Sent counts the commands the processes' clients sent, by name:
	// counted by a hook on each client, plus the pub/sub commands (which
	// bypass hooks and which no script can run) from Commands. Where
	// Commands has more calls of a command, the rest ran inside scripts.
	Sent           map[string]int64 `json:"sent"`
	SentPerHandoff float64          `json:"sent_per_handoff"`
	// Mutual exclusion: MaxHolders is the most goroutines of one process
	// holding the lock at once (must be 1); Violations counts acquisitions
	// that found another goroutine of their process holding it; Overlaps
	// counts hold spans, over all processes, that began before an earlier
	// one ended; FenceDisorder counts spans (redisallocator only) whose
	// fence was not above the previous span's. All but MaxHolders must be 0.
	MaxHolders    int64 `json:"max_holders"`
	Violations    int64 `json:"violations"`
	Overlaps      int64 `json:"overlaps"`
	FenceDisorder int64 `json:"fence_disorder"`
}

// exclusionErrors is the number of signs of two holders at once.
func (r HandoffRun) exclusionErrors() int64 { return r.Violations + r.Overlaps + r.FenceDisorder }

// HandoffCaseResult is one case at one process count, over all rounds.
type HandoffCaseResult struct {
	Case       string       `json:"case"`
	Name       string       `json:"name"`
	Processes  int          `json:"processes"`
	Goroutines int          `json:"goroutines"`
	Runs       []HandoffRun `json:"runs"`
	// Medians over the runs.
	HandoffsPerSec         float64       `json:"handoffs_per_sec"`
	WaitP50                time.Duration `json:"wait_p50_ns"`
	WaitP99                time.Duration `json:"wait_p99_ns"`
	MinPerGoroutine        float64       `json:"min_per_goroutine"`
	MaxPerGoroutine        float64       `json:"max_per_goroutine"`
	Regrabs                float64       `json:"regrabs"`
	RedisCPUUsecPerHandoff float64       `json:"redis_cpu_usec_per_handoff"`
	CommandsPerHandoff     float64       `json:"commands_per_handoff"`
	SentPerHandoff         float64       `json:"sent_per_handoff"`
	// Totals over the runs.
	Acquisitions    int64            `json:"acquisitions"`
	Commands        CmdStats         `json:"commands"`
	Sent            map[string]int64 `json:"sent"`
	ExclusionErrors int64            `json:"exclusion_errors"` // Violations + Overlaps + FenceDisorder of all runs
}

// HandoffRatio compares one case with bsm-poll-1ms at one process count:
// the median and quartiles over the rounds of the ratio within each round.
type HandoffRatio struct {
	Metric    string     `json:"metric"` // "handoffs_per_sec" or "redis_cpu_per_handoff"
	Case      string     `json:"case"`
	Processes int        `json:"processes"`
	Median    float64    `json:"median"`
	Quartiles [2]float64 `json:"quartiles"`
}

// HandoffReport is the outcome of RunHandoff; it marshals to JSON.
type HandoffReport struct {
	Date         string               `json:"date"`
	GoVersion    string               `json:"go_version"`
	GOMAXPROCS   int                  `json:"gomaxprocs"`
	NumCPU       int                  `json:"num_cpu"`
	RedisVersion string               `json:"redis_version"`
	Server       string               `json:"server"`
	LoadBefore   string               `json:"loadavg_before,omitempty"`
	LoadAfter    string               `json:"loadavg_after,omitempty"`
	Duration     string               `json:"duration"`
	Warmup       string               `json:"warmup"`
	Hold         string               `json:"hold"`
	Goroutines   int                  `json:"goroutines"`
	Processes    []int                `json:"processes"`
	Rounds       int                  `json:"rounds"`
	TTL          string               `json:"ttl"`
	PoolSize     int                  `json:"pool_size"`
	Prefix       string               `json:"prefix"` // lock namespace of every key
	Cases        []*HandoffCaseResult `json:"cases"`
	Ratios       []HandoffRatio       `json:"ratios"`
	// ExclusionErrors sums the signs of two holders at once over all runs.
	ExclusionErrors int64 `json:"exclusion_errors"`
}

// Err returns an error when some run saw two holders of the lock at once.
func (r *HandoffReport) Err() error {
	if r.ExclusionErrors == 0 {
		return nil
	}
	return fmt.Errorf("MUTUAL EXCLUSION VIOLATED: %d signs of two holders at once (see the violations column)", r.ExclusionErrors)
}

func (r *HandoffReport) find(id string, procs int) *HandoffCaseResult {
	for _, c := range r.Cases {
		if c.Case == id && c.Processes == procs {
			return c
		}
	}
	return nil
}

// handoffBaseline is the case the ratios divide by.
const handoffBaseline = "bsm-poll-1ms"

// harnessCommands are the commands the harness itself sends inside a
// measured window; the hand-off figures leave only these out.
var harnessCommands = []string{"info", "config|resetstat"}

// pubsubCommands are sent on go-redis pub/sub connections, which bypass
// hooks; no script may run them, so INFO commandstats counts exactly what
// the clients sent.
var pubsubCommands = []string{"subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe"}

// RunHandoff runs the contended hand-off scenario: per round, process count
// and case, cfg.Goroutines goroutines split over that many processes loop
// on one fresh key (acquire, hold cfg.Hold, release) for cfg.Duration. It
// returns the report, whose Err tells whether mutual exclusion held; it
// deletes its keys before it returns.
func RunHandoff(ctx context.Context, cfg HandoffConfig) (*HandoffReport, error) {
	maxProcs := 0
	for _, p := range cfg.Processes {
		if p < 1 {
			return nil, fmt.Errorf("bench: process count %d", p)
		}
		maxProcs = max(maxProcs, p)
	}
	switch {
	case cfg.Rounds < 1 || cfg.Duration <= 0 || cfg.Hold < 0 || cfg.Warmup < 0 || maxProcs == 0:
		return nil, errors.New("bench: need Rounds ≥ 1, Duration > 0, Hold and Warmup ≥ 0 and some Processes")
	case cfg.Goroutines < maxProcs:
		return nil, fmt.Errorf("bench: %d goroutines cannot be split over %d processes", cfg.Goroutines, maxProcs)
	}
	exe := cfg.Executable
	if exe == "" && maxProcs > 1 {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("bench: find this program to start its children: %w", err)
		}
	}

	admin, err := NewClient(cfg.URL)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	info, err := admin.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	version, _ := infoField(info, "redis_version")
	prefix := "handoff-" + rand.Text()[:8]
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := deleteNamespace(cctx, admin, prefix); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}()

	rep := &HandoffReport{
		Date:         time.Now().UTC().Format(time.RFC3339),
		GoVersion:    runtime.Version(),
		GOMAXPROCS:   runtime.GOMAXPROCS(0),
		NumCPU:       runtime.NumCPU(),
		RedisVersion: version,
		Server:       cfg.Server,
		LoadBefore:   loadAvg(),
		Duration:     cfg.Duration.String(),
		Warmup:       cfg.Warmup.String(),
		Hold:         cfg.Hold.String(),
		Goroutines:   cfg.Goroutines,
		Processes:    cfg.Processes,
		Rounds:       cfg.Rounds,
		TTL:          handoffTTL.String(),
		PoolSize:     PoolSize,
		Prefix:       prefix,
	}
	for _, p := range cfg.Processes {
		for _, c := range handoffCases {
			rep.Cases = append(rep.Cases, &HandoffCaseResult{
				Case: c.id, Name: c.name, Processes: p, Goroutines: cfg.Goroutines, Commands: CmdStats{}, Sent: map[string]int64{},
			})
		}
	}

	for r := range cfg.Rounds {
		for _, p := range cfg.Processes {
			for _, c := range alternate(handoffCases, r) {
				spec := workerSpec{
					URL:       cfg.URL,
					Prefix:    prefix,
					Case:      c.id,
					Key:       fmt.Sprintf("r%d-p%d-%s", r, p, c.id),
					WarmupKey: fmt.Sprintf("r%d-p%d-%s-warmup", r, p, c.id),
					Duration:  cfg.Duration,
					Warmup:    cfg.Warmup,
					Hold:      cfg.Hold,
				}
				run, err := handoffRun(ctx, admin, cfg, exe, c, p, spec)
				if err != nil {
					return nil, fmt.Errorf("round %d, %d processes, %s: %w", r+1, p, c.id, err)
				}
				run.Round = r
				if cfg.Progress != nil {
					fmt.Fprintf(cfg.Progress, "round %d/%d processes=%d %-24s %6.0f hand-offs/s  wait p50 %s p99 %s  Redis CPU %.1f µs/hand-off\n",
						r+1, cfg.Rounds, p, c.id, run.HandoffsPerSec, ms(run.WaitP50), ms(run.WaitP99), run.RedisCPUUsecPerHandoff)
				}
				if n := run.exclusionErrors(); n > 0 {
					fmt.Fprintf(os.Stderr, "bench: MUTUAL EXCLUSION VIOLATED: round %d, %d processes, %s: %d violations within a process (max %d holders), %d overlapping hold spans, %d fences out of order\n",
						r+1, p, c.id, run.Violations, run.MaxHolders, run.Overlaps, run.FenceDisorder)
				}
				cr := rep.find(c.id, p)
				cr.Runs = append(cr.Runs, run)
				cr.Acquisitions += run.Acquisitions
				cr.Commands.add(run.Commands)
				for name, n := range run.Sent {
					cr.Sent[name] += n
				}
				cr.ExclusionErrors += run.exclusionErrors()
				rep.ExclusionErrors += run.exclusionErrors()
			}
		}
	}

	for _, c := range rep.Cases {
		summarizeCase(c)
	}
	for _, p := range cfg.Processes {
		base := rep.find(handoffBaseline, p)
		for _, c := range handoffCases {
			if c.id == handoffBaseline {
				continue
			}
			ours := rep.find(c.id, p)
			m, q := ratioQuartiles(runValues(ours, hps), runValues(base, hps))
			rep.Ratios = append(rep.Ratios, HandoffRatio{Metric: "handoffs_per_sec", Case: c.id, Processes: p, Median: m, Quartiles: q})
			m, q = ratioQuartiles(runValues(ours, cpuPer), runValues(base, cpuPer))
			rep.Ratios = append(rep.Ratios, HandoffRatio{Metric: "redis_cpu_per_handoff", Case: c.id, Processes: p, Median: m, Quartiles: q})
		}
	}
	rep.LoadAfter = loadAvg()
	return rep, nil
}

// handoffRun runs case c once with procs processes: it starts them, waits
// until all have warmed up, opens the stats window, starts them together,
// collects their parts and closes the window.
func handoffRun(ctx context.Context, admin *redis.Client, cfg HandoffConfig, exe string, c handoffCase, procs int, spec workerSpec) (HandoffRun, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration+2*handoffDrain+time.Minute)
	defer cancel()
	var workers []worker
	defer func() {
		for _, w := range workers {
			w.stop()
		}
	}()
	for i := range procs {
		s := spec
		s.Goroutines = cfg.Goroutines / procs
		if i < cfg.Goroutines%procs {
			s.Goroutines++
		}
		if procs == 1 {
			workers = append(workers, startLocal(ctx, s))
			continue
		}
		w, err := startChild(ctx, exe, s)
		if err != nil {
			return HandoffRun{}, err
		}
		workers = append(workers, w)
	}
	for i, w := range workers {
		if err := w.waitReady(); err != nil {
			return HandoffRun{}, fmt.Errorf("process %d: %w", i+1, err)
		}
	}
	win, err := beginStats(ctx, admin)
	if err != nil {
		return HandoffRun{}, err
	}
	for i, w := range workers {
		if err := w.start(); err != nil {
			return HandoffRun{}, fmt.Errorf("process %d: %w", i+1, err)
		}
	}
	parts := make([]workerResult, len(workers))
	for i, w := range workers {
		if parts[i], err = w.result(); err != nil {
			return HandoffRun{}, fmt.Errorf("process %d: %w", i+1, err)
		}
	}
	st, cpu, err := win.end(ctx)
	if err != nil {
		return HandoffRun{}, err
	}
	run, err := summarizeRun(parts, c.fenced, st, cpu)
	run.Key = spec.Key
	return run, err
}

// summarizeRun merges the parts of a run's processes with the server's
// stats of the run.
func summarizeRun(parts []workerResult, fenced bool, st CmdStats, cpuSeconds float64) (HandoffRun, error) {
	var (
		run   HandoffRun
		start int64 = -1
		end   int64
		waits []time.Duration
		spans []holdSpan
	)
	run.MinPerGoroutine = -1
	holderBase := 0
	for _, p := range parts {
		for _, s := range p.Spans {
			s.Holder += holderBase
			spans = append(spans, s)
		}
		holderBase += len(p.PerGoroutine)
		if start < 0 || p.Start < start {
			start = p.Start
		}
		end = max(end, p.End)
		for _, w := range p.Waits {
			waits = append(waits, time.Duration(w))
		}
		for _, n := range p.PerGoroutine {
			if run.MinPerGoroutine < 0 || n < run.MinPerGoroutine {
				run.MinPerGoroutine = n
			}
			run.MaxPerGoroutine = max(run.MaxPerGoroutine, n)
		}
		run.MaxHolders = max(run.MaxHolders, p.MaxHolders)
		run.Violations += p.Violations
	}
	if len(waits) == 0 {
		return run, errors.New("no acquisition completed")
	}
	run.Acquisitions = int64(len(waits))
	run.Wall = time.Duration(end - start)
	run.HandoffsPerSec = float64(run.Acquisitions) / run.Wall.Seconds()
	slices.Sort(waits)
	var sum time.Duration
	for _, w := range waits {
		sum += w
	}
	run.WaitMean = sum / time.Duration(len(waits))
	run.WaitP50, run.WaitP99, run.WaitMax = percentile(waits, 0.50), percentile(waits, 0.99), waits[len(waits)-1]
	var regrabs int
	run.Overlaps, run.FenceDisorder, regrabs = checkExclusion(spans, fenced)
	run.Regrabs = float64(regrabs) / float64(len(spans))

	run.Commands, run.Sent = CmdStats{}, map[string]int64{}
	var total, sent int64
	for name, s := range st {
		if slices.Contains(harnessCommands, name) {
			continue
		}
		run.Commands[name] = s
		total += s.Calls
		if slices.Contains(pubsubCommands, name) {
			run.Sent[name] += s.Calls
			sent += s.Calls
		}
	}
	for _, p := range parts {
		for name, n := range p.Sent {
			run.Sent[name] += n
			sent += n
		}
	}
	n := float64(run.Acquisitions)
	run.CommandsPerHandoff = float64(total) / n
	run.SentPerHandoff = float64(sent) / n
	run.RedisCPUSeconds = cpuSeconds
	run.RedisCPUUsecPerHandoff = cpuSeconds * 1e6 / n
	return run, nil
}

// checkExclusion orders the hold spans of all processes by their start and
// counts the spans that began before an earlier one had ended (overlaps)
// and, when fenced, the spans whose fence was not above that of the span
// before (disorder). Both are 0 when the lock excluded all other holders.
// It also counts the spans whose holder held the span before (regrabs).
// It sorts spans in place.
func checkExclusion(spans []holdSpan, fenced bool) (overlaps, disorder int64, regrabs int) {
	slices.SortFunc(spans, func(a, b holdSpan) int { return cmp.Compare(a.From, b.From) })
	var lastEnd int64
	for i, s := range spans {
		if i > 0 {
			if s.From < lastEnd {
				overlaps++
			}
			if fenced && s.Fence <= spans[i-1].Fence {
				disorder++
			}
			if s.Holder == spans[i-1].Holder {
				regrabs++
			}
		}
		lastEnd = max(lastEnd, s.To)
	}
	return overlaps, disorder, regrabs
}

// summarizeCase sets the medians over a case's runs.
func summarizeCase(c *HandoffCaseResult) {
	c.HandoffsPerSec = median(runValues(c, hps))
	c.RedisCPUUsecPerHandoff = median(runValues(c, cpuPer))
	c.CommandsPerHandoff = median(runValues(c, func(r HandoffRun) float64 { return r.CommandsPerHandoff }))
	c.SentPerHandoff = median(runValues(c, func(r HandoffRun) float64 { return r.SentPerHandoff }))
	c.MinPerGoroutine = median(runValues(c, func(r HandoffRun) float64 { return float64(r.MinPerGoroutine) }))
	c.MaxPerGoroutine = median(runValues(c, func(r HandoffRun) float64 { return float64(r.MaxPerGoroutine) }))
	c.Regrabs = median(runValues(c, func(r HandoffRun) float64 { return r.Regrabs }))
	var p50, p99 []time.Duration
	for _, r := range c.Runs {
		p50, p99 = append(p50, r.WaitP50), append(p99, r.WaitP99)
	}
	c.WaitP50, c.WaitP99 = median(p50), median(p99)
}

func hps(r HandoffRun) float64    { return r.HandoffsPerSec }
func cpuPer(r HandoffRun) float64 { return r.RedisCPUUsecPerHandoff }

// runValues returns f of each of c's runs, in round order.
func runValues(c *HandoffCaseResult, f func(HandoffRun) float64) []float64 {
	out := make([]float64, len(c.Runs))
	for i, r := range c.Runs {
		out[i] = f(r)
	}
	return out
}

// ratioQuartiles returns the median and the lower and upper quartiles of
// num[i]/den[i]: values measured in the same round, back to back, so that
// the ratio cancels the machine's drift.
func ratioQuartiles(num, den []float64) (float64, [2]float64) {
	var ratios []float64
	for i := range min(len(num), len(den)) {
		ratios = append(ratios, num[i]/den[i])
	}
	if len(ratios) == 0 {
		return 0, [2]float64{}
	}
	slices.Sort(ratios)
	return median(ratios), [2]float64{ratios[len(ratios)/4], ratios[(3*len(ratios))/4]}
}

// alternate returns xs in forward order on even rounds and reversed on odd
// ones, so drift in CPU speed or background load hits all cases alike.
func alternate[T any](xs []T, round int) []T {
	out := slices.Clone(xs)
	if round%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// ms formats d in milliseconds.
func ms(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}
