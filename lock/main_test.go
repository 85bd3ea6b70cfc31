package lock_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/lock"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runContender())
	}
	redistest.Main(m)
}

// target is one implementation under the shared suite.
type target struct {
	name string
	// redis is the client of a Redis target, nil for the in-memory twin.
	redis redis.UniversalClient
	// newLocker returns a fresh, isolated namespace.
	newLocker func(t *testing.T) lock.Locker
	// newPool returns a fresh, isolated pool.
	newPool func(t *testing.T) *lock.Pool
	// newProcesses returns n Lockers of one fresh namespace, each with a
	// client of its own, as n processes would have; the in-memory twin,
	// one process, returns one.
	newProcesses func(t *testing.T, n int) []lock.Locker
}

// redisProcesses returns newProcesses for a Redis target.
func redisProcesses(client func(t *testing.T) redis.UniversalClient, opts ...lock.Option) func(t *testing.T, n int) []lock.Locker {
	return func(t *testing.T, n int) []lock.Locker {
		ns := redistest.Namespace(t)
		out := make([]lock.Locker, n)
		for i := range out {
			out[i] = mustNew(t, client(t), ns, opts...)
		}
		return out
	}
}

func singleClient(t *testing.T) redis.UniversalClient  { return redistest.Client(t) }
func clusterClient(t *testing.T) redis.UniversalClient { return redistest.StartCluster(t) }

// singleTarget is the single node without batching; clusterTarget batches
// by default (DefaultBatching per node).
func singleTarget() target {
	return target{
		name: "single",
		newLocker: func(t *testing.T) lock.Locker {
			return mustNew(t, redistest.Client(t), redistest.Namespace(t), lock.WithBatching(0))
		},
		newPool: func(t *testing.T) *lock.Pool {
			return mustPool(t, redistest.Client(t), redistest.Namespace(t), lock.WithBatching(0))
		},
		newProcesses: redisProcesses(singleClient, lock.WithBatching(0)),
	}
}

func clusterTarget() target {
	return target{
		name: "cluster",
		newLocker: func(t *testing.T) lock.Locker {
			return mustNew(t, redistest.StartCluster(t), redistest.Namespace(t))
		},
		newPool: func(t *testing.T) *lock.Pool {
			return mustPool(t, redistest.StartCluster(t), redistest.Namespace(t))
		},
		newProcesses: redisProcesses(clusterClient),
	}
}

// batchedTarget is the single node with WithBatching(1), so that concurrent
// operations of a test share pipelines as often as possible.
func batchedTarget() target {
	return target{
		name: "batched",
		newLocker: func(t *testing.T) lock.Locker {
			return mustNew(t, redistest.Client(t), redistest.Namespace(t), lock.WithBatching(1))
		},
		newPool: func(t *testing.T) *lock.Pool {
			return mustPool(t, redistest.Client(t), redistest.Namespace(t), lock.WithBatching(1))
		},
		newProcesses: redisProcesses(singleClient, lock.WithBatching(1)),
	}
}

func memoryTarget() target {
	return target{
		name:         "memory",
		newLocker:    func(*testing.T) lock.Locker { return lock.NewMemory() },
		newPool:      func(*testing.T) *lock.Pool { return lock.NewMemoryPool() },
		newProcesses: func(*testing.T, int) []lock.Locker { return []lock.Locker{lock.NewMemory()} },
	}
}

// forEachTarget runs fn as a parallel subtest against the single node, the
// single node with batching, the cluster and the in-memory twin.
func forEachTarget(t *testing.T, fn func(t *testing.T, tg target)) {
	t.Helper()
	for _, tg := range []target{singleTarget(), batchedTarget(), clusterTarget(), memoryTarget()} {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			fn(t, tg)
		})
	}
}

// forEachRedis runs fn against the single node and the cluster, giving the
// raw client too.
func forEachRedis(t *testing.T, fn func(t *testing.T, c redis.UniversalClient)) {
	t.Helper()
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		fn(t, redistest.Client(t))
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		fn(t, redistest.StartCluster(t))
	})
}

func mustNew(t testing.TB, c redis.UniversalClient, prefix string, opts ...lock.Option) *lock.Lock {
	t.Helper()
	l, err := lock.New(c, prefix, opts...)
	if err != nil {
		t.Fatalf("lock.New: %v", err)
	}
	return l
}

func mustPool(t testing.TB, c redis.UniversalClient, prefix string, opts ...lock.Option) *lock.Pool {
	t.Helper()
	p, err := lock.NewPool(c, prefix, opts...)
	if err != nil {
		t.Fatalf("lock.NewPool: %v", err)
	}
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countHook counts the commands (round trips) a client sends.
type countHook struct {
	passHook
	n atomic.Int64
}

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// delayHook delays every EVALSHA/EVAL while armed, simulating a network
// partition between a holder and Redis.
type delayHook struct {
	passHook
	armed atomic.Bool
	delay time.Duration
}

func (h *delayHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() {
			select {
			case <-time.After(h.delay):
			case <-ctx.Done():
				return fmt.Errorf("delayed by test: %w", ctx.Err())
			}
		}
		return next(ctx, cmd)
	}
}

func nan() float64 { var z float64; return z / z }
func inf() float64 { var z float64; return 1 / z }

type redisClient = redis.UniversalClient

// newClientLike returns a new client of the same kind (single or cluster)
// as c with hook added, so the hook sees this test's commands alone.
func newClientLike(t *testing.T, c redis.UniversalClient, hook redis.Hook) redis.UniversalClient {
	t.Helper()
	var nc redis.UniversalClient = redistest.Client(t)
	if _, ok := c.(*redis.ClusterClient); ok {
		nc = redistest.StartCluster(t)
	}
	nc.AddHook(hook)
	return nc
}

// redisClientForUnit returns a client for tests that never reach a server.
func redisClientForUnit(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

// exampleClient connects the Example functions to the shared test server.
func exampleClient() *redis.Client {
	addr, err := redistest.SharedAddr()
	if err != nil {
		panic(err)
	}
	return redis.NewClient(&redis.Options{Addr: addr})
}

func exampleNamespace(name string) string { return redistest.NewNamespace(name) }

// passHook passes dials and pipelines through untouched; the test hooks
// embed it and override what they disturb.
type passHook struct{}

func (passHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (passHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
