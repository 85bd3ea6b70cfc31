// Package redistest starts real redis-server processes on loopback for tests.
//
// A test binary shares one lazily started standalone server (see [Client],
// [Addr]) and one lazily started three-master Redis Cluster (see
// [StartCluster]). Tests isolate their keys with [Namespace], whose keys are
// deleted when the test ends. Tests that need to restart, reconfigure or break
// a server start a private one with [Server].
//
// Packages using this harness should stop the shared servers when their tests
// end:
//
//	func TestMain(m *testing.M) { redistest.Main(m) }
//
// On Linux every server is also started with a parent-death signal, so servers
// do not outlive a test binary that is killed or that does not use [Main].
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client options shared by every client this package creates.
const (
	dialTimeout  = 5 * time.Second
	ioTimeout    = 5 * time.Second
	poolSize     = 100
	cleanupLimit = 10 * time.Second
)

// errNotFound is reported when redis-server is not on PATH.
var errNotFound = errors.New("redis-server not found: run make test (it installs it) or apt-get install redis-server")

// errStopped is reported when a shared server is requested after Main stopped them.
var errStopped = errors.New("redistest: shared servers were already stopped by redistest.Main")

// lazy holds a value that is started at most once per test binary and stopped by Main.
type lazy[T any] struct {
	mu      sync.Mutex
	started bool // start was attempted (its outcome is sticky)
	closed  bool // stopped by Main
	val     *T
	err     error
	ready   atomic.Pointer[T] // val once started successfully; read without blocking by cleanups
}

// get returns the value, calling start on first use.
func (l *lazy[T]) get(start func() (*T, error)) (*T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errStopped
	}
	if !l.started {
		l.started = true
		l.val, l.err = start()
		if l.err == nil {
			l.ready.Store(l.val)
		}
	}
	return l.val, l.err
}

// peek returns the value if it has been started successfully, without starting it.
func (l *lazy[T]) peek() *T { return l.ready.Load() }

// close stops the value (if it was started) and prevents later starts.
func (l *lazy[T]) close(stop func(*T) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.ready.Store(nil)
	if l.started && l.err == nil && l.val != nil {
		return stop(l.val)
	}
	return nil
}

// single is the binary-wide shared standalone server.
type single struct {
	srv   *Srv
	admin *redis.Client // used by Namespace cleanups
}

var sharedSingle lazy[single]

// Main runs the tests of a package and stops every server this package started, then exits.
// Use: func TestMain(m *testing.M) { redistest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "redistest: stopping shared servers: %v\n", err)
	}
	os.Exit(code)
}

// stopShared stops the shared standalone server and the shared cluster, if started,
// and removes their directories.
func stopShared() error {
	var wg sync.WaitGroup
	var errSingle, errCluster error
	wg.Add(2)
	go func() {
		defer wg.Done()
		errSingle = sharedSingle.close(func(s *single) error {
			_ = s.admin.Close()
			return s.srv.destroy()
		})
	}()
	go func() {
		defer wg.Done()
		errCluster = sharedCluster.close(func(c *cluster) error { return c.destroy() })
	}()
	wg.Wait()
	return errors.Join(errSingle, errCluster)
}

// getSingle returns the shared standalone server, starting it on first use.
func getSingle() (*single, error) {
	return sharedSingle.get(func() (*single, error) {
		srv, err := startSrv(false, nil)
		if err != nil {
			return nil, err
		}
		return &single{srv: srv, admin: newClient(srv.Addr())}, nil
	})
}

// mustSingle is getSingle for tests: it fails t when the server cannot be started.
func mustSingle(t testing.TB) *single {
	t.Helper()
	s, err := getSingle()
	if err != nil {
		fatalStart(t, "shared redis-server", err)
	}
	return s
}

// fatalStart fails t with a message explaining why what could not be started.
func fatalStart(t testing.TB, what string, err error) {
	t.Helper()
	if errors.Is(err, errNotFound) {
		t.Fatal(errNotFound.Error())
	}
	t.Fatalf("redistest: starting %s: %v", what, err)
}

// newClient returns a client for addr with the package's timeouts and pool size.
func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  dialTimeout,
		ReadTimeout:  ioTimeout,
		WriteTimeout: ioTimeout,
		PoolSize:     poolSize,
	})
}

