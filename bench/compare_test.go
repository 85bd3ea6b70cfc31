package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testEnv is shared by the tests and benchmarks: one client on one server,
// a private redis-server unless LOCKBENCH_REDIS_URL names one. testURL is
// that server's URL.
var (
	testEnv *env
	testURL string
)

func TestMain(m *testing.M) {
	// TestHandoffSmoke starts this test binary again as the child processes
	// of its runs.
	if IsHandoffChild() {
		if err := RunHandoffChild(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "handoff child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	ctx := context.Background()
	url := os.Getenv("LOCKBENCH_REDIS_URL")
	if url == "" {
		srv, err := StartRedisServer(ctx, "redis-server")
		if err != nil {
			fmt.Fprintln(os.Stderr, "start redis-server:", err)
			return 1
		}
		defer srv.Stop()
		url = "redis://" + srv.Addr
	}
	testURL = url
	client, err := NewClient(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer client.Close()
	if testEnv, err = newEnv(client); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() {
		if err := testEnv.cleanup(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
	}()
	return m.Run()
}

// BenchmarkCompare runs the four cases of lockbench as Go benchmarks:
// BenchmarkCompare/<case>/goroutines=<n>. One op is one EVALSHA for the
// floor and one acquire plus one release for the lock cases. Besides ns/op it
// reports the Redis execution time (commandstats) and the Redis process CPU
// per op.
func BenchmarkCompare(b *testing.B) {
	for _, im := range impls {
		b.Run(im.id, func(b *testing.B) {
			for _, n := range []int{1, 50} {
				b.Run("goroutines="+strconv.Itoa(n), func(b *testing.B) { benchCase(b, im, n) })
			}
		})
	}
}

var warmed sync.Map // benchmark name → true once warmed up

func benchCase(b *testing.B, im impl, goroutines int) {
	ctx := b.Context()
	op := im.op(testEnv)
	if _, done := warmed.LoadOrStore(b.Name(), true); !done {
		if _, err := runOps(ctx, op, goroutines, 0, 2*numKeys); err != nil {
			b.Fatal(err)
		}
	}
	w, err := beginStats(ctx, testEnv.client)
	if err != nil {
		b.Fatal(err)
	}
	var seq, busy atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for {
				k := seq.Add(1) - 1
				if k >= int64(b.N) {
					return
				}
				bz, err := op(ctx, int(k%numKeys))
				if err != nil {
					b.Error(err)
					return
				}
				if bz {
					busy.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st, cpu, err := w.end(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.usecOf(im.sent))/float64(b.N), "redis-us/op")
	b.ReportMetric(cpu*1e6/float64(b.N), "redis-cpu-us/op")
	if n := busy.Load(); n > 0 {
		b.ReportMetric(float64(n), "busy")
	}
}

// TestCases runs every case briefly and checks that it sends what the
// tables assume: one EVALSHA per floor op, two commands per lock op, no
// lock ever found taken.
func TestCases(t *testing.T) {
	want := map[string]float64{"floor": 1, "redisallocator": 2, "bsm-redislock": 2, "redisallocator-unbatched": 2, "redisallocator-lockunlock": 2}
	for _, im := range impls {
		for _, n := range []int{1, 8} {
			t.Run(im.id+"/goroutines="+strconv.Itoa(n), func(t *testing.T) {
				ctx := t.Context()
				op := im.op(testEnv)
				if _, err := runOps(ctx, op, n, 0, 50); err != nil { // loads the scripts
					t.Fatal(err)
				}
				w, err := beginStats(ctx, testEnv.client)
				if err != nil {
					t.Fatal(err)
				}
				const ops = 500
				res, err := runOps(ctx, op, n, 0, ops)
				if err != nil {
					t.Fatal(err)
				}
				st, _, err := w.end(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res.Ops != ops || res.Busy != 0 {
					t.Fatalf("ops %d busy %d, want %d and 0", res.Ops, res.Busy, ops)
				}
				var calls int64
				for _, c := range im.sent {
					calls += st[c].Calls
				}
				if got := float64(calls) / ops; got != want[im.id] {
					t.Errorf("%v calls per op = %v, want %v (stats %v)", im.sent, got, want[im.id], st)
				}
				if res.P50 <= 0 || res.P99 < res.P50 || res.OpsPerSec <= 0 {
					t.Errorf("implausible result %+v", res)
				}
			})
		}
	}
}

func TestRunOpsDuration(t *testing.T) {
	start := time.Now()
	res, err := runOps(t.Context(), implByID("floor").op(testEnv), 4, 100*time.Millisecond, 0)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 100*time.Millisecond || el > 5*time.Second {
		t.Errorf("run took %v for a 100ms duration", el)
	}
	if res.Ops == 0 {
		t.Error("no ops")
	}
}

func TestParseCommandStats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=75,usec_per_call=7.50,rejected_calls=0,failed_calls=0\r\n" +
		"cmdstat_config|resetstat:calls=1,usec=3,usec_per_call=3.00,rejected_calls=0,failed_calls=0\r\n"
	st, err := parseCommandStats(info)
	if err != nil {
		t.Fatal(err)
	}
	if got := st["evalsha"]; got.Calls != 10 || got.Usec != 75 || got.UsecPerCall() != 7.5 {
		t.Errorf("evalsha = %+v", got)
	}
	if _, ok := st["config|resetstat"]; !ok {
		t.Error("config|resetstat missing")
	}
	if names := st.workNames(); len(names) != 1 || names[0] != "evalsha" {
		t.Errorf("workNames = %v", names)
	}
	if _, err := parseCommandStats("cmdstat_get:calls=x,usec=1"); err == nil {
		t.Error("bad number accepted")
	}
}

func TestMedianPercentile(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]time.Duration{4, 1, 3, 2}); m != 2 { // (2+3)/2 truncated
		t.Errorf("median even = %v", m)
	}
	s := make([]time.Duration, 100)
	for i := range s {
		s[i] = time.Duration(i + 1)
	}
	if p := percentile(s, 0.99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
	if p := percentile(s, 0.5); p != 50 {
		t.Errorf("p50 = %v", p)
	}
}
