package bench

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Targets of the task queue's issue.
const (
	targetQueryP50   = time.Millisecond // taskqueue Query p50 on loopback
	targetThroughput = 1.5              // taskqueue tasks/s ÷ asynq's
)

// checks evaluates the targets. A miss is reported, never an error.
func (r *TaskReport) checks() []Check {
	var out []Check
	add := func(ok bool, target, format string, args ...any) {
		out = append(out, Check{Target: target, Pass: ok, Detail: fmt.Sprintf(format, args...)})
	}
	if len(r.Config.Callers) > 0 {
		if c := r.latencyCase("taskqueue", slices.Min(r.Config.Callers)); c != nil {
			add(c.RPC.P50 < targetQueryP50, "taskqueue Query round trip p50 < 1 ms on loopback",
				"%d caller(s) in a closed loop: p50 %s, p99 %s, mean %s over %d calls", c.Callers, us(c.RPC.P50), us(c.RPC.P99), us(c.RPC.Mean), c.RPC.Ops)
		}
	}
	for _, q := range r.Ratios {
		ours, base := r.throughputCase("taskqueue"), r.throughputCase(q.Baseline)
		add(q.Median >= targetThroughput, fmt.Sprintf("taskqueue throughput ≥ %.1f × asynq (TaskCheckInterval %s)", targetThroughput, base.Interval),
			"%.0f vs %.0f tasks/s: ×%.2f (median of per-round ratios, quartiles %.2f–%.2f)", ours.TasksPerSec, base.TasksPerSec, q.Median, q.Quartiles[0], q.Quartiles[1])
	}
	return out
}

// Print writes the human-readable tables.
func (r *TaskReport) Print(out io.Writer) {
	cfg := r.Config
	fmt.Fprintf(out, "taskbench %s  %s GOMAXPROCS=%d (%d CPUs)  redis %s, %s  asynq %s\n", r.Date, r.GoVersion, r.GOMAXPROCS, r.NumCPU, r.RedisVersion, r.Server, r.Asynq)
	fmt.Fprintf(out, "every run: FLUSHALL, then fresh go-redis clients (PoolSize %d), one for the callers/producers and one for the workers; run took %s\n", PoolSize, r.Elapsed)
	if r.LoadBefore != "" {
		fmt.Fprintf(out, "load average before %s, after %s (other work on the machine skews the figures)\n", r.LoadBefore, r.LoadAfter)
	}

	if len(r.Latency) > 0 {
		r.printLatency(out)
	}
	if len(r.Throughput) > 0 {
		r.printThroughput(out)
	}
	if len(r.Scripts) > 0 {
		r.printScripts(out)
	}
	if len(r.Latency) > 0 {
		r.printLatencyCommands(out)
	}
	if len(r.Repeated) > 0 {
		fmt.Fprintf(out, "\nThroughput rounds run again (all cases) because other work took more than %.2f of a core during a run:\n", busyOthers)
		for _, line := range r.Repeated {
			fmt.Fprintln(out, "  "+line)
		}
	}
	if w := r.warnings(); len(w) > 0 {
		fmt.Fprintf(out, "\nOther work took more than %.2f of a core during these windows (kept), which skews their figures:\n", busyOthers)
		for _, line := range w {
			fmt.Fprintln(out, "  "+line)
		}
	}

	fmt.Fprintln(out, "\nTargets")
	for _, c := range r.Checks {
		fmt.Fprintf(out, "  %s  %s: %s\n", passMiss(c.Pass), c.Target, c.Detail)
	}
	for _, c := range r.Latency {
		if c.ID == "taskqueue" && c.Callers != slices.Min(cfg.Callers) {
			fmt.Fprintf(out, "  (the target is for one caller; with %d callers the p50 is %s, p99 %s, at %.0f calls/s)\n", c.Callers, us(c.RPC.P50), us(c.RPC.P99), c.RPC.OpsPerSec)
		}
	}
}

