package taskqueue_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) != "" {
		os.Exit(runCrashListener())
	}
	redistest.Main(m)
}

// target is one Redis deployment the shared suite runs on.
type target struct {
	name   string
	client func(t testing.TB) redis.UniversalClient
	opts   []taskqueue.Option
}

// targets: the single node without batching, the 3-master cluster with
// the default batching.
var targets = []target{
	{name: "single", client: func(t testing.TB) redis.UniversalClient { return redistest.Client(t) }, opts: []taskqueue.Option{taskqueue.WithBatching(0)}},
	{name: "cluster", client: func(t testing.TB) redis.UniversalClient { return redistest.StartCluster(t) }},
}

// forTargets runs f on every target, in parallel subtests.
func forTargets(t *testing.T, f func(t *testing.T, tg target)) {
	t.Helper()
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			f(t, tg)
		})
	}
}

// env is a fresh namespace of a target: new Queue values on it share it,
// as processes would.
type env struct {
	tg target
	ns string
}

func (tg target) env(t testing.TB) env { return env{tg: tg, ns: redistest.Namespace(t)} }

// queue returns a Queue on the namespace with its own client, closed at
// cleanup.
func (e env) queue(t testing.TB, opts ...taskqueue.Option) *taskqueue.Queue {
	t.Helper()
	q, err := taskqueue.New(e.tg.client(t), e.ns, append(append([]taskqueue.Option{}, e.tg.opts...), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// listen runs q.Listen in the background until the test ends, and waits
// until it is advertised.
func listen(t testing.TB, q *taskqueue.Queue, names []string, workers int) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Listen(ctx, names, workers) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := q.Stats(context.Background(), names[0])
		if err == nil && st[0].Listeners > 0 {
			return cancel
		}
		if time.Now().After(deadline) {
			t.Fatalf("listener of %v never advertised (%v, %v)", names, st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
