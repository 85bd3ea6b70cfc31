package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets of the allocator's acceptance list.
const (
	targetSerialVsFloor   = 0.8  // × (floor / 2) at 1 goroutine
	targetBatchedVsFloor  = 1.0  // × (floor / 2) at 50 goroutines, batching on
	targetGrowth          = 1.5  // cost on the largest pool ÷ on the smallest
	targetScriptsUsec     = 20.0 // malloc + free, µs of Redis execution
	targetWakeP50         = 2 * time.Millisecond
	targetWaitCPU         = 2.0 // Redis per hand-off, most waiters ÷ fewest
	targetGCGrowth        = 1.5 // GC µs per lease, largest pool ÷ smallest (our bound)
	targetBytesPerMember  = 256.0
	targetRoundTripsMalFr = 2.0 // script calls per malloc + free
	parallelGoroutines    = 50  // goroutine count of the batching target
)

func (r *AllocReport) find(id string, n int) *CaseResult {
	for _, c := range r.Pairs {
		if c.Impl == id && c.Goroutines == n {
			return c
		}
	}
	return nil
}

func (r *AllocReport) vsFloor(id string, n int) FloorRatio {
	for _, v := range r.VsFloor {
		if v.Case == id && v.Goroutines == n {
			return v
		}
	}
	return FloorRatio{}
}

