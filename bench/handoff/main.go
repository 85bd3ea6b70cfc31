// Command handoff measures contended hand-offs of one lock: G goroutines
// loop on one key (acquire, hold 1 ms, release) and the lock passes from
// one to the next. It compares redisallocator's Acquire with release
// notification, bsm/redislock's Obtain polling every millisecond and
// redisallocator's Acquire polling every millisecond, with the goroutines
// in one process and split over several. See README.md.
//
// Usage (from the bench module):
//
//	go run ./handoff [--redis-url redis://host:port/db] [--duration 2s] [--goroutines 16] [--processes 1,3] [--rounds 5] [--hold 1ms] [--warmup 200ms] [--json out.json]
//
// Without --redis-url it starts its own redis-server on a free 127.0.0.1
// port and stops it at exit. Runs with more than one process start this
// binary again as children (marked by bench.HandoffChildEnv). It exits
// non-zero on errors and when mutual exclusion failed, never on a ratio.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redisallocator/redisallocator/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if bench.IsHandoffChild() {
		if err := bench.RunHandoffChild(ctx, os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "handoff child:", err)
			stop()
			os.Exit(1)
		}
		return
	}
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "handoff:", err)
		stop()
		os.Exit(1)
	}
}

type flags struct {
	redisURL    string
	redisServer string
	jsonPath    string
	cfg         bench.HandoffConfig
}

func run(ctx context.Context) error {
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
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
	}
	f.cfg.Progress = os.Stderr

	rep, err := bench.RunHandoff(ctx, f.cfg)
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
	return rep.Err()
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("handoff", flag.ContinueOnError)
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis to use, e.g. redis://127.0.0.1:6379/0 (default: start a private redis-server)")
	fs.StringVar(&f.redisServer, "redis-server", "redis-server", "redis-server binary to start when --redis-url is not given")
	fs.DurationVar(&f.cfg.Duration, "duration", 2*time.Second, "timed part of each run")
	fs.DurationVar(&f.cfg.Warmup, "warmup", 200*time.Millisecond, "untimed contention on another key before each run (0: none)")
	fs.IntVar(&f.cfg.Goroutines, "goroutines", 16, "contending goroutines per run, split over the processes")
	ps := fs.String("processes", "1,3", "comma-separated process counts")
	fs.IntVar(&f.cfg.Rounds, "rounds", 5, "rounds; the cases alternate their order each round and figures are medians over rounds")
	fs.DurationVar(&f.cfg.Hold, "hold", time.Millisecond, "how long each acquisition holds the lock")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case f.cfg.Rounds < 1:
		return f, errors.New("--rounds must be at least 1")
	case f.cfg.Duration <= 0:
		return f, errors.New("--duration must be positive")
	case f.cfg.Hold < 0 || f.cfg.Warmup < 0:
		return f, errors.New("--hold and --warmup must not be negative")
	case f.cfg.Goroutines < 1:
		return f, errors.New("--goroutines must be at least 1")
	}
	for p := range strings.SplitSeq(*ps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 || n > f.cfg.Goroutines {
			return f, fmt.Errorf("--processes: %q is not a count from 1 to --goroutines (%d)", p, f.cfg.Goroutines)
		}
		f.cfg.Processes = append(f.cfg.Processes, n)
	}
	return f, nil
}
