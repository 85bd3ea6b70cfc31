package lock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

// The contender processes of TestMutualExclusionAcrossProcesses are this
// test binary started again with these variables set.
const (
	helperEnv      = "LOCK_TEST_CONTENDER" // "single", "batched" or "cluster"
	helperAddrs    = "LOCK_TEST_ADDRS"     // comma-separated addresses
	helperNS       = "LOCK_TEST_NAMESPACE"
	helperDir      = "LOCK_TEST_DIR" // holds the shared state files
	helperRounds   = "LOCK_TEST_ROUNDS"
	contenders     = 50 // goroutines per process
	contenderLoops = 4  // acquisitions per goroutine
)

// TestMutualExclusionAcrossProcesses runs two OS processes with 50
// goroutines each, all acquiring one key. Inside the lock each holder does
// an unprotected read-modify-write of a shared file (a counter and the last
// fencing token) and creates an exclusive marker file; any overlap of two
// holders shows up as a lost update, an existing marker, or a fence that is
// not larger than the previous holder's.
func TestMutualExclusionAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	run := func(t *testing.T, mode string, addrs []string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "state"), []byte("0 0"), 0o600); err != nil {
			t.Fatal(err)
		}
		ns := redistest.Namespace(t)
		var (
			wg   sync.WaitGroup
			outs [2]bytes.Buffer
			errs [2]error
		)
		for i := range 2 {
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(),
				helperEnv+"="+mode,
				helperAddrs+"="+strings.Join(addrs, ","),
				helperNS+"="+ns,
				helperDir+"="+dir,
				helperRounds+"="+strconv.Itoa(contenderLoops),
			)
			cmd.Stdout, cmd.Stderr = &outs[i], &outs[i]
			wg.Go(func() { errs[i] = cmd.Run() })
		}
		wg.Wait()
		for i := range 2 {
			if errs[i] != nil {
				t.Errorf("contender %d: %v\n%s", i, errs[i], outs[i].String())
			}
		}
		state, err := os.ReadFile(filepath.Join(dir, "state"))
		if err != nil {
			t.Fatal(err)
		}
		var count, fence int64
		if _, err := fmt.Sscan(string(state), &count, &fence); err != nil {
			t.Fatalf("state %q: %v", state, err)
		}
		if want := int64(2 * contenders * contenderLoops); count != want {
			t.Fatalf("counter %d after %d protected increments: mutual exclusion broken", count, want)
		}
		t.Logf("%s: %d acquisitions across 2 processes, last fence %d", mode, count, fence)
	}
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		run(t, "single", []string{redistest.Addr(t)})
	})
	t.Run("batched", func(t *testing.T) {
		t.Parallel()
		run(t, "batched", []string{redistest.Addr(t)})
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		redistest.StartCluster(t)
		run(t, "cluster", redistest.ClusterAddrs(t))
	})
}

// runContender is the body of a contender process. It returns the exit code.
func runContender() int {
	addrs := strings.Split(os.Getenv(helperAddrs), ",")
	var c redis.UniversalClient
	if os.Getenv(helperEnv) == "cluster" {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: 128})
	} else {
		c = redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: 128})
	}
	defer c.Close()
	opts := []lock.Option{lock.WithBatching(0)} // "single"; the cluster batches by default
	switch os.Getenv(helperEnv) {
	case "batched":
		opts = []lock.Option{lock.WithBatching(1)}
	case "cluster":
		opts = nil
	}
	l, err := lock.New(c, os.Getenv(helperNS), opts...)
	if err != nil {
		fmt.Println(err)
		return 2
	}
	rounds, _ := strconv.Atoi(os.Getenv(helperRounds))
	dir := os.Getenv(helperDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failures []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for g := range contenders {
		opts := []lock.AcquireOption{lock.WithRetry(lock.ExponentialBackoff(time.Millisecond, 20*time.Millisecond))}
		if g%2 == 0 {
			opts = append(opts, lock.WithReleaseNotify())
		}
		wg.Go(func() {
			for range rounds {
				h, err := l.Acquire(ctx, "contended", 10*time.Second, opts...)
				if err != nil {
					fail("acquire: %v", err)
					return
				}
				if err := criticalSection(dir, h.Fence()); err != nil {
					fail("%v", err)
				}
				if err := h.Release(ctx); err != nil {
					fail("release: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		fmt.Println(strings.Join(failures, "\n"))
		return 1
	}
	return 0
}

// criticalSection must only ever run in one holder at a time.
func criticalSection(dir string, fence int64) error {
	marker := filepath.Join(dir, "holder")
	f, err := os.OpenFile(marker, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("two holders at once (fence %d)", fence)
		}
		return err
	}
	f.Close()
	defer os.Remove(marker)

	path := filepath.Join(dir, "state")
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var count, last int64
	if _, err := fmt.Sscan(string(b), &count, &last); err != nil {
		return fmt.Errorf("state %q: %w", b, err)
	}
	if fence <= last {
		return fmt.Errorf("fence %d not above the previous holder's %d", fence, last)
	}
	time.Sleep(100 * time.Microsecond) // widen the window for a lost update
	return os.WriteFile(path, fmt.Appendf(nil, "%d %d", count+1, fence), 0o600)
}
