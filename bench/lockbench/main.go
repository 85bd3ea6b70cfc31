// Command lockbench compares the lock of redisallocator with
// github.com/bsm/redislock on one Redis server, with one go-redis client.
//
// For 1 and 50 goroutines it times four cases: a floor (EVALSHA of a no-op
// script), redisallocator TryAcquire+Release, bsm/redislock Obtain+Release
// and redisallocator Lock+Unlock (SET NX + DEL). The cases run interleaved,
// in alternating order over several rounds, and each figure is the median
// over the rounds. Around every run it reads INFO commandstats and the
// server's CPU time, and a separate pass measures the acquire and release
// scripts on their own. See README.md.
//
// Usage (from the bench module):
//
//	go run ./lockbench [--redis-url redis://host:port/db] [--duration 500ms | --ops N] [--rounds 15] [--script-rounds 5] [--json out.json]
//
// Without --redis-url it starts its own redis-server on a free 127.0.0.1
// port and stops it at exit. It exits non-zero only on errors.
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
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

type flags struct {
	redisURL    string
	redisServer string
	jsonPath    string
	cfg         bench.Config
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
	rep, err := bench.Run(ctx, client, f.cfg)
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
			return err
		}
	}
	return nil
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis to use, e.g. redis://127.0.0.1:6379/0 (default: start a private redis-server)")
	fs.StringVar(&f.redisServer, "redis-server", "redis-server", "redis-server binary to start when --redis-url is not given")
	fs.DurationVar(&f.cfg.Duration, "duration", 500*time.Millisecond, "time of each case run")
	fs.Int64Var(&f.cfg.Ops, "ops", 0, "operations per case run instead of --duration (0: use --duration)")
	fs.IntVar(&f.cfg.Rounds, "rounds", 15, "rounds; the cases alternate their order each round and figures are medians over rounds")
	fs.IntVar(&f.cfg.ScriptRounds, "script-rounds", 5, "rounds of the separate acquire-only and release-only script passes")
	gs := fs.String("goroutines", "1,50", "comma-separated goroutine counts")
	fs.StringVar(&f.jsonPath, "json", "", "also write the results as JSON to this file")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.cfg.Rounds < 1 {
		return f, errors.New("--rounds must be at least 1")
	}
	if f.cfg.Ops < 0 || (f.cfg.Ops == 0 && f.cfg.Duration <= 0) {
		return f, errors.New("need --duration > 0 or --ops > 0")
	}
	for g := range strings.SplitSeq(*gs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(g))
		if err != nil || n < 1 || n > bench.PoolSize {
			return f, fmt.Errorf("--goroutines: %q is not a count from 1 to %d", g, bench.PoolSize)
		}
		f.cfg.Goroutines = append(f.cfg.Goroutines, n)
	}
	return f, nil
}
