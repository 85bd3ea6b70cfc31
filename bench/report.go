package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/lock"
)

// Config sets what Run measures.
type Config struct {
	Duration time.Duration // time of each case run, unless Ops > 0
	Ops      int64         // operations of each case run; 0: use Duration
	Rounds   int           // rounds; the case order alternates each round
	// ScriptRounds is the number of rounds of the script passes; 0 means 5.
	ScriptRounds int
	Goroutines   []int     // goroutine counts, each at most PoolSize
	Server       string    // description of the server, for the report
	Progress     io.Writer // receives a line before each run; nil: none
}

// CaseResult is one case at one goroutine count, over all rounds.
type CaseResult struct {
	Impl       string      `json:"impl"`
	Name       string      `json:"name"`
	Goroutines int         `json:"goroutines"`
	Runs       []RunResult `json:"runs"`
	// Medians over the runs.
	OpsPerSec float64       `json:"ops_per_sec"`
	Mean      time.Duration `json:"mean_ns"`
	P50       time.Duration `json:"p50_ns"`
	P99       time.Duration `json:"p99_ns"`
	// Totals over the runs.
	Ops       int64    `json:"ops"`
	Busy      int64    `json:"busy"`
	Commands  CmdStats `json:"commands"`
	CPUSecond float64  `json:"redis_cpu_seconds"`
	// Medians over the runs of the Redis execution time per operation of
	// the commands the case sends (commandstats usec; a script's time
	// includes the commands it runs), and of the Redis process CPU
	// (user+sys, including network I/O) per operation.
	RedisUsecPerOp    float64 `json:"redis_usec_per_op"`
	RedisCPUUsecPerOp float64 `json:"redis_cpu_usec_per_op"`
}

// ScriptCost is the cost of one script measured on its own.
type ScriptCost struct {
	What        string   `json:"what"`
	Command     string   `json:"command"`
	Calls       int64    `json:"calls"`
	UsecPerCall float64  `json:"usec_per_call"`
	Commands    CmdStats `json:"commands"`
}

// Report is the outcome of Run; it marshals to JSON.
type Report struct {
	Date         string        `json:"date"`
	GoVersion    string        `json:"go_version"`
	GOMAXPROCS   int           `json:"gomaxprocs"`
	RedisVersion string        `json:"redis_version"`
	Server       string        `json:"server"`
	LoadBefore   string        `json:"loadavg_before,omitempty"` // /proc/loadavg: other work on the machine skews results
	LoadAfter    string        `json:"loadavg_after,omitempty"`
	Duration     string        `json:"duration,omitempty"`
	OpsPerRun    int64         `json:"ops_per_run,omitempty"`
	Rounds       int           `json:"rounds"`
	ScriptRounds int           `json:"script_rounds"`
	Goroutines   []int         `json:"goroutines"`
	Keys         int           `json:"keys"`
	TTL          string        `json:"ttl"`
	PoolSize     int           `json:"pool_size"`
	Cases        []*CaseResult `json:"cases"`
	// OursVsBsm[n] is redisallocator TryAcquire+Release ops/s divided by
	// bsm/redislock Obtain+Release ops/s at n goroutines: the median over
	// the rounds of the ratio within each round.
	OursVsBsm map[int]float64 `json:"ours_vs_bsm"`
	// OursVsBsmRange[n] holds the lower and upper quartiles of those ratios.
	OursVsBsmRange map[int][2]float64 `json:"ours_vs_bsm_quartiles"`
	// UnbatchedVsBsm and UnbatchedVsBsmRange are the same for
	// redisallocator with batching off (WithBatching(0)).
	UnbatchedVsBsm      map[int]float64    `json:"unbatched_vs_bsm"`
	UnbatchedVsBsmRange map[int][2]float64 `json:"unbatched_vs_bsm_quartiles"`
	// OursVsUnbatched and OursVsUnbatchedRange compare the default
	// (batching) with batching off, within each round.
	OursVsUnbatched      map[int]float64    `json:"ours_vs_unbatched"`
	OursVsUnbatchedRange map[int][2]float64 `json:"ours_vs_unbatched_quartiles"`
	// VsFloor[n][impl] is impl ops/s divided by the floor's.
	VsFloor map[int]map[string]float64 `json:"vs_floor"`
	Scripts []ScriptCost               `json:"scripts"`
}

