package allocator_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/allocator"
	"github.com/redisallocator/redisallocator/internal/redistest"
)

// Environment of a hammer process (the test binary run again).
const (
	helperEnv   = "ALLOCATOR_TEST_HAMMER" // "single" or "cluster"
	helperAddrs = "ALLOCATOR_TEST_ADDRS"
	helperNS    = "ALLOCATOR_TEST_NS"
	helperOut   = "ALLOCATOR_TEST_OUT"
	helperFor   = "ALLOCATOR_TEST_FOR"
)

// Shape of the hammer: 200 goroutines in each of 2 processes on a pool of
// 10, half of them with MallocWait and half with MallocLease.
const (
	hammerProcs      = 2
	hammerGoroutines = 200
	hammerPool       = 10
)

// hold is one holder's interval, in wall-clock ns (processes on one host
// share the clock).
type hold struct {
	key        string
	fence      int64
	start, end int64
}

// TestExclusiveAcrossProcesses hammers a pool of 10 from 2 processes of 200
// goroutines each; every holder records the interval from its malloc's
// return to its free's call (or its validity's end), and no two intervals
// of one resource may overlap, and fences must grow in time order.
func TestExclusiveAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	run := func(t *testing.T, mode string, addrs []string) {
		ctx := context.Background()
		ns := redistest.Namespace(t)
		var c redis.UniversalClient
		if mode == "cluster" {
			c = redistest.StartCluster(t)
		} else {
			c = redistest.Client(t)
		}
		a, err := allocator.New(c, ns)
		ok(t, err)
		defer a.Close()
		ok(t, errOnly(a.Extend(ctx, names("res", hammerPool))))
		dir := t.TempDir()
		var wg sync.WaitGroup
		outs := make([]bytes.Buffer, hammerProcs)
		errs := make([]error, hammerProcs)
		for i := range hammerProcs {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(),
				helperEnv+"="+mode, helperAddrs+"="+strings.Join(addrs, ","), helperNS+"="+ns,
				helperOut+"="+filepath.Join(dir, strconv.Itoa(i)), helperFor+"="+(3*time.Second).String(),
			)
			cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
			wg.Go(func() { errs[i] = cmd.Run() })
		}
		wg.Wait()
		var holds []hold
		for i := range hammerProcs {
			if errs[i] != nil {
				t.Fatalf("process %d: %v\n%s", i, errs[i], outs[i].String())
			}
			holds = append(holds, readHolds(t, filepath.Join(dir, strconv.Itoa(i)))...)
		}
		checkHolds(t, holds)
		s := checkInvariants(t, a)
		if len(s.Leases) != 0 || len(s.Free) != hammerPool || len(s.Waiters) != 0 {
			t.Fatalf("after the hammer: %d leases, %d free, %d waiters", len(s.Leases), len(s.Free), len(s.Waiters))
		}
		t.Logf("%s: %d leases by %d goroutines in %d processes, no overlap", mode, len(holds), hammerGoroutines, hammerProcs)
	}
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		run(t, "single", []string{redistest.Addr(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		redistest.StartCluster(t)
		run(t, "cluster", redistest.ClusterAddrs(t))
	})
}

func readHolds(t *testing.T, path string) []hold {
	f, err := os.Open(path)
	ok(t, err)
	defer f.Close()
	var out []hold
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var h hold
		if _, err := fmt.Sscan(sc.Text(), &h.key, &h.fence, &h.start, &h.end); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, h)
	}
	ok(t, sc.Err())
	return out
}

// checkHolds checks that the intervals of each resource are disjoint and
// that fences grow with time (intervals.check).
func checkHolds(t *testing.T, holds []hold) {
	t.Helper()
	if len(holds) < 100 {
		t.Fatalf("only %d leases recorded", len(holds))
	}
	iv := &intervals{}
	for _, h := range holds {
		iv.add(interval{key: h.key, fence: h.fence, start: time.Unix(0, h.start), end: time.Unix(0, h.end)})
	}
	if ps := iv.check(); len(ps) > 0 {
		t.Fatalf("%d problems, first: %s", len(ps), ps[0])
	}
}

// runHammer is the body of a hammer process; it returns the exit code.
func runHammer() int {
	addrs := strings.Split(os.Getenv(helperAddrs), ",")
	var c redis.UniversalClient
	if os.Getenv(helperEnv) == "cluster" {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 64})
	} else {
		c = redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: 64})
	}
	defer c.Close()
	a, err := allocator.New(c, os.Getenv(helperNS))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer a.Close()
	d, _ := time.ParseDuration(os.Getenv(helperFor))
	stop := time.Now().Add(d)
	var (
		mu    sync.Mutex
		holds []hold
		fails atomic.Int64
		first atomic.Value
	)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range hammerGoroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), uint64(os.Getpid())))
			for time.Now().Before(stop) {
				var l *allocator.Lease
				var err error
				if g%2 == 0 {
					wctx, cancel := context.WithTimeout(ctx, time.Duration(50+rng.IntN(500))*time.Millisecond)
					l, err = a.MallocWait(wctx, allocator.WithLeaseTTL(5*time.Second))
					cancel()
				} else {
					l, err = a.MallocLease(ctx, allocator.WithLeaseTTL(5*time.Second))
				}
				if err != nil {
					if !errors.Is(err, allocator.ErrNoneAvailable) && !errors.Is(err, context.DeadlineExceeded) {
						fails.Add(1)
						first.CompareAndSwap(nil, err.Error())
					}
					time.Sleep(time.Millisecond)
					continue
				}
				start := time.Now().UnixNano()
				time.Sleep(time.Duration(rng.IntN(1500)) * time.Microsecond)
				end := time.Now().UnixNano()
				if l.Err() != nil {
					end = min(end, l.ValidUntil().UnixNano())
				}
				if err := l.Free(ctx); err != nil {
					fails.Add(1)
					first.CompareAndSwap(nil, err.Error())
				}
				mu.Lock()
				holds = append(holds, hold{key: l.Key(), fence: l.Fence(), start: start, end: end})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if n := fails.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "%d operations failed; first: %v\n", n, first.Load())
		return 1
	}
	var b strings.Builder
	for _, h := range holds {
		fmt.Fprintf(&b, "%q %d %d %d\n", h.key, h.fence, h.start, h.end)
	}
	if err := os.WriteFile(os.Getenv(helperOut), []byte(b.String()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
