// Command taskbench compares the task queue of redisallocator (package
// taskqueue) with github.com/hibiken/asynq on one Redis server, in one
// run: the round-trip latency of a no-op task (taskqueue's Query against a
// listener; asynq's Enqueue followed by polling GetTaskInfo), the
// throughput of no-op tasks from many producers to 50 workers, the Redis
// cost per task (INFO commandstats and CPU) and, in a separate untimed
// pass with every command in SLOWLOG, each script's Redis time. Every run
// starts with FLUSHALL and fresh clients. It prints each target as a PASS
// or MISS line. See README.md.
//
// Usage (from the bench module):
//
//	go run ./taskbench [--quick] [--tasks 20000] [--workers 50] [--rounds 5] [--json out.json]
//	go run ./taskbench --redis-url redis://host:port/db --flushall
//
// Without --redis-url it starts its own redis-server on a free 127.0.0.1
// port and stops it at exit. It exits non-zero only on errors, never on a
// missed target.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/redisallocator/redisallocator/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "taskbench:", err)
		os.Exit(1)
	}
}

type flags struct {
	redisURL    string
	redisServer string
	jsonPath    string
	cfg         bench.TaskConfig
}

func run() error {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	f.cfg.URL = f.redisURL
	f.cfg.Server = "redis at --redis-url"
	if f.cfg.URL == "" {
		srv, err := bench.StartRedisServer(ctx, f.redisServer)
		if err != nil {
			return err
		}
		defer srv.Stop()
		f.cfg.URL = "redis://" + srv.Addr
		f.cfg.Server = "own redis-server on " + srv.Addr + " (--save \"\" --appendonly no)"
		f.cfg.FlushAllowed = true
	} else if !f.cfg.FlushAllowed {
		return fmt.Errorf("every run starts with FLUSHALL, which deletes every key on %s: give --flushall to allow it", f.redisURL)
	}
	if src := source(); src != "" {
		f.cfg.Server += "; " + src
	}

	f.cfg.Progress = os.Stderr
	rep, err := bench.RunTask(ctx, f.cfg)
	if err != nil {
		return err
	}
	rep.Print(os.Stdout)
	if f.jsonPath != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(f.jsonPath, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.jsonPath, err)
		}
	}
	return nil
}

// source describes the taskqueue source measured (the module is replaced
// by ../): its commit and whether the package had uncommitted changes
// other than test files. It is empty when git cannot tell.
func source() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	s := "taskqueue at " + strings.TrimSpace(string(head))
	out, err := exec.Command("git", "status", "--porcelain", "--", "../taskqueue").Output()
	if err != nil {
		return s
	}
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		if line != "" && !strings.HasSuffix(line, "_test.go") {
			return s + " with uncommitted changes in taskqueue/"
		}
	}
	return s
}

func parseFlags(args []string) (flags, error) {
	f := flags{cfg: bench.DefaultTaskConfig()}
	c := &f.cfg
	fs := flag.NewFlagSet("taskbench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "a short run of every part (fewer calls and tasks, one round); the other flags override it")
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis to use, e.g. redis://127.0.0.1:6379/0 (default: start a private redis-server); needs --flushall")
	fs.BoolVar(&c.FlushAllowed, "flushall", false, "allow FLUSHALL on the server of --redis-url before every run")
	fs.StringVar(&f.redisServer, "redis-server", "redis-server", "redis-server binary to start when --redis-url is not given")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	cs := intsFlag(fs, "callers", c.Callers, "comma-separated counts of concurrent callers of the latency runs")
	fs.IntVar(&c.Calls, "calls", c.Calls, "timed calls of each floor and taskqueue latency run")
	fs.IntVar(&c.Warmup, "warmup", c.Warmup, "untimed calls before each latency run")
	fs.IntVar(&c.AsynqCalls, "asynq-calls", c.AsynqCalls, "timed calls of each asynq latency run at --fast-interval")
	fs.IntVar(&c.AsynqSlowCalls, "asynq-slow-calls", c.AsynqSlowCalls, "timed calls of the asynq latency run at its default TaskCheckInterval (about 1 s each)")
	fs.DurationVar(&c.FastInterval, "fast-interval", c.FastInterval, "asynq TaskCheckInterval of the fast asynq cases")
	fs.DurationVar(&c.Poll, "poll", c.Poll, "how often asynq's RPC polls GetTaskInfo")
	fs.IntVar(&c.Tasks, "tasks", c.Tasks, "tasks per throughput run")
	fs.IntVar(&c.WarmupTasks, "warmup-tasks", c.WarmupTasks, "untimed tasks before each throughput run")
	fs.IntVar(&c.Producers, "producers", c.Producers, "goroutines submitting tasks")
	fs.IntVar(&c.Workers, "workers", c.Workers, "workers: Listen's count and asynq's Concurrency")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds of the throughput runs; the order alternates each round and figures are medians")
	fs.IntVar(&c.Retries, "retries", c.Retries, "throughput rounds that may be run again, in all, because other work on the machine took more than a quarter of a core during one of their runs")
	latency := fs.Bool("latency", true, "run part 1 (round-trip latency)")
	throughput := fs.Bool("throughput", true, "run parts 2 and 3 (throughput and Redis cost per task)")
	scripts := fs.Bool("scripts", true, "time each script in a separate pass with every command in SLOWLOG (settings restored after)")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Callers = *cs
	c.SkipLatency, c.SkipThroughput, c.SkipScripts = !*latency, !*throughput, !*scripts
	if *quick {
		// The quick sizes, except where a flag was given.
		q := bench.QuickTaskConfig()
		set := map[string]bool{}
		fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
		for name, v := range map[string][2]*int{
			"calls": {&c.Calls, &q.Calls}, "warmup": {&c.Warmup, &q.Warmup},
			"asynq-calls": {&c.AsynqCalls, &q.AsynqCalls}, "asynq-slow-calls": {&c.AsynqSlowCalls, &q.AsynqSlowCalls},
			"tasks": {&c.Tasks, &q.Tasks}, "warmup-tasks": {&c.WarmupTasks, &q.WarmupTasks}, "rounds": {&c.Rounds, &q.Rounds},
		} {
			if !set[name] {
				*v[0] = *v[1]
			}
		}
	}
	return f, nil
}

// ints is a flag holding comma-separated positive integers.
type ints []int

func intsFlag(fs *flag.FlagSet, name string, def []int, usage string) *ints {
	v := ints(append([]int(nil), def...))
	fs.Var(&v, name, usage)
	return &v
}

func (v *ints) String() string {
	if v == nil {
		return ""
	}
	s := make([]string, len(*v))
	for i, n := range *v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (v *ints) Set(s string) error {
	var out []int
	for p := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive integer", p)
		}
		out = append(out, n)
	}
	*v = out
	return nil
}
