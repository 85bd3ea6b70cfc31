package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// taskServer starts a private redis-server for a test: RunTask flushes
// its server, so it never runs on the shared one (or LOCKBENCH_REDIS_URL).
func taskServer(t *testing.T) string {
	t.Helper()
	srv, err := StartRedisServer(t.Context(), "redis-server")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return "redis://" + srv.Addr
}

// tinyTaskConfig runs every part of taskbench in a few seconds; most of
// it is asynq's default TaskCheckInterval (about a second per wait).
func tinyTaskConfig(url string) TaskConfig {
	return TaskConfig{
		URL: url, FlushAllowed: true, Server: "test server",
		Callers: []int{1, 3}, Calls: 60, Warmup: 10,
		AsynqCalls: 10, AsynqSlowCalls: 1, FastInterval: 10 * time.Millisecond, Poll: time.Millisecond,
		Tasks: 300, WarmupTasks: 20, Producers: 4, Workers: 8, Rounds: 1, Retries: 0,
	}
}

// TestRunTaskTiny runs every part of taskbench with tiny counts and checks
// that each produced plausible figures and that the tables print.
func TestRunTaskTiny(t *testing.T) {
	url := taskServer(t)
	cfg := tinyTaskConfig(url)
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := RunTask(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// floor, taskqueue and asynq at 10ms at each caller count, asynq at 1s once.
	if got := len(rep.Latency); got != 3*2+1 {
		t.Fatalf("%d latency cases, want 7", got)
	}
	for _, c := range rep.Latency {
		want := cfg.Calls
		switch c.ID {
		case "asynq@10ms":
			want = cfg.AsynqCalls
		case "asynq@1s (default)":
			want = cfg.AsynqSlowCalls
		}
		if c.RPC.Ops != int64(want) || c.RPC.P50 <= 0 || c.RPC.P99 < c.RPC.P50 || c.Redis.Sent < 1 || c.Redis.ExecUsec <= 0 {
			t.Errorf("%s/%d: implausible %+v", c.ID, c.Callers, c)
		}
		if c.ID == "floor" {
			if c.Redis.Scripts != 1 || c.Start.N != 0 {
				t.Errorf("floor/%d: %.2f scripts per call, %d starts; want 1 and 0", c.Callers, c.Redis.Scripts, c.Start.N)
			}
			continue
		}
		if c.Start.N != want || c.Start.P50 <= 0 || c.Start.P50 > c.RPC.P99 {
			t.Errorf("%s/%d: %d handler starts (want %d), p50 %v", c.ID, c.Callers, c.Start.N, want, c.Start.P50)
		}
	}
	// One Query, alone, is three scripts (submit, claim, complete) and the
	// listener's BLPOP: a regression here changes the figures' meaning.
	if c := rep.latencyCase("taskqueue", 1); c.Redis.Scripts < 2.9 || c.Redis.Scripts > 3.1 {
		t.Errorf("taskqueue Query: %.2f scripts per call, want 3", c.Redis.Scripts)
	}
	if len(rep.Floor) != cfg.Rounds || rep.Floor[0].Ops != int64(cfg.Tasks) || rep.FloorPerSec <= 0 {
		t.Errorf("floor: %+v, want %d runs of %d ops", rep.Floor, cfg.Rounds, cfg.Tasks)
	}
	if len(rep.Throughput) != 3 || len(rep.Ratios) != 2 {
		t.Fatalf("%d throughput cases and %d ratios, want 3 and 2", len(rep.Throughput), len(rep.Ratios))
	}
	for _, c := range rep.Throughput {
		if len(c.Runs) != cfg.Rounds || c.TasksPerSec <= 0 || c.Elapsed < c.FirstStart || c.Tasks != int64(cfg.Tasks) {
			t.Errorf("%s: implausible %+v", c.ID, c)
		}
		// Each system stores a task's submission and its end: at least two
		// scripts per task.
		if x := c.Redis; x.Scripts < 1.9 || x.Run < x.Sent || x.ExecUsec <= 0 || x.AllLinesUsec < x.ExecUsec || x.CPUUsec <= 0 {
			t.Errorf("%s: implausible costs %+v", c.ID, x)
		}
	}
	// The SLOWLOG pass: taskqueue's submit, claim and complete scripts;
	// asynq's enqueue, dequeue and done.
	per := map[string]float64{}
	for _, s := range rep.Scripts {
		per[s.System] += s.CallsPerOp
		if s.UsecPerCall <= 0 {
			t.Errorf("script %s of %s: %.2f µs per call", s.Script, s.System, s.UsecPerCall)
		}
	}
	for _, sys := range []string{"taskqueue", "asynq@10ms"} {
		if per[sys] < 2 || per[sys] > 3.5 {
			t.Errorf("%s: %.2f script calls per task in the SLOWLOG pass, want 2 to 3.5", sys, per[sys])
		}
	}
	admin, err := NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if v, err := admin.ConfigGet(t.Context(), "slowlog-log-slower-than").Result(); err != nil || v["slowlog-log-slower-than"] != "10000" {
		t.Errorf("slowlog-log-slower-than is %v (%v) after the run, want the default 10000 back", v, err)
	}
	if len(rep.Checks) != 3 {
		t.Errorf("%d checks, want 3", len(rep.Checks))
	}
	var out bytes.Buffer
	rep.Print(&out)
	for _, want := range []string{"1. ROUND TRIP", "2. THROUGHPUT", "3. REDIS COST", "4. SCRIPTS", "taskqueue ÷ asynq@10ms", "Targets"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
	if t.Failed() {
		t.Log(out.String())
	}
}

// TestTaskIdleKeys checks the key names settle watches: a task queued with
// nobody to run it shows in each system's pending key.
func TestTaskIdleKeys(t *testing.T) {
	ctx := t.Context()
	client, err := NewClient(taskServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	q, err := taskqueue.New(client, taskPrefix)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Submit(ctx, "x", taskName, nil); err != nil {
		t.Fatal(err)
	}
	wantType(ctx, t, client, taskqueueIdleKeys()[0], "zset")

	cl := asynq.NewClientFromRedisClient(client)
	if _, err := cl.EnqueueContext(ctx, asynq.NewTask(taskName, nil), asynq.TaskID("x")); err != nil {
		t.Fatal(err)
	}
	wantType(ctx, t, client, asynqIdleKeys()[0], "list")
}

func wantType(ctx context.Context, t *testing.T, c *redis.Client, key, want string) {
	t.Helper()
	if got, err := c.Type(ctx, key).Result(); err != nil || got != want {
		t.Errorf("TYPE %s = %q, %v; want %q", key, got, err, want)
	}
}

// TestTaskConfigCheck checks that RunTask refuses to flush a server it was
// not allowed to, and other bad settings, before connecting.
func TestTaskConfigCheck(t *testing.T) {
	for name, mod := range map[string]func(*TaskConfig){
		"no flush":     func(c *TaskConfig) { c.FlushAllowed = false },
		"no url":       func(c *TaskConfig) { c.URL = "" },
		"no callers":   func(c *TaskConfig) { c.Callers = nil },
		"many workers": func(c *TaskConfig) { c.Workers = PoolSize + 1 },
		"zero tasks":   func(c *TaskConfig) { c.Tasks = 0 },
	} {
		cfg := tinyTaskConfig("redis://127.0.0.1:1")
		mod(&cfg)
		if _, err := RunTask(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "taskbench") {
			t.Errorf("%s: got %v, want a configuration error", name, err)
		}
	}
	if err := tinyTaskConfig("redis://x").check(); err != nil {
		t.Errorf("tiny configuration: %v", err)
	}
}
