package cli

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// result is the outcome of one Run.
type result struct {
	code           int
	stdout, stderr string
}

// run calls Run with args and returns its exit code and output.
func run(t *testing.T, ctx context.Context, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(ctx, args, &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustContain fails the test when s lacks any of subs.
func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s lacks %q; got:\n%s", what, sub, s)
		}
	}
}

// serverURL starts a private miniredis that expires keys as real time
// passes, like Redis, and returns its URL: Run calls without --redis-url
// would each start a new, empty one.
func serverURL(t *testing.T) string {
	t.Helper()
	m := miniredis.RunT(t)
	m.ClockTTL(true)
	return "redis://" + m.Addr()
}

func TestDemoQuick(t *testing.T) {
	t.Parallel()
	r := run(t, t.Context(), "demo", "--quick")
	if r.code != ExitOK {
		t.Fatalf("demo --quick: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	mustContain(t, "stdout", r.stdout,
		"worker-1 got the lock (fence ",
		"mutual exclusion held: 24/24 increments, fences ",
		" strictly increasing",
		"Refresh -> ErrNotHeld",
		"Release -> ErrNotHeld",
		"-> accepted",
		"-> rejected: stale fence ",
		"still held",
		"Lost() fired",
		"Err() -> ErrNotHeld",
		"client-1 MallocLease -> premium-1 (priority 10, fence ",
		"client-3 MallocLease -> regular-1 (priority  0, fence ",
		"client-7 MallocLease -> ErrNoneAvailable",
		"-> premium-1 again, though premium-2 was first in line",
		"the binding moved",
		"and is still recorded; nobody calls GC.",
		"the malloc reclaimed the lease itself",
		"Free -> ErrNotHeld",
		"HealthCheck: 5 healthy, 1 unhealthy, quarantined for ",
		"5 proxies leased, never regular-1.",
		"-> worker-1 got it ",
		"-> worker-4 got it ",
		"a newcomer's MallocLease -> ErrNoneAvailable",
		"Summary",
		"ok  hand-off: 4 workers in MallocWait were served in arrival order",
		"Part 3: the task queue",
		"photo-1.jpg  done by worker-",
		"photo-3.jpg  done by worker-",
		"3 tasks done in ",
		"Stats -> 2 listeners; Query(photo-4.jpg, WithPolicy(Auto)) -> ran remotely, on worker-",
		"Stats -> 0 listeners; Query(photo-5.jpg, WithPolicy(Auto)) -> ran locally, in the caller's own process",
		"worker-c is killed mid-task",
		"(delivery 2): the caller waited ",
		"Stats(resize) -> 0 pending, 0 delayed, 0 running, 0 dead, 2 listeners",
		"ok  redelivery: a killed listener's task went to worker-",
	)
	if n := strings.Count(r.stdout, "\n  ok  "); n != 12 {
		t.Errorf("summary has %d ok lines, want 12:\n%s", n, r.stdout)
	}
	// The caller showed progress while it waited: of the tasks of step 9,
	// and of photo-6.jpg both before worker-c was killed and after its
	// successor got the task (updates may be coalesced, so no counts).
	step9, _, _ := strings.Cut(r.stdout, "Step 10 of 11")
	if !strings.Contains(step9, "/4\n") {
		t.Errorf("no progress line in step 9:\n%s", r.stdout)
	}
	_, step11, _ := strings.Cut(r.stdout, "Step 11 of 11")
	before, after, _ := strings.Cut(step11, "worker-c is killed mid-task")
	if !strings.Contains(before, "photo-6.jpg  [#---] 1/4\n") {
		t.Errorf("no progress of photo-6.jpg before the kill:\n%s", r.stdout)
	}
	if _, redelivered, ok := strings.Cut(after, "the claim lapsed: worker-"); !ok || !strings.Contains(redelivered, "photo-6.jpg  [") {
		t.Errorf("no progress of photo-6.jpg after its redelivery:\n%s", r.stdout)
	}
	mustContain(t, "stderr", r.stderr, "no --redis-url: using an embedded Redis-compatible server (miniredis) at 127.0.0.1:")
}

// TestDemoTwiceOnOneServer checks that a second run on the same server
// cleans up after the first and reports the fences it really got: all of
// them above those of the first run, for the lock and for the pool.
func TestDemoTwiceOnOneServer(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	var last, lastPool int64
	for i := range 2 {
		r := run(t, t.Context(), "--redis-url", url, "demo", "--quick")
		if r.code != ExitOK {
			t.Fatalf("run %d: exit %d\nstdout:\n%s\nstderr:\n%s", i+1, r.code, r.stdout, r.stderr)
		}
		var first, end int64
		line := field(r.stdout, "  mutual exclusion held: 24/24 increments, fences ")
		if _, err := fmt.Sscanf(line, "%d..%d strictly increasing", &first, &end); err != nil {
			t.Fatalf("run %d: fences line %q: %v", i+1, line, err)
		}
		if first <= last || end <= first {
			t.Fatalf("run %d: fences %d..%d after the previous run's last %d", i+1, first, end, last)
		}
		last = end

		if strings.Contains(r.stdout, "(deleted the proxy pool an earlier run left)") {
			t.Errorf("run %d: the previous run left its pool behind", i+1)
		}
		if strings.Contains(r.stdout, "(deleted the task queue an earlier run left)") {
			t.Errorf("run %d: the previous run left its task queue behind", i+1)
		}
		mustContain(t, fmt.Sprintf("run %d stdout", i+1), r.stdout, "photo-6.jpg  done by worker-", "ok  redelivery: ")
		var pool int64
		line = field(r.stdout, "    client-1 MallocLease -> premium-1 (priority 10, fence ")
		if _, err := fmt.Sscanf(line, "%d)", &pool); err != nil {
			t.Fatalf("run %d: pool fence line %q: %v", i+1, line, err)
		}
		if pool <= lastPool {
			t.Fatalf("run %d: pool fence %d after the previous run's %d", i+1, pool, lastPool)
		}
		lastPool = pool
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"help"}, []string{"Commands:", "lock acquire KEY", "demo [--quick]", "e.g. redis-allocator demo", "--redis-url URL", "Exit status"}},
		{[]string{"-h"}, []string{"Commands:"}},
		{[]string{"--help"}, []string{"Commands:"}},
		{[]string{"help", "lock"}, []string{"lock release KEY TOKEN", "lock unlock KEY"}},
		{[]string{"lock", "help"}, []string{"lock status KEY"}},
		{[]string{"help", "lock", "acquire"}, []string{"usage: redis-allocator lock acquire KEY", "--wait duration", "(default 30s)", "Example:"}},
		{[]string{"lock", "acquire", "-h"}, []string{"usage: redis-allocator lock acquire KEY"}},
		{[]string{"lock", "release", "--help"}, []string{"usage: redis-allocator lock release KEY TOKEN"}},
		{[]string{"demo", "-h"}, []string{"usage: redis-allocator demo [--quick]", "--quick"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := run(t, t.Context(), tt.args...)
			if r.code != ExitOK {
				t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
			}
			mustContain(t, "stdout", r.stdout, tt.want...)
			if strings.Contains(r.stderr, "miniredis") {
				t.Errorf("help started a server; stderr:\n%s", r.stderr)
			}
		})
	}
}