func mode(batched bool) string {
	if batched {
		return "default batching"
	}
	return "WithBatching(0)"
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// checks evaluates the targets. A miss is reported, never an error.
func (r *AllocReport) checks() []Check {
	var out []Check
	add := func(ok bool, target, format string, args ...any) {
		out = append(out, Check{Target: target, Pass: ok, Detail: fmt.Sprintf(format, args...)})
	}
	// One round trip each: two script calls per pair.
	for _, c := range r.Pairs {
		if c.Impl == floorID || c.Impl == floorArgsID {
			continue
		}
		calls := float64(c.Commands.scriptCalls()) / float64(c.Ops)
		add(math.Abs(calls-targetRoundTripsMalFr) < 0.005, "malloc and free are one round trip each",
			"%s, goroutines=%d: %.3f script calls per pair (want 2)", c.Name, c.Goroutines, calls)
	}
	sizes := r.Config.PoolSizes
	if slices.Contains(r.Config.Goroutines, 1) {
		floor := r.find(floorID, 1)
		for _, size := range sizes {
			for _, b := range []bool{false, true} {
				c, v := r.find(pairID(size, b), 1), r.vsFloor(pairID(size, b), 1)
				want := targetSerialVsFloor / 2
				add(v.Median >= want, "1 goroutine: pairs/s ≥ 0.8 × (no-op EVALSHA/s ÷ 2)",
					"pool %s, %s: %.0f pairs/s = %.3f × floor (%.0f EVALSHA/s), i.e. %.2f × floor/2; want ≥ %.2f × floor/2",
					count(size), mode(b), c.OpsPerSec, v.Median, floor.OpsPerSec, 2*v.Median, targetSerialVsFloor)
			}
		}
	}
	if slices.Contains(r.Config.Goroutines, parallelGoroutines) {
		floor := r.find(floorID, parallelGoroutines)
		for _, size := range sizes {
			c, v := r.find(pairID(size, true), parallelGoroutines), r.vsFloor(pairID(size, true), parallelGoroutines)
			add(v.Median >= targetBatchedVsFloor/2, "50 goroutines, batching: pairs/s ≥ 1.0 × (unbatched no-op EVALSHA/s ÷ 2)",
				"pool %s: %.0f pairs/s = %.3f × floor (%.0f EVALSHA/s), i.e. %.2f × floor/2; want ≥ %.2f × floor/2",
				count(size), c.OpsPerSec, v.Median, floor.OpsPerSec, 2*v.Median, targetBatchedVsFloor)
		}
	}
	for _, g := range r.Growth {
		add(g.Time <= targetGrowth && g.RedisUsec <= targetGrowth,
			fmt.Sprintf("cost at %s members ≤ 1.5 × cost at %s", count(g.To), count(g.From)),
			"%s, goroutines=%d: time per pair ×%.3f (quartiles %.3f–%.3f), Redis µs per pair ×%.3f, Redis CPU per pair ×%.3f; want ≤ %.1f",
			mode(g.Batched), g.Goroutines, g.Time, g.TimeQuartiles[0], g.TimeQuartiles[1], g.RedisUsec, g.RedisCPU, targetGrowth)
	}
	for _, size := range sizes {
		m, f := r.script(size, "malloc"), r.script(size, "free")
		if m == nil || f == nil {
			continue
		}
		sum := m.UsecPerCall + f.UsecPerCall
		add(sum <= targetScriptsUsec, "malloc + free ≤ 20 µs of Redis execution",
			"pool %s: malloc %.2f µs + free %.2f µs = %.2f µs per pair; want ≤ %.0f", count(size), m.UsecPerCall, f.UsecPerCall, sum, targetScriptsUsec)
	}
	for _, w := range r.Wait {
		add(w.WakeP50 < targetWakeP50, "MallocWait wake-up p50 < 2 ms after a Free",
			"%d waiters: p50 %s, p99 %s from the Free call; want p50 < %s", w.Waiters, ms(w.WakeP50), ms(w.WakeP99), ms(targetWakeP50))
	}
	if len(r.Wait) > 1 {
		base, top := r.Wait[0], r.Wait[len(r.Wait)-1]
		add(top.CPURatio <= targetWaitCPU, fmt.Sprintf("Redis CPU per hand-off, %d waiters ≤ 2 × %d waiter(s)", top.Waiters, base.Waiters),
			"process CPU (INFO cpu): %.1f µs vs %.1f µs, ×%.2f (quartiles %.2f–%.2f); want ≤ %.1f",
			top.RedisCPUUsecPerHandoff, base.RedisCPUUsecPerHandoff, top.CPURatio, top.CPURatioQuartiles[0], top.CPURatioQuartiles[1], targetWaitCPU)
		add(top.UsecRatio <= targetWaitCPU, fmt.Sprintf("Redis CPU per hand-off, %d waiters ≤ 2 × %d waiter(s)", top.Waiters, base.Waiters),
			"command execution (commandstats): %.1f µs vs %.1f µs, ×%.2f (quartiles %.2f–%.2f); want ≤ %.1f",
			top.RedisUsecPerHandoff, base.RedisUsecPerHandoff, top.UsecRatio, top.UsecRatioQuartiles[0], top.UsecRatioQuartiles[1], targetWaitCPU)
	}
	if pools := gcPools(r.GC); len(pools) > 1 {
		lo, hi := pools[0], pools[len(pools)-1]
		for _, x := range r.Config.GCExpired {
			a, b := r.gcCase(lo, x), r.gcCase(hi, x)
			if a == nil || b == nil {
				continue
			}
			ratio := b.UsecPerLease / a.UsecPerLease
			add(ratio <= targetGCGrowth, "GC cost follows what it reclaims, not the pool size",
				"%d expired: %.2f µs per lease on %s members vs %.2f µs on %s, ×%.2f; want ≤ %.1f (bound of this tool)",
				x, b.UsecPerLease, count(hi), a.UsecPerLease, count(lo), ratio, targetGCGrowth)
		}
		a, b := r.gcWarm(lo), r.gcWarm(hi)
		if a != nil && b != nil {
			ratio := b.UsecPerCall / math.Max(a.UsecPerCall, 0.01)
			add(ratio <= targetGCGrowth, "GC cost follows what it reclaims, not the pool size",
				"nothing expired (%d calls back to back): %.2f µs per call on %s members vs %.2f µs on %s, ×%.2f; want ≤ %.1f (bound of this tool)",
				b.Calls, b.UsecPerCall, count(hi), a.UsecPerCall, count(lo), ratio, targetGCGrowth)
		}
	}
	add(r.Memory.BytesPerMember <= targetBytesPerMember, "Redis memory ≤ 256 bytes per idle member",
		"%.1f bytes per member (%s members with %d-byte names, used_memory %d → %d)",
		r.Memory.BytesPerMember, count(r.Memory.Members), r.Memory.NameLen, r.Memory.UsedBefore, r.Memory.UsedAfter)
	return out
}

func (r *AllocReport) script(size int, prefix string) *AllocScript {
	for i, s := range r.Scripts {
		if s.Pool == size && strings.HasPrefix(s.Script, prefix) {
			return &r.Scripts[i]
		}
	}
	return nil
}

func (r *AllocReport) gcWarm(pool int) *GCWarm {
	for i, w := range r.GCWarm {
		if w.Pool == pool {
			return &r.GCWarm[i]
		}
	}
	return nil
}

func (r *AllocReport) gcCase(pool, expired int) *GCCase {
	for _, c := range r.GC {
		if c.Pool == pool && c.Expired == expired {
			return c
		}
	}
	return nil
}

// Print writes the human-readable tables.
func (r *AllocReport) Print(out io.Writer) {
	cfg := r.Config
	fmt.Fprintf(out, "allocbench %s  %s GOMAXPROCS=%d (%d CPUs)  redis %s, %s\n", r.Date, r.GoVersion, r.GOMAXPROCS, r.NumCPU, r.RedisVersion, r.Server)
	fmt.Fprintf(out, "one go-redis client (PoolSize %d); allocator defaults: batching %d commands per node, reclaim budget %d; run took %s\n",
		r.PoolSize, r.Batching, r.ReclaimBudget, r.Elapsed)
	if r.LoadBefore != "" {
		fmt.Fprintf(out, "load average before %s, after %s (other work on the machine skews the figures)\n", r.LoadBefore, r.LoadAfter)
	}

	fmt.Fprintf(out, "\n1. MALLOC + FREE PAIRS: op = MallocLease (TTL %s) + Lease.Free, two round trips; floor op = one EVALSHA of \"return 1\"\n", allocLeaseTTL)
	fmt.Fprintf(out, "%s per run, rounds=%d (case order alternates each round; figures are medians over rounds); ÷ floor = ops/s ÷ floor\n", cfg.Duration, cfg.Rounds)
	fmt.Fprintln(out, "ops/s of the same goroutine count, median of the per-round ratios (quartiles). A pair needs two round trips, so 0.5 is the ceiling.")
	for _, n := range cfg.Goroutines {
		fmt.Fprintf(out, "\ngoroutines=%d\n", n)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\tops/s\t÷ floor\t(quartiles)\tmean\tp50\tp99\tbusy\tscripts/op\tRedis µs/op\tRedis CPU µs/op\t")
		for _, c := range r.cases {
			cr := r.find(c.id, n)
			ratio, q := "", ""
			if c.id != floorID {
				v := r.vsFloor(c.id, n)
				ratio, q = fmt.Sprintf("%.3f", v.Median), fmt.Sprintf("(%.3f–%.3f)", v.Quartiles[0], v.Quartiles[1])
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t\n", cr.Name, cr.OpsPerSec, ratio, q,
				us(cr.Mean), us(cr.P50), us(cr.P99), cr.Busy, float64(cr.Commands.scriptCalls())/float64(cr.Ops), cr.RedisUsecPerOp, cr.RedisCPUUsecPerOp)
		}
		tw.Flush()
	}
	if len(r.Growth) > 0 {
		fmt.Fprintln(out, "\nCost on the largest pool ÷ on the smallest (time per pair: median of per-round ratios; Redis: ratio of medians)")
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "pools\tbatching\tgoroutines\ttime per pair\t(quartiles)\tRedis µs/pair\tRedis CPU µs/pair\t")
		for _, g := range r.Growth {
			fmt.Fprintf(tw, "%s → %s\t%s\t%d\t×%.3f\t(%.3f–%.3f)\t×%.3f\t×%.3f\t\n", count(g.From), count(g.To), mode(g.Batched), g.Goroutines,
				g.Time, g.TimeQuartiles[0], g.TimeQuartiles[1], g.RedisUsec, g.RedisCPU)
		}
		tw.Flush()
	}
	fmt.Fprintf(out, "\nPools filled with Extend, %d members per call (used_memory growth includes the free set and records)\n", cfg.FillChunk)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "members\tseconds\tµs/member\tbytes/member\t")
	for _, f := range r.Fills {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.1f\t\n", count(f.Size), f.Seconds, f.UsecPerMember, f.BytesPerMember)
	}
	tw.Flush()

	fmt.Fprintf(out, "\n2. SCRIPTS MEASURED ALONE (INFO commandstats; µs/call = EVALSHA execution time, median of %d rounds): per round and pool one\n", cfg.ScriptRounds)
	fmt.Fprintf(out, "goroutine makes %d MallocLease calls (a smaller pool: all its members, repeated), reading the stats, then frees them all.\n", cfg.ScriptLeases)
	fmt.Fprintln(out, "in commands = execution of the commands the script ran, per call; outside = the rest of the EVALSHA time (Lua: the shared")
	fmt.Fprintln(out, "prelude, the redis.call overhead, string work), both from the totals over the rounds")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pool\tscript\tcalls\tµs/call\tin commands\toutside\tcmds/call\t\tcommands run by the script: calls/call × µs/call\t")
	for _, s := range r.Scripts {
		calls := float64(max(s.Calls, 1))
		var inner []string
		var n, usec int64
		for _, name := range s.Commands.workNames() {
			if slices.Contains(scriptCommands, name) {
				continue
			}
			c := s.Commands[name]
			n += c.Calls
			usec += c.Usec
			inner = append(inner, fmt.Sprintf("%s %.2f×%.2f", name, float64(c.Calls)/calls, c.UsecPerCall()))
		}
		in := float64(usec) / calls
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t\t%s\t\n", count(s.Pool), s.Script, s.Calls, s.UsecPerCall, in,
			float64(s.Commands.sentUsec())/calls-in, float64(n)/calls, strings.Join(inner, ", "))
	}
	tw.Flush()
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pool\tmalloc + free µs\t")
	for _, size := range cfg.PoolSizes {
		if m, f := r.script(size, "malloc"), r.script(size, "free"); m != nil && f != nil {
			fmt.Fprintf(tw, "%s\t%.2f\t\n", count(size), m.UsecPerCall+f.UsecPerCall)
		}
	}
	if f := r.find(floorID, 1); f != nil {
		fmt.Fprintf(tw, "floor script (return 1), goroutines=1 runs\t%.2f\t\n", f.Commands["evalsha"].UsecPerCall())
	}
	if f := r.find(floorArgsID, 1); f != nil {
		fmt.Fprintf(tw, "floor with a malloc's 13 keys + 7 args, goroutines=1 runs\t%.2f\t\n", f.Commands["evalsha"].UsecPerCall())
	}
	tw.Flush()

	fmt.Fprintf(out, "\n3. MALLOCWAIT HAND-OFF: pool of 1 member; waiters+1 goroutines loop MallocWait (TTL %s), hold %s, Free; %s per run after\n", allocLeaseTTL, cfg.Hold, cfg.WaitDuration)
	fmt.Fprintf(out, "%s of warm-up, rounds=%d, a fresh pool and Allocator (default options) per run. wake = the next MallocWait's return − the previous\n", cfg.WaitWarmup, cfg.WaitRounds)
	fmt.Fprintln(out, "holder's Free call (after return: − its return); Redis per hand-off from INFO cpu and commandstats (scripts + pub/sub commands)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "waiters\thand-offs/s\twake p50\twake p99\tafter return p50\tp99\tvia PUBLISH\tscripts/hand-off\tRedis µs/hand-off\tRedis CPU µs/hand-off\toverlaps\t")
	for _, w := range r.Wait {
		fmt.Fprintf(tw, "%d\t%.0f\t%s\t%s\t%s\t%s\t%.0f%%\t%.2f\t%.2f\t%.1f\t%d\t\n", w.Waiters, w.HandoffsPerSec, ms(w.WakeP50), ms(w.WakeP99),
			ms(w.WakeAfterReturnP50), ms(w.WakeAfterReturnP99), 100*w.PublishedShare, w.ScriptsPerHandoff, w.RedisUsecPerHandoff, w.RedisCPUUsecPerHandoff, w.Overlaps)
	}
	tw.Flush()
	if len(r.Wait) > 1 {
		base := r.Wait[0]
		for _, w := range r.Wait[1:] {
			fmt.Fprintf(out, "  %d waiters ÷ %d (within each round): Redis CPU ×%.2f (quartiles %.2f–%.2f), Redis µs ×%.2f (quartiles %.2f–%.2f)\n",
				w.Waiters, base.Waiters, w.CPURatio, w.CPURatioQuartiles[0], w.CPURatioQuartiles[1], w.UsecRatio, w.UsecRatioQuartiles[0], w.UsecRatioQuartiles[1])
		}
	}
	fmt.Fprintln(out, "commands per hand-off (summed over rounds; calls/hand-off and µs/call; those run by scripts are inside the EVALSHA time)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "waiters\tcommands\t")
	for _, w := range r.Wait {
		var parts []string
		for _, name := range w.Commands.workNames() {
			c := w.Commands[name]
			parts = append(parts, fmt.Sprintf("%s %.2f×%.2f", name, float64(c.Calls)/float64(max(w.Handoffs, 1)), c.UsecPerCall()))
		}
		fmt.Fprintf(tw, "%d\t%s\t\n", w.Waiters, strings.Join(parts, ", "))
	}
	tw.Flush()

	fmt.Fprintf(out, "\n4. GC: one GC call per pool, expired count and round (rounds=%d; medians); the expired leases were taken with MallocN\n", cfg.GCRounds)
	fmt.Fprintf(out, "(TTL %s) %s before; the allocator's reclaim budget is 0. Redis µs = EVALSHA execution (commandstats); Redis CPU\n", gcLeaseTTL, gcSettle)
	fmt.Fprintln(out, "= process CPU between two INFO cpu calls around the call (includes the INFO calls' own work, ~the empty row)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "pool\texpired\tRedis µs/call\tµs/lease\tRedis CPU µs/call\tround trip\tcommands run per lease\t")
	for _, c := range r.GC {
		per, inner := "", ""
		if c.Expired > 0 {
			per = fmt.Sprintf("%.2f", c.UsecPerLease)
			var n int64
			for _, name := range c.Commands.workNames() {
				if !slices.Contains(scriptCommands, name) {
					n += c.Commands[name].Calls
				}
			}
			inner = fmt.Sprintf("%.1f", float64(n)/float64(c.Expired*len(c.Runs)))
		}
		fmt.Fprintf(tw, "%s\t%d\t%.1f\t%s\t%.1f\t%s\t%s\t\n", count(c.Pool), c.Expired, c.UsecPerCall, per, c.CPUUsecPerCall, us(c.Wall), inner)
	}
	tw.Flush()
	for _, p := range gcPools(r.GC) {
		if m, ok := gcMarginal(r.GC, p); ok {
			fmt.Fprintf(out, "  pool %s: %.2f µs per reclaimed lease beyond the empty call's cost", count(p), m)
		}
		if w := r.gcWarm(p); w != nil {
			fmt.Fprintf(out, "; an empty call measured warm (%d back to back): %.2f µs", w.Calls, w.UsecPerCall)
		}
		fmt.Fprintln(out)
	}

	fmt.Fprintf(out, "\n5. MEMORY of idle members: used_memory %d → %d after Extend of %s members with %d-byte names: %.1f bytes per member\n",
		r.Memory.UsedBefore, r.Memory.UsedAfter, count(r.Memory.Members), r.Memory.NameLen, r.Memory.BytesPerMember)
	var parts []string
	for _, k := range r.Memory.Keys {
		parts = append(parts, fmt.Sprintf("%s %d (%.1f/member)", k.Part, k.Bytes, float64(k.Bytes)/float64(r.Memory.Members)))
	}
	fmt.Fprintf(out, "  MEMORY USAGE by key: %s\n", strings.Join(parts, ", "))

	fmt.Fprintln(out, "\nTARGETS (a MISS is reported, never an error)")
	for _, c := range r.Checks {
		fmt.Fprintf(out, "  %s  %s: %s\n", passMiss(c.Pass), c.Target, c.Detail)
	}
}
