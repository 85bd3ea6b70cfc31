package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
)

// Print writes the human-readable tables of the hand-off scenario.
func (r *HandoffReport) Print(out io.Writer) {
	fmt.Fprintf(out, "handoff %s  %s GOMAXPROCS=%d (%d CPUs)  redis %s, %s\n",
		r.Date, r.GoVersion, r.GOMAXPROCS, r.NumCPU, r.RedisVersion, r.Server)
	fmt.Fprintf(out, "%d goroutines contend for one key: acquire, hold %s, release, again; %s per run after %s of warm-up on another key\n",
		r.Goroutines, r.Hold, r.Duration, r.Warmup)
	fmt.Fprintf(out, "rounds=%d (case order alternates each round; figures are medians over rounds), lock TTL %s, a fresh key per run,\n",
		r.Rounds, r.TTL)
	fmt.Fprintf(out, "every process its own go-redis client (PoolSize %d) and lock client\n", r.PoolSize)
	if r.LoadBefore != "" {
		fmt.Fprintf(out, "load average before %s, after %s (other work on the machine skews the figures)\n", r.LoadBefore, r.LoadAfter)
	}

	for _, p := range r.Processes {
		fmt.Fprintf(out, "\nprocesses=%d (%d goroutines in all)\n", p, r.Goroutines)
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "case\thand-offs/s\twait p50\twait p99\tper goroutine min\tmax\tregrabs\tRedis CPU µs/hand-off\tcmds/hand-off\tsent/hand-off\texclusion errors\t")
		for _, c := range handoffCases {
			cr := r.find(c.id, p)
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.0f\t%.0f\t%.0f%%\t%.1f\t%.2f\t%.2f\t%d\t\n",
				cr.Case, cr.HandoffsPerSec, ms(cr.WaitP50), ms(cr.WaitP99), cr.MinPerGoroutine, cr.MaxPerGoroutine, 100*cr.Regrabs,
				cr.RedisCPUUsecPerHandoff, cr.CommandsPerHandoff, cr.SentPerHandoff, cr.ExclusionErrors)
		}
		tw.Flush()
	}
	fmt.Fprintln(out, "\ncases:")
	for _, c := range handoffCases {
		fmt.Fprintf(out, "  %-24s %s\n", c.id, c.name)
	}

	fmt.Fprintln(out, "\nCommands per case, summed over rounds. calls: INFO commandstats (every execution, also inside a script;")
	fmt.Fprintln(out, "the harness's INFO and CONFIG RESETSTAT left out); sent: what the clients sent (go-redis hook, pub/sub from")
	fmt.Fprintln(out, "commandstats). Calls beyond sent ran inside scripts, and their time is part of the EVALSHA's.")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "processes\tcase\tcommand\tcalls\tcalls/hand-off\tsent/hand-off\tµs/call\t")
	for _, cr := range r.Cases {
		names := slices.Collect(maps.Keys(cr.Commands))
		for name := range cr.Sent {
			if _, ok := cr.Commands[name]; !ok {
				names = append(names, name) // sent but not listed: rejected by the server
			}
		}
		slices.Sort(names)
		a := float64(cr.Acquisitions)
		for _, name := range names {
			s := cr.Commands[name]
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%.3f\t%.3f\t%.2f\t\n",
				cr.Processes, cr.Case, name, s.Calls, float64(s.Calls)/a, float64(cr.Sent[name])/a, s.UsecPerCall())
		}
	}
	tw.Flush()

	fmt.Fprintf(out, "\nRatios to %s within each round (median of the per-round ratios; quartiles in brackets)\n", handoffBaseline)
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "processes\tcase\thand-offs/s ÷ bsm\t\tRedis CPU per hand-off ÷ bsm\t\t")
	for _, p := range r.Processes {
		for _, c := range handoffCases {
			if c.id == handoffBaseline {
				continue
			}
			h, cpu := r.ratio("handoffs_per_sec", c.id, p), r.ratio("redis_cpu_per_handoff", c.id, p)
			fmt.Fprintf(tw, "%d\t%s\t%.3f\t(%.3f–%.3f)\t%.3f\t(%.3f–%.3f)\t\n",
				p, c.id, h.Median, h.Quartiles[0], h.Quartiles[1], cpu.Median, cpu.Quartiles[0], cpu.Quartiles[1])
		}
	}
	tw.Flush()

	fmt.Fprintln(out)
	if err := r.Err(); err != nil {
		fmt.Fprintln(out, "ERROR:", err)
		return
	}
	fmt.Fprintln(out, "Mutual exclusion held in every run: no process ever saw two of its goroutines holding the lock, the hold")
	fmt.Fprintln(out, "spans of all processes never overlapped, and redisallocator's fences rose strictly in hold order.")
}

// ratio returns the ratio of metric for case id at procs processes.
func (r *HandoffReport) ratio(metric, id string, procs int) HandoffRatio {
	for _, x := range r.Ratios {
		if x.Metric == metric && x.Case == id && x.Processes == procs {
			return x
		}
	}
	return HandoffRatio{}
}