// TestUsageErrors covers command lines that fail before any connection.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command given"},
		{[]string{"frob"}, `unknown command "frob"`},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"lock"}, "lock: missing subcommand"},
		{[]string{"lock", "frob"}, `lock: unknown subcommand "frob"`},
		{[]string{"lock", "acquire"}, "lock acquire: missing KEY"},
		{[]string{"lock", "acquire", "--ttl", "5s"}, "lock acquire: missing KEY"},
		{[]string{"lock", "acquire", "k", "--bogus"}, "usage: redis-allocator lock acquire KEY"},
		{[]string{"lock", "acquire", "k", "--ttl", "soon"}, `invalid value "soon" for flag -ttl`},
		{[]string{"lock", "acquire", "k", "--ttl", "-1s"}, "--ttl must not be negative"},
		{[]string{"lock", "acquire", "k", "--wait", "-1s"}, "--wait must not be negative"},
		{[]string{"lock", "release", "k"}, "lock release: missing TOKEN"},
		{[]string{"lock", "release"}, "lock release: missing KEY TOKEN"},
		{[]string{"lock", "status", "a", "b"}, `lock status: unexpected argument "b"`},
		{[]string{"lock", "set", "k"}, "lock set: missing VALUE"},
		{[]string{"lock", "unlock"}, "lock unlock: missing KEY"},
		{[]string{"demo", "extra"}, `demo: unexpected argument "extra"`},
		{[]string{"help", "nope"}, `help: unknown command "nope"`},
		{[]string{"--redis-url", "foo://x", "lock", "status", "k"}, "bad --redis-url"},
		{[]string{"lock", "status", "k", "--redis-url", "redis://a:1", "--cluster", "b:2"}, "either --redis-url or --cluster"},
		{[]string{"--cluster", " , ", "lock", "status", "k"}, "--cluster needs at least one host:port"},
		{[]string{"--prefix", "", "lock", "status", "k"}, "--prefix must not be empty"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := run(t, t.Context(), tt.args...)
			if r.code != ExitUsage {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", r.code, ExitUsage, r.stdout, r.stderr)
			}
			mustContain(t, "stderr", r.stderr, tt.want)
			if r.stdout != "" {
				t.Errorf("usage error wrote to stdout:\n%s", r.stdout)
			}
		})
	}
}

func TestInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := run(t, ctx, "demo", "--quick")
	if r.code != ExitFailure {
		t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, ExitFailure, r.stderr)
	}
	mustContain(t, "stderr", r.stderr, "interrupted")
}

