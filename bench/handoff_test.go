package bench

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestHandoffSmoke runs a very short hand-off benchmark, in this process and
// split over two child processes (this test binary started again), and
// checks that every case handed the lock on, that the stats were read and
// that mutual exclusion held.
func TestHandoffSmoke(t *testing.T) {
	ctx := t.Context()
	rep, err := RunHandoff(ctx, HandoffConfig{
		URL:        testURL,
		Duration:   200 * time.Millisecond,
		Warmup:     50 * time.Millisecond,
		Goroutines: 2,
		Processes:  []int{1, 2},
		Rounds:     1,
		Hold:       time.Millisecond,
		Server:     "test server",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	if got, want := len(rep.Cases), 2*len(handoffCases); got != want {
		t.Fatalf("%d case results, want %d", got, want)
	}
	for _, c := range rep.Cases {
		if len(c.Runs) != 1 {
			t.Fatalf("%s/%d: %d runs, want 1", c.Case, c.Processes, len(c.Runs))
		}
		r := c.Runs[0]
		name := fmt.Sprintf("%s/processes=%d", c.Case, c.Processes)
		if r.Acquisitions <= 0 || r.HandoffsPerSec <= 0 || r.WaitP50 <= 0 || r.WaitP99 < r.WaitP50 || r.Wall < 200*time.Millisecond {
			t.Errorf("%s: implausible run %+v", name, r)
		}
		if r.MaxHolders != 1 || r.exclusionErrors() != 0 {
			t.Errorf("%s: max holders %d, violations %d, overlaps %d, fence disorder %d",
				name, r.MaxHolders, r.Violations, r.Overlaps, r.FenceDisorder)
		}
		if r.MinPerGoroutine+r.MaxPerGoroutine == 0 || r.MinPerGoroutine > r.MaxPerGoroutine {
			t.Errorf("%s: per goroutine min %d max %d", name, r.MinPerGoroutine, r.MaxPerGoroutine)
		}
		// Every acquisition sends at least its release script (a key handed
		// over by a release needs no acquire script).
		if scripts := r.Commands["evalsha"].Calls + r.Commands["eval"].Calls; scripts < r.Acquisitions {
			t.Errorf("%s: %d script calls for %d acquisitions (stats %v)", name, scripts, r.Acquisitions, r.Commands)
		}
		// The clients' hooks see the same scripts the server ran.
		if sent, ran := r.Sent["evalsha"]+r.Sent["eval"], r.Commands["evalsha"].Calls+r.Commands["eval"].Calls; sent != ran {
			t.Errorf("%s: clients sent %d EVALSHA/EVAL, server ran %d", name, sent, ran)
		}
		if r.SentPerHandoff < 1 || r.CommandsPerHandoff < r.SentPerHandoff || r.RedisCPUSeconds < 0 {
			t.Errorf("%s: sent %.2f, commands %.2f per hand-off, Redis CPU %v s", name, r.SentPerHandoff, r.CommandsPerHandoff, r.RedisCPUSeconds)
		}
		for _, h := range harnessCommands {
			if _, ok := r.Commands[h]; ok {
				t.Errorf("%s: harness command %s counted", name, h)
			}
		}
	}
	if len(rep.Ratios) != 2*2*(len(handoffCases)-1) {
		t.Errorf("%d ratios", len(rep.Ratios))
	}

	var out strings.Builder
	rep.Print(&out)
	if !strings.Contains(out.String(), "Mutual exclusion held") {
		t.Errorf("report lacks the mutual exclusion verdict:\n%s", out.String())
	}
	left, err := testEnv.client.Keys(ctx, "*"+rep.Prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("keys left behind: %v", left)
	}
}

// TestContendDetectsViolations gives contend a "lock" that never excludes
// anybody and checks that the sanity checks notice.
func TestContendDetectsViolations(t *testing.T) {
	var fence atomic.Int64
	noLock := func(context.Context, string) (int64, func(context.Context) error, error) {
		return fence.Add(1), func(context.Context) error { return nil }, nil
	}
	res, err := contend(t.Context(), noLock, "k", 4, 50*time.Millisecond, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.Violations == 0 || res.MaxHolders < 2 {
		t.Errorf("violations %d, max holders %d; want some and ≥ 2", res.Violations, res.MaxHolders)
	}
	run, err := summarizeRun([]workerResult{res}, false, CmdStats{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if run.Overlaps == 0 || run.exclusionErrors() == 0 {
		t.Errorf("overlaps %d, exclusion errors %d; want some", run.Overlaps, run.exclusionErrors())
	}
}

func TestCheckExclusion(t *testing.T) {
	spans := []holdSpan{
		{From: 30, To: 40, Fence: 3, Holder: 1},
		{From: 10, To: 20, Fence: 1, Holder: 0},
		{From: 21, To: 29, Fence: 2, Holder: 0},
	}
	if o, d, r := checkExclusion(spans, true); o != 0 || d != 0 || r != 1 {
		t.Errorf("disjoint spans: overlaps %d, disorder %d, regrabs %d; want 0, 0, 1", o, d, r)
	}
	spans = []holdSpan{
		{From: 10, To: 50, Fence: 2, Holder: 0},
		{From: 20, To: 30, Fence: 1, Holder: 1}, // inside the first, fence lower
		{From: 40, To: 60, Fence: 3, Holder: 2}, // still inside the first
		{From: 61, To: 70, Fence: 4, Holder: 3},
	}
	if o, d, _ := checkExclusion(spans, true); o != 2 || d != 1 {
		t.Errorf("overlapping spans: overlaps %d, disorder %d; want 2 and 1", o, d)
	}
	if _, d, _ := checkExclusion(spans, false); d != 0 {
		t.Errorf("unfenced spans: disorder %d, want 0", d)
	}
}

func TestStatName(t *testing.T) {
	ctx := context.Background()
	for cmd, want := range map[redis.Cmder]string{
		redis.NewCmd(ctx, "EVALSHA", "abc", 0):                 "evalsha",
		redis.NewStatusCmd(ctx, "client", "setinfo", "x", "y"): "client|setinfo",
		redis.NewStatusCmd(ctx, "CONFIG", "RESETSTAT"):         "config|resetstat",
		redis.NewStringCmd(ctx, "get", "client"):               "get",
	} {
		if got := statName(cmd); got != want {
			t.Errorf("statName(%v) = %q, want %q", cmd.Args(), got, want)
		}
	}
}

func TestRatioQuartiles(t *testing.T) {
	m, q := ratioQuartiles([]float64{2, 3, 8, 5}, []float64{1, 1, 2, 1})
	if m != 3.5 || q != [2]float64{3, 5} { // ratios 2 3 4 5
		t.Errorf("median %v quartiles %v", m, q)
	}
	if got := alternate([]int{1, 2, 3}, 1); got[0] != 3 || got[2] != 1 {
		t.Errorf("alternate odd round = %v", got)
	}
}
