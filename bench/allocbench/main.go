// Command allocbench measures the allocator package on one Redis server,
// with one go-redis client, in one run: malloc + free pairs per second on
// pools of several sizes with and without batching, each against the
// no-op EVALSHA rate of the same server (the floor); the Redis execution
// time of the malloc and free scripts alone; MallocWait wake-up latency and
// Redis CPU per hand-off; GC cost against what it reclaims; and Redis
// memory per idle member. It prints each target as a PASS or MISS line.
// See README.md.
//
// Usage (from the bench module):
//
//	go run ./allocbench [--redis-url redis://host:port/db] [--duration 500ms] [--rounds 7] [--json out.json]
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
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/redisallocator/redisallocator/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "allocbench:", err)
		os.Exit(1)
	}
}

type flags struct {
	redisURL    string
	redisServer string
	jsonPath    string
	cfg         bench.AllocConfig
}

func run() error {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	url := f.redisURL
	f.cfg.Server = "redis at --redis-url"
	if url == "" {
		srv, err := bench.StartRedisServer(ctx, f.redisServer)
		if err != nil {
			return err
		}
		defer srv.Stop()
		url = "redis://" + srv.Addr
		f.cfg.Server = "own redis-server on " + srv.Addr + " (--save \"\" --appendonly no)"
	}
	client, err := bench.NewClient(url)
	if err != nil {
		return err
	}
	defer client.Close()

	f.cfg.Progress = os.Stderr
	rep, err := bench.RunAlloc(ctx, client, f.cfg)
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

func parseFlags(args []string) (flags, error) {
	f := flags{cfg: bench.DefaultAllocConfig()}
	c := &f.cfg
	fs := flag.NewFlagSet("allocbench", flag.ContinueOnError)
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis to use, e.g. redis://127.0.0.1:6379/0 (default: start a private redis-server)")
	fs.StringVar(&f.redisServer, "redis-server", "redis-server", "redis-server binary to start when --redis-url is not given")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.DurationVar(&c.Duration, "duration", c.Duration, "time of each malloc+free run")
	fs.IntVar(&c.Rounds, "rounds", c.Rounds, "rounds of the malloc+free runs; the cases alternate their order each round and figures are medians over rounds")
	gs := intsFlag(fs, "goroutines", c.Goroutines, "comma-separated goroutine counts of the malloc+free runs")
	ps := intsFlag(fs, "pool-sizes", c.PoolSizes, "comma-separated pool sizes of the malloc+free runs and script passes")
	fs.IntVar(&c.FillChunk, "fill-chunk", c.FillChunk, "members per Extend call when a pool is filled")
	fs.IntVar(&c.ScriptRounds, "script-rounds", c.ScriptRounds, "rounds of the malloc-only and free-only script passes")
	fs.IntVar(&c.ScriptLeases, "script-leases", c.ScriptLeases, "MallocLease calls (then as many frees) per script pass and round")
	ws := intsFlag(fs, "waiters", c.Waiters, "comma-separated waiter counts of the MallocWait runs (waiters+1 goroutines on a pool of 1)")
	fs.DurationVar(&c.WaitDuration, "wait-duration", c.WaitDuration, "timed part of each MallocWait run")
	fs.DurationVar(&c.WaitWarmup, "wait-warmup", c.WaitWarmup, "untimed hand-offs before each MallocWait run")
	fs.IntVar(&c.WaitRounds, "wait-rounds", c.WaitRounds, "rounds of the MallocWait runs")
	fs.DurationVar(&c.Hold, "hold", c.Hold, "how long each MallocWait holder keeps the lease before Free")
	gp := intsFlag(fs, "gc-pools", c.GCPools, "comma-separated pool sizes of the GC runs")
	ge := intsFlag(fs, "gc-expired", c.GCExpired, "comma-separated counts of expired leases per GC call")
	fs.IntVar(&c.GCRounds, "gc-rounds", c.GCRounds, "rounds of the GC runs")
	fs.IntVar(&c.MemMembers, "mem-members", c.MemMembers, "members added for the memory measurement")
	fs.IntVar(&c.MemNameLen, "mem-name-len", c.MemNameLen, "bytes per member name in the memory measurement")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.Goroutines, c.PoolSizes, c.Waiters, c.GCPools, c.GCExpired = *gs, *ps, *ws, *gp, *ge
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