func (r *TaskReport) printLatency(out io.Writer) {
	cfg := r.Config
	fmt.Fprintf(out, "\n1. ROUND TRIP OF A NO-OP TASK: callers in closed loops; %d workers on the other client\n", cfg.Workers)
	fmt.Fprintf(out, "taskqueue: Query(ctx, id, %q, nil, WithPolicy(Remote)) on one Queue, Listen(ctx, [%q], %d) on another\n", taskName, taskName, cfg.Workers)
	fmt.Fprintf(out, "asynq: EnqueueContext(TaskID(id), Retention(%s)), then Inspector.GetTaskInfo every %s until completed; Server Concurrency %d\n", asynqRetain, cfg.Poll, cfg.Workers)
	fmt.Fprintln(out, "start = from the call to the task function's start; per call: commands the clients sent, their round trips and EVALSHAs;")
	fmt.Fprintln(out, "Redis exec = commandstats µs of the sent commands; Redis CPU = server process user+sys; client CPU = this process (callers + workers);")
	fmt.Fprintln(out, "other cores = CPU seconds per second the machine spent on anything else (other processes; /proc/stat)")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tcallers\tcalls\tp50\tp99\tmean\tcalls/s\tstart p50\tstart p99\tsent/call\ttrips/call\tscripts/call\tRedis exec µs\tRedis CPU µs\tclient CPU µs\tother cores\t")
	for _, c := range r.Latency {
		sp50, sp99 := "–", "–"
		if c.Start.N > 0 {
			sp50, sp99 = us(c.Start.P50), us(c.Start.P99)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%.0f\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t\n", c.Name, c.Callers, c.RPC.Ops,
			us(c.RPC.P50), us(c.RPC.P99), us(c.RPC.Mean), c.RPC.OpsPerSec, sp50, sp99,
			c.Redis.Sent, c.Redis.RoundTrips, c.Redis.Scripts, c.Redis.ExecUsec, c.Redis.CPUUsec, c.Redis.ClientCPUUsec, c.Redis.OtherCores())
	}
	tw.Flush()
	for _, c := range r.Latency {
		if c.ID == "taskqueue" {
			if f := r.latencyCase("floor", c.Callers); f != nil {
				fmt.Fprintf(out, "  %d caller(s): taskqueue Query p50 = %.1f × the no-op EVALSHA's p50\n", c.Callers, float64(c.RPC.P50)/float64(f.RPC.P50))
			}
		}
	}

}

func (r *TaskReport) printThroughput(out io.Writer) {
	cfg := r.Config
	fmt.Fprintf(out, "\n2. THROUGHPUT: %d no-op tasks submitted by %d goroutines, %d workers; time from the first submission until the task\n", cfg.Tasks, cfg.Producers, cfg.Workers)
	fmt.Fprintf(out, "function has run %d times; %d untimed warm-up tasks first; rounds=%d (order alternates; figures are medians)\n", cfg.Tasks, cfg.WarmupTasks, cfg.Rounds)
	fmt.Fprintln(out, "taskqueue: Submit(ctx, id, \"noop\", nil) on one Queue, one Listen with the workers on another; asynq: EnqueueContext(TaskID(id))")
	fmt.Fprintln(out, "(no Retention, its cheapest path), Server with Concurrency = workers. submitted / first start: when the producers were")
	fmt.Fprintln(out, "done and when the first task function started; after start: tasks/s from the first start to the end; cores: CPU")
	fmt.Fprintf(out, "seconds per second of the Redis process, of this process and of anything else on the machine (%d CPUs; /proc/stat)\n", r.NumCPU)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\ttasks/s\telapsed\tsubmitted\tfirst start\tafter start\tcores: Redis\tclient\tother\tper round: tasks/s (other cores)\t")
	for _, c := range r.Throughput {
		var per string
		for i, run := range c.Runs {
			if i > 0 {
				per += " "
			}
			per += fmt.Sprintf("%.0f (%.2f)", run.TasksPerSec, run.Redis.OtherCores())
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%.0f\t%.2f\t%.2f\t%.2f\t%s\t\n", c.Name, c.TasksPerSec, ms(c.Elapsed), ms(c.Submitted), ms(c.FirstStart), c.Steady,
			c.Redis.RedisCores, c.Redis.ClientCores, c.Redis.OtherCores(), per)
	}
	tw.Flush()
	fmt.Fprintf(out, "floor: EVALSHA return 1 from %d goroutines on one client, first in each round: %.0f/s (median; per round", cfg.Producers, r.FloorPerSec)
	for _, f := range r.Floor {
		fmt.Fprintf(out, " %.0f", f.OpsPerSec)
	}
	fmt.Fprint(out, ")\n  that ÷ round trips per task, the rate if every round trip cost a no-op's:")
	for _, c := range r.Throughput {
		fmt.Fprintf(out, " %s %.0f;", c.ID, r.FloorPerSec/c.Redis.RoundTrips)
	}
	fmt.Fprintln(out)
	for _, q := range r.Ratios {
		fmt.Fprintf(out, "  taskqueue ÷ %s: ×%.2f (median of per-round ratios; quartiles %.2f–%.2f)\n", q.Baseline, q.Median, q.Quartiles[0], q.Quartiles[1])
	}

	fmt.Fprintln(out, "\n3. REDIS COST PER TASK (windows of part 2, medians of the rounds)")
	fmt.Fprintln(out, "sent/trips/scripts: commands the clients sent, round trips, EVALSHAs; run: every command Redis ran, those of scripts included;")
	fmt.Fprintln(out, "Redis exec: commandstats µs of the sent commands (a script's includes what it ran); all lines: the sum over every commandstats")
	fmt.Fprintln(out, "line, which counts the commands scripts ran twice; Redis CPU: server process user+sys (network I/O included)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tsent/task\ttrips/task\tscripts/task\trun/task\tRedis exec µs\tall lines µs\tRedis CPU µs\tclient CPU µs\t")
	for _, c := range r.Throughput {
		x := c.Redis
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", c.Name, x.Sent, x.RoundTrips, x.Scripts, x.Run, x.ExecUsec, x.AllLinesUsec, x.CPUUsec, x.ClientCPUUsec)
	}
	tw.Flush()
	if q, a := r.throughputCase("taskqueue"), r.throughputCase("asynq@"+(system{asynq: true}).intervalString()); q != nil && a != nil {
		fmt.Fprintf(out, "  taskqueue ÷ asynq (default interval): Redis exec ×%.2f, Redis CPU ×%.2f, client CPU ×%.2f per task\n",
			q.Redis.ExecUsec/a.Redis.ExecUsec, q.Redis.CPUUsec/a.Redis.CPUUsec, q.Redis.ClientCPUUsec/a.Redis.ClientCPUUsec)
	}

	fmt.Fprintln(out, "\nCommands per task, summed over the rounds of part 2 (sent: by the clients; in scripts: the rest of commandstats' calls)")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tcommand\tcalls/task\tsent/task\tin scripts/task\tµs/call\t")
	for _, c := range r.Throughput {
		n := float64(max(c.Tasks, 1))
		for _, name := range c.Commands.workNames() {
			if taskHarnessCommands[name] {
				continue
			}
			s := c.Commands[name]
			sent := min(c.Sent[name], s.Calls)
			fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.3f\t%.3f\t%.2f\t\n", c.ID, name, float64(s.Calls)/n, float64(sent)/n, float64(s.Calls-sent)/n, s.UsecPerCall())
		}
	}
	tw.Flush()

}

