package bench

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// tinyAllocConfig is a configuration of RunAlloc that takes a few seconds.
func tinyAllocConfig() AllocConfig {
	return AllocConfig{
		Duration:     50 * time.Millisecond,
		Rounds:       2,
		Goroutines:   []int{1, 4},
		PoolSizes:    []int{10, 200},
		FillChunk:    64,
		ScriptRounds: 1,
		ScriptLeases: 50,
		Waiters:      []int{1, 3},
		WaitDuration: 150 * time.Millisecond,
		WaitWarmup:   20 * time.Millisecond,
		WaitRounds:   2,
		Hold:         time.Millisecond,
		GCPools:      []int{20, 200},
		GCExpired:    []int{5, 20},
		GCRounds:     2,
		MemMembers:   500,
		MemNameLen:   16,
		Server:       "test server",
	}
}

// TestRunAllocTiny runs every part of allocbench on tiny pools and checks
// that each produced plausible figures, that the tables print and that
// every target got its line.
func TestRunAllocTiny(t *testing.T) {
	cfg := tinyAllocConfig()
	var progress bytes.Buffer
	cfg.Progress = &progress
	rep, err := RunAlloc(t.Context(), testEnv.client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// 2 floors + 2 pools × 2 batching modes, at 2 goroutine counts.
	if got := len(rep.Pairs); got != 2*(2+2*2) {
		t.Fatalf("%d pair results, want 12", got)
	}
	for _, c := range rep.Pairs {
		if len(c.Runs) != cfg.Rounds || c.OpsPerSec <= 0 || c.Busy != 0 || c.P99 < c.P50 {
			t.Errorf("%s/%d: implausible %+v", c.Impl, c.Goroutines, c)
		}
		want := 2.0
		if c.Impl == floorID || c.Impl == floorArgsID {
			want = 1
		}
		if got := float64(c.Commands.scriptCalls()) / float64(c.Ops); got != want {
			t.Errorf("%s/%d: %.3f script calls per op, want %v", c.Impl, c.Goroutines, got, want)
		}
	}
	if len(rep.VsFloor) != 2*5 || len(rep.Growth) != 2*2 {
		t.Errorf("%d floor ratios, %d growth ratios; want 10 and 4", len(rep.VsFloor), len(rep.Growth))
	}
	if len(rep.Scripts) != 2*2 {
		t.Fatalf("%d script costs, want 4", len(rep.Scripts))
	}
	for _, s := range rep.Scripts {
		// A pool of 10 repeats passes of 10 leases: 5 × 10 = 50 calls.
		if s.Calls != int64(cfg.ScriptRounds*cfg.ScriptLeases) {
			t.Errorf("%s on %d: %d calls, want %d", s.Script, s.Pool, s.Calls, cfg.ScriptLeases)
		}
		if s.UsecPerCall <= 0 || s.Commands["zadd"].Calls == 0 {
			t.Errorf("%s on %d: implausible %+v", s.Script, s.Pool, s)
		}
	}
	if len(rep.Wait) != 2 {
		t.Fatalf("%d wait cases, want 2", len(rep.Wait))
	}
	for _, w := range rep.Wait {
		if w.Handoffs == 0 || w.WakeP50 <= 0 || w.WakeP99 < w.WakeP50 || w.Overlaps != 0 || w.RedisUsecPerHandoff <= 0 {
			t.Errorf("%d waiters: implausible %+v", w.Waiters, w)
		}
		if w.Commands["publish"].Calls == 0 {
			t.Errorf("%d waiters: no hand-off was announced over pub/sub", w.Waiters)
		}
	}
	if rep.Wait[1].CPURatio <= 0 || rep.Wait[1].UsecRatio <= 0 {
		t.Errorf("no hand-off cost ratio: %+v", rep.Wait[1])
	}
	if len(rep.GC) != 2*3 || len(rep.GCWarm) != 2 {
		t.Fatalf("%d GC cases and %d warm ones, want 6 and 2", len(rep.GC), len(rep.GCWarm))
	}
	for _, c := range rep.GC {
		for _, r := range c.Runs {
			if r.Reclaimed != c.Expired || r.Usec <= 0 {
				t.Errorf("GC pool %d, %d expired: run %+v", c.Pool, c.Expired, r)
			}
		}
	}
	if m := rep.Memory; m.BytesPerMember <= 0 || len(m.Keys) == 0 {
		t.Errorf("memory: %+v", m)
	}
	if len(rep.Fills) != 3 { // pools of 10, 200 and 20
		t.Errorf("fills: %+v", rep.Fills)
	}

	var out bytes.Buffer
	rep.Print(&out)
	text := out.String()
	for _, want := range []string{
		"1. MALLOC + FREE PAIRS", "2. SCRIPTS MEASURED ALONE", "3. MALLOCWAIT HAND-OFF", "4. GC", "5. MEMORY", "TARGETS",
		"malloc.lua (MallocLease)", "free.lua (Lease.Free)", "goroutines=4",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// One line per target: 8 round-trip lines, 4 at 1 goroutine, 4 growth
	// lines, 2 script sums, 2 wake-ups, 2 hand-off costs, 3 GC, 1 memory
	// (no 50-goroutine line: the tiny run has none).
	if got := len(rep.Checks); got != 8+4+4+2+2+2+3+1 {
		t.Errorf("%d checks, want 26:\n%s", got, text)
	}
	if n := strings.Count(text, "  PASS  ") + strings.Count(text, "  MISS  "); n != len(rep.Checks) {
		t.Errorf("%d PASS/MISS lines for %d checks", n, len(rep.Checks))
	}
	if progress.Len() == 0 {
		t.Error("no progress written")
	}

	// Every key of the run is gone.
	keys, err := testEnv.client.Keys(t.Context(), "*allocbench-*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) > 0 {
		t.Errorf("keys left behind: %v", keys[:min(len(keys), 10)])
	}
}

func TestAllocConfigCheck(t *testing.T) {
	if err := DefaultAllocConfig().check(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mut := range map[string]func(*AllocConfig){
		"no goroutines":      func(c *AllocConfig) { c.Goroutines = nil },
		"too many":           func(c *AllocConfig) { c.Goroutines = []int{PoolSize + 1} },
		"expired > pool":     func(c *AllocConfig) { c.GCPools, c.GCExpired = []int{10}, []int{11} },
		"zero rounds":        func(c *AllocConfig) { c.WaitRounds = 0 },
		"short member names": func(c *AllocConfig) { c.MemNameLen = 4 },
		"no duration":        func(c *AllocConfig) { c.Duration = 0 },
	} {
		c := DefaultAllocConfig()
		mut(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int]string{1: "1", 100: "100", 1000: "1 000", 10_000: "10 000", 1_000_000: "1 000 000"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