// closeAtCleanup closes c when t ends.
func closeAtCleanup(t testing.TB, c interface{ Close() error }) {
	t.Cleanup(func() { _ = c.Close() })
}

// Client returns a *redis.Client connected to the binary-wide shared redis-server (started lazily
// on first use on a free 127.0.0.1 port with --save "" --appendonly no, in a short temp dir).
// The client is closed at t.Cleanup. Fails the test (t.Fatal) with a clear message when redis-server is missing:
// "redis-server not found: run make test (it installs it) or apt-get install redis-server".
func Client(t testing.TB) *redis.Client {
	t.Helper()
	c := newClient(mustSingle(t).srv.Addr())
	closeAtCleanup(t, c)
	return c
}

// Addr returns "127.0.0.1:port" of the shared single server (starting it if needed).
func Addr(t testing.TB) string {
	t.Helper()
	return mustSingle(t).srv.Addr()
}

// nsCounter numbers the namespaces handed out by this process.
var nsCounter atomic.Uint64

// maxNameLen bounds the part of a namespace derived from the test name.
const maxNameLen = 32

// Namespace returns a unique key prefix for this test, "rt-<pid>-<n>-<sanitized test name, truncated>",
// unique across processes and calls. At t.Cleanup, with a fresh context (t.Context() is already cancelled there)
// and a timeout of a few seconds, it deletes every key containing that namespace (SCAN MATCH *<ns>* + UNLINK) on the
// shared single server and, if the shared cluster was started, on every master of the cluster (ForEachMaster).
// The namespace contains only ASCII letters, digits, '-', '_' and '.', so it has no characters special to glob
// patterns and no braces { } (callers can wrap it in a hash tag).
func Namespace(t testing.TB) string {
	t.Helper()
	ns := fmt.Sprintf("rt-%d-%d-%s", os.Getpid(), nsCounter.Add(1), sanitize(t.Name()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupLimit)
		defer cancel()
		if err := deleteNamespace(ctx, ns); err != nil {
			t.Errorf("redistest: deleting keys of namespace %q: %v", ns, err)
		}
	})
	return ns
}

// sanitize maps a test name to characters safe in keys and glob patterns, truncated to maxNameLen.
func sanitize(name string) string {
	var b strings.Builder
	for _, r := range name {
		if b.Len() >= maxNameLen {
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// deleteNamespace unlinks every key containing ns on the shared servers that are running.
func deleteNamespace(ctx context.Context, ns string) error {
	pattern := "*" + ns + "*"
	var errs []error
	if s := sharedSingle.peek(); s != nil {
		if err := unlinkMatching(ctx, s.admin, pattern); err != nil {
			errs = append(errs, fmt.Errorf("shared server %s: %w", s.srv.Addr(), err))
		}
	}
	if c := sharedCluster.peek(); c != nil {
		err := c.admin.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			if err := unlinkMatching(ctx, node, pattern); err != nil {
				return fmt.Errorf("cluster node %s: %w", node.Options().Addr, err)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unlinkMatching unlinks the keys matching pattern on one server. Keys are unlinked one per
// command (pipelined) because keys of a cluster node may live in different slots.
func unlinkMatching(ctx context.Context, c *redis.Client, pattern string) error {
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return fmt.Errorf("SCAN: %w", err)
		}
		if len(keys) > 0 {
			_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Unlink(ctx, k)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("UNLINK: %w", err)
			}
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// SharedAddr returns the address of the shared single server, starting it if
// needed, for code that has no testing.TB, such as Example functions. Main
// stops the server. The error names the package to install when
// redis-server is missing.
func SharedAddr() (string, error) {
	s, err := getSingle()
	if err != nil {
		return "", err
	}
	return s.srv.Addr(), nil
}

// NewNamespace returns a unique key prefix like Namespace does, for code that
// has no testing.TB. Its keys are not deleted; they vanish with the shared
// server when Main stops it.
func NewNamespace(name string) string {
	return fmt.Sprintf("rt-%d-%d-%s", os.Getpid(), nsCounter.Add(1), sanitize(name))
}