func (r *TaskReport) printLatencyCommands(out io.Writer) {
	fmt.Fprintln(out, "\nCommands per call of part 1")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tcallers\tcommand\tcalls/call\tsent/call\tµs/call\t")
	for _, c := range r.Latency {
		n := float64(max(c.RPC.Ops, 1))
		for _, name := range c.Stats.Commands.workNames() {
			if taskHarnessCommands[name] {
				continue
			}
			s := c.Stats.Commands[name]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%.3f\t%.3f\t%.2f\t\n", c.ID, c.Callers, name, float64(s.Calls)/n, float64(min(c.Stats.Sent[name], s.Calls))/n, s.UsecPerCall())
		}
	}
	tw.Flush()

}

func (r *TaskReport) printScripts(out io.Writer) {
	fmt.Fprintf(out, "\n4. SCRIPTS: one more run per system (at most %d tasks, not timed) with every command logged in SLOWLOG; the logged\n", slowlogTasks)
	fmt.Fprintln(out, "execution time of each script (by SHA1, KEYS[1] with task ids as <id>, and command length), per call and per task")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tscript\tcalls/task\tµs/call\tµs/task\t")
	sum := map[string]float64{}
	var systems []string
	for _, s := range r.Scripts {
		if _, ok := sum[s.System]; !ok {
			systems = append(systems, s.System)
		}
		sum[s.System] += s.UsecPerTask
		fmt.Fprintf(tw, "%s\t%s\t%.3f\t%.2f\t%.2f\t\n", s.System, s.Script, s.CallsPerOp, s.UsecPerCall, s.UsecPerTask)
	}
	for _, sys := range systems {
		fmt.Fprintf(tw, "%s\tall scripts\t\t\t%.2f\t\n", sys, sum[sys])
	}
	tw.Flush()
}

// warnings lists the windows during which other work kept the machine
// busy.
func (r *TaskReport) warnings() []string {
	var out []string
	for _, c := range r.Latency {
		if o := c.Redis.OtherCores(); o > busyOthers {
			out = append(out, fmt.Sprintf("latency %s, %d caller(s): %.2f cores", c.ID, c.Callers, o))
		}
	}
	for _, c := range r.Throughput {
		for _, run := range c.Runs {
			if o := run.Redis.OtherCores(); o > busyOthers {
				out = append(out, fmt.Sprintf("throughput %s, round %d: %.2f cores", c.ID, run.Round+1, o))
			}
		}
	}
	return out
}

func (r *TaskReport) latencyCase(id string, callers int) *LatencyCase {
	i := slices.IndexFunc(r.Latency, func(c *LatencyCase) bool { return c.ID == id && c.Callers == callers })
	if i < 0 {
		return nil
	}
	return r.Latency[i]
}