func (r *Report) find(impl string, n int) *CaseResult {
	for _, c := range r.Cases {
		if c.Impl == impl && c.Goroutines == n {
			return c
		}
	}
	return nil
}

// Run benchmarks the cases on client (whose pool must hold at least the
// largest goroutine count; NewClient makes one) and returns the report.
// It deletes the keys it created before it returns.
func Run(ctx context.Context, client *redis.Client, cfg Config) (*Report, error) {
	if cfg.Rounds < 1 || len(cfg.Goroutines) == 0 || (cfg.Ops <= 0 && cfg.Duration <= 0) {
		return nil, fmt.Errorf("bench: need Rounds ≥ 1, some Goroutines and Duration or Ops > 0")
	}
	info, err := client.Info(ctx, "server").Result()
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	version, _ := infoField(info, "redis_version")
	e, err := newEnv(client)
	if err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := e.cleanup(cctx); err != nil {
			fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
		}
	}()

	rep := &Report{
		Date:                 time.Now().UTC().Format(time.RFC3339),
		GoVersion:            runtime.Version(),
		GOMAXPROCS:           runtime.GOMAXPROCS(0),
		RedisVersion:         version,
		Server:               cfg.Server,
		LoadBefore:           loadAvg(),
		Rounds:               cfg.Rounds,
		Goroutines:           cfg.Goroutines,
		Keys:                 numKeys,
		TTL:                  lockTTL.String(),
		PoolSize:             client.Options().PoolSize,
		OursVsBsm:            map[int]float64{},
		OursVsBsmRange:       map[int][2]float64{},
		UnbatchedVsBsm:       map[int]float64{},
		UnbatchedVsBsmRange:  map[int][2]float64{},
		OursVsUnbatched:      map[int]float64{},
		OursVsUnbatchedRange: map[int][2]float64{},
		VsFloor:              map[int]map[string]float64{},
	}
	if cfg.Ops > 0 {
		rep.OpsPerRun = cfg.Ops
	} else {
		rep.Duration = cfg.Duration.String()
	}

	// Warm up: open every connection, load every script, create every
	// fencing counter, so the timed runs see the steady state.
	maxG := 0
	for _, n := range cfg.Goroutines {
		maxG = max(maxG, n)
	}
	for _, im := range impls {
		if _, err := runOps(ctx, im.op(e), maxG, 0, 2*numKeys); err != nil {
			return nil, fmt.Errorf("warm-up %s: %w", im.id, err)
		}
	}

	results := map[string]*CaseResult{}
	for _, n := range cfg.Goroutines {
		for _, im := range impls {
			c := &CaseResult{Impl: im.id, Name: im.name, Goroutines: n, Commands: CmdStats{}}
			results[im.id+"/"+strconv.Itoa(n)] = c
			rep.Cases = append(rep.Cases, c)
		}
	}
	for r := range cfg.Rounds {
		for _, n := range cfg.Goroutines {
			for _, im := range roundOrder(r) {
				c := results[im.id+"/"+strconv.Itoa(n)]
				if cfg.Progress != nil {
					fmt.Fprintf(cfg.Progress, "round %d/%d goroutines=%d %s ...\n", r+1, cfg.Rounds, n, im.name)
				}
				w, err := beginStats(ctx, client)
				if err != nil {
					return nil, err
				}
				res, err := runOps(ctx, im.op(e), n, cfg.Duration, cfg.Ops)
				if err != nil {
					return nil, fmt.Errorf("%s, %d goroutines: %w", im.name, n, err)
				}
				st, cpu, err := w.end(ctx)
				if err != nil {
					return nil, err
				}
				res.RedisUsecPerOp = float64(st.usecOf(im.sent)) / float64(res.Ops)
				res.RedisCPUUsecPerOp = cpu * 1e6 / float64(res.Ops)
				c.Runs = append(c.Runs, res)
				c.Ops += res.Ops
				c.Busy += res.Busy
				c.Commands.add(st)
				c.CPUSecond += cpu
			}
		}
	}
	for _, c := range rep.Cases {
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
	for _, n := range cfg.Goroutines {
		bsm, floor := rep.find("bsm-redislock", n), rep.find("floor", n)
		rep.OursVsBsm[n], rep.OursVsBsmRange[n] = roundRatios(rep.find("redisallocator", n), bsm)
		plain := rep.find("redisallocator-unbatched", n)
		rep.UnbatchedVsBsm[n], rep.UnbatchedVsBsmRange[n] = roundRatios(plain, bsm)
		rep.OursVsUnbatched[n], rep.OursVsUnbatchedRange[n] = roundRatios(rep.find("redisallocator", n), plain)
		rep.VsFloor[n] = map[string]float64{}
		for _, im := range impls[1:] {
			rep.VsFloor[n][im.id] = rep.find(im.id, n).OpsPerSec / floor.OpsPerSec
		}
	}

	if cfg.ScriptRounds <= 0 {
		cfg.ScriptRounds = 5
	}
	rep.ScriptRounds = cfg.ScriptRounds
	rep.Scripts, err = measureScripts(ctx, e, cfg.ScriptRounds)
	if err != nil {
		return nil, err
	}
	rep.Scripts = append(rep.Scripts, referenceCosts(rep)...)
	rep.LoadAfter = loadAvg()
	return rep, nil
}