// TestLockCommands drives the lock commands through one lock's life on a
// shared server.
func TestLockCommands(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	ctx := t.Context()
	lockCmd := func(args ...string) result {
		t.Helper()
		return run(t, ctx, append([]string{"--redis-url", url, "lock"}, args...)...)
	}
	expect := func(r result, code int, stdout ...string) {
		t.Helper()
		if r.code != code {
			t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
		}
		mustContain(t, "stdout", r.stdout, stdout...)
	}

	r := lockCmd("acquire", "k", "--ttl", "5s")
	expect(r, ExitOK, `acquired "k" (ttl 5s)`, "token: ", "fence: ")
	token, fence := field(r.stdout, "token:"), field(r.stdout, "fence:")
	if token == "" {
		t.Fatalf("no token in output:\n%s", r.stdout)
	}

	r = lockCmd("acquire", "k", "--wait", "0")
	expect(r, ExitFailure)
	mustContain(t, "stderr", r.stderr, "lock: not obtained", token)

	start := time.Now()
	expect(lockCmd("acquire", "k", "--wait", "150ms"), ExitFailure)
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Errorf("acquire --wait 150ms gave up after %v", waited)
	}

	r = lockCmd("status", "k")
	expect(r, ExitOK, "status: locked", "value:  "+token, "ttl:    ")
	expect(lockCmd("status", "k", "--timeout", "1s"), ExitOK, "status: unavailable")

	r = lockCmd("release", "k", "not-the-token")
	expect(r, ExitFailure)
	mustContain(t, "stderr", r.stderr, "held by another owner")
	expect(lockCmd("release", "k", token), ExitOK, `released "k"`)
	expect(lockCmd("status", "k"), ExitOK, "status: free")
	expect(lockCmd("release", "k", token), ExitOK, "already free")

	// A fresh acquisition gets a larger fence.
	r = lockCmd("acquire", "k", "--wait", "0")
	expect(r, ExitOK, "fence: ")
	if next := field(r.stdout, "fence:"); len(next) < len(fence) || (len(next) == len(fence) && next <= fence) {
		t.Errorf("fence %s after fence %s", next, fence)
	}
	expect(lockCmd("unlock", "k"), ExitOK, `unlocked "k"`)
	expect(lockCmd("unlock", "k"), ExitOK, "was not locked")

	// The parity API: SET NX with the caller's value.
	expect(lockCmd("set", "gpu", "job-1", "--ttl", "0"), ExitOK, "taken")
	expect(lockCmd("set", "gpu", "job-2"), ExitFailure, `held by other: "job-1"`)
	expect(lockCmd("status", "gpu"), ExitOK, "status: permanent", "value:  job-1", "no expiry")
	expect(lockCmd("unlock", "gpu"), ExitOK, "unlocked")

	// Global flags after the command name; the prefix separates namespaces.
	expect(lockCmd("set", "p", "v", "--prefix", "other"), ExitOK, "taken")
	expect(lockCmd("status", "p"), ExitOK, "status: free")
	expect(lockCmd("status", "--prefix", "other", "p"), ExitOK, "status: locked", "(Redis key other|lock:p)")

	// A lock with a short TTL expires on its own.
	expect(lockCmd("acquire", "short", "--ttl", "50ms"), ExitOK)
	time.Sleep(100 * time.Millisecond)
	expect(lockCmd("status", "short"), ExitOK, "status: free")
}

// TestAcquireWaitsForRelease checks that a waiting acquire takes the lock
// once its holder releases it.
func TestAcquireWaitsForRelease(t *testing.T) {
	t.Parallel()
	url := serverURL(t)
	ctx := t.Context()
	r := run(t, ctx, "--redis-url", url, "lock", "acquire", "w", "--ttl", "1m")
	token := field(r.stdout, "token:")
	if r.code != ExitOK || token == "" {
		t.Fatalf("acquire: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := Run(ctx, []string{"--redis-url", url, "lock", "acquire", "w", "--wait", "10s"}, &out, &errb)
		done <- result{code, out.String(), errb.String()}
	}()
	time.Sleep(100 * time.Millisecond)
	if r := run(t, ctx, "--redis-url", url, "lock", "release", "w", token); r.code != ExitOK {
		t.Fatalf("release: exit %d\n%s", r.code, r.stderr)
	}
	select {
	case r := <-done:
		if r.code != ExitOK {
			t.Fatalf("waiting acquire: exit %d\n%s", r.code, r.stderr)
		}
		mustContain(t, "stdout", r.stdout, `acquired "w"`)
	case <-time.After(5 * time.Second):
		t.Fatal("waiting acquire did not return 5s after the release")
	}
}

// field returns the text after the line prefix name in out.
func field(out, name string) string {
	for line := range strings.SplitSeq(out, "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