// roundRatios returns the median and quartiles of a's ops/s divided by b's
// within each round: both run back to back in a round, so the ratio cancels
// the machine's drift.
func roundRatios(a, b *CaseResult) (float64, [2]float64) {
	var ratios []float64
	for r := range a.Runs {
		ratios = append(ratios, a.Runs[r].OpsPerSec/b.Runs[r].OpsPerSec)
	}
	slices.Sort(ratios)
	return median(ratios), [2]float64{ratios[len(ratios)/4], ratios[(3*len(ratios))/4]}
}

// roundOrder returns the cases in forward order on even rounds and reversed
// on odd ones, so drift in CPU speed or background load hits all alike.
func roundOrder(r int) []impl {
	out := make([]impl, len(impls))
	for i, im := range impls {
		if r%2 == 0 {
			out[i] = im
		} else {
			out[len(impls)-1-i] = im
		}
	}
	return out
}

// Print writes the human-readable tables.
func (rep *Report) Print(out io.Writer) {
	fmt.Fprintf(out, "lockbench %s  %s GOMAXPROCS=%d  redis %s, %s\n", rep.Date, rep.GoVersion, rep.GOMAXPROCS, rep.RedisVersion, rep.Server)
	run := rep.Duration + " per run"
	if rep.OpsPerRun > 0 {
		run = strconv.FormatInt(rep.OpsPerRun, 10) + " ops per run"
	}
	fmt.Fprintf(out, "%s, rounds=%d (order alternates each round; figures are medians over rounds), %d keys, TTL %s, one client with PoolSize %d\n",
		run, rep.Rounds, rep.Keys, rep.TTL, rep.PoolSize)
	if rep.LoadBefore != "" {
		fmt.Fprintf(out, "load average before %s, after %s (other work on the machine skews the figures)\n", rep.LoadBefore, rep.LoadAfter)
	}
	fmt.Fprintln(out, "op = one EVALSHA for the floor, one acquire plus one release for the lock cases; latency is per op")

	for _, n := range rep.Goroutines {
		fmt.Fprintf(out, "\ngoroutines=%d\n", n)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\tops/s\tmean\tp50\tp99\tbusy\tRedis µs/op\tRedis CPU µs/op\t")
		for _, im := range impls {
			c := rep.find(im.id, n)
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%d\t%.2f\t%.2f\t\n",
				c.Name, c.OpsPerSec, us(c.Mean), us(c.P50), us(c.P99), c.Busy, c.RedisUsecPerOp, c.RedisCPUUsecPerOp)
		}
		tw.Flush()
	}

	fmt.Fprintln(out, "\nINFO commandstats per case (summed over rounds; harness/handshake commands left out;")
	fmt.Fprintln(out, "commands marked 'in script' ran inside a script and their time is part of the script's)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "goroutines\tcase\tcommand\tcalls\tcalls/op\tusec_per_call\t\t")
	for _, c := range rep.Cases {
		sent := implByID(c.Impl).sent
		for _, name := range c.Commands.workNames() {
			s := c.Commands[name]
			note := "in script"
			if slices.Contains(sent, name) {
				note = ""
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.2f\t%.2f\t%s\t\n", c.Goroutines, c.Name, name, s.Calls, float64(s.Calls)/float64(c.Ops), s.UsecPerCall(), note)
		}
	}
	tw.Flush()

	fmt.Fprintln(out, "\nRatios of ops/s")
	for _, n := range rep.Goroutines {
		q := rep.OursVsBsmRange[n]
		fmt.Fprintf(out, "  goroutines=%-3d redisallocator Acquire+Release vs bsm/redislock Obtain+Release: %.3f (median of per-round ratios; quartiles %.3f–%.3f)\n", n, rep.OursVsBsm[n], q[0], q[1])
		q = rep.UnbatchedVsBsmRange[n]
		fmt.Fprintf(out, "  goroutines=%-3d   the same with batching off (WithBatching(0)):             %.3f (quartiles %.3f–%.3f)\n", n, rep.UnbatchedVsBsm[n], q[0], q[1])
		q = rep.OursVsUnbatchedRange[n]
		fmt.Fprintf(out, "  goroutines=%-3d   default (batching %d per node) vs batching off:            %.3f (quartiles %.3f–%.3f)\n", n, lock.DefaultBatching, rep.OursVsUnbatched[n], q[0], q[1])
	}
	for _, n := range rep.Goroutines {
		fmt.Fprintf(out, "  goroutines=%-3d vs floor (1 round trip/op; lock cases need 2):", n)
		for _, im := range impls[1:] {
			fmt.Fprintf(out, " %s %.3f;", im.id, rep.VsFloor[n][im.id])
		}
		fmt.Fprintln(out)
	}

	fmt.Fprintf(out, "\nScript cost measured alone (INFO commandstats, µs of execution per call, median of %d rounds): per round and\n", rep.ScriptRounds)
	fmt.Fprintf(out, "library, one goroutine acquires all %d keys (so %d locks are live at once), then releases them; stats per pass\n", rep.Keys, rep.Keys)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "what\tcommand\tcalls\tµs/call\t\tcommands run by the script, µs/call\t")
	for _, s := range rep.Scripts {
		var inner []string
		for _, name := range s.Commands.workNames() {
			if !slices.Contains(scriptCommands, name) {
				inner = append(inner, fmt.Sprintf("%s %.2f", name, s.Commands[name].UsecPerCall()))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t\t%s\t\n", s.What, s.Command, s.Calls, s.UsecPerCall, strings.Join(inner, ", "))
	}
	tw.Flush()
}

// us formats d in microseconds.
func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64) + "µs"
}

// referenceCosts adds, from the timed runs at the lowest goroutine count,
// the per-call cost of the floor script and of the SET NX and DEL of
// Lock+Unlock, for comparison with the script passes.
func referenceCosts(rep *Report) []ScriptCost {
	n := rep.Goroutines[0]
	for _, g := range rep.Goroutines {
		n = min(n, g)
	}
	var out []ScriptCost
	for _, ref := range []struct{ impl, cmd, what string }{
		{"floor", "evalsha", "floor script (return 1)"},
		{"redisallocator-lockunlock", "set", "redisallocator Lock (SET NX PX)"},
		{"redisallocator-lockunlock", "del", "redisallocator Unlock (DEL)"},
	} {
		c := rep.find(ref.impl, n)
		s := c.Commands[ref.cmd]
		out = append(out, ScriptCost{
			What:        fmt.Sprintf("%s, from the goroutines=%d runs", ref.what, n),
			Command:     ref.cmd,
			Calls:       s.Calls,
			UsecPerCall: s.UsecPerCall(),
		})
	}
	return out
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "" where
// /proc/loadavg does not exist.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
