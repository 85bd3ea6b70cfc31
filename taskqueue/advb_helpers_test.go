package taskqueue_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advSingle is the single-node target (no batching), used by the
// adversarial tests that need hooks on a plain client.
func advSingle(t testing.TB) env { return targets[0].env(t) }

// advQueue returns a Queue on e's namespace over client c (closed at
// cleanup).
func advQueue(t testing.TB, e env, c redis.UniversalClient, opts ...taskqueue.Option) *taskqueue.Queue {
	t.Helper()
	q, err := taskqueue.New(c, e.ns, append([]taskqueue.Option{taskqueue.WithBatching(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// slowKey marks a context whose script commands the delayHook slows down.
type slowKey struct{}

// delayHook delays EVALSHA/EVAL commands while on is set: of the scripts
// whose hash is in shas (all when empty), and only for contexts marked
// with slowKey when marked is set.
type delayHook struct {
	on     *atomic.Bool
	d      time.Duration
	shas   map[string]bool
	marked bool
}

func (h delayHook) match(ctx context.Context, cmd redis.Cmder) bool {
	if !h.on.Load() {
		return false
	}
	name := strings.ToLower(cmd.Name())
	if name != "evalsha" && name != "eval" {
		return false
	}
	if h.marked && ctx.Value(slowKey{}) == nil {
		return false
	}
	if len(h.shas) == 0 {
		return true
	}
	args := cmd.Args()
	if len(args) < 2 {
		return false
	}
	s, _ := args[1].(string)
	return h.shas[s]
}

func (h delayHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h delayHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.match(ctx, cmd) {
			time.Sleep(h.d)
		}
		return next(ctx, cmd)
	}
}

func (h delayHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			if h.match(ctx, c) {
				time.Sleep(h.d)
				break
			}
		}
		return next(ctx, cmds)
	}
}

// hookedClient returns a fresh client of the shared single server with h.
func hookedClient(t testing.TB, h redis.Hook) *redis.Client {
	c := redistest.Client(t)
	c.AddHook(h)
	return c
}

// waitFor polls cond every few ms until it holds or d passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// registered reports whether Queue value w is among the values told
// about task id (field r of its record).
func registered(ctx context.Context, q, w *taskqueue.Queue, id string) bool {
	r, _ := q.Raw().HGet(ctx, taskqueue.TaskKey(q, id), "r").Result()
	return strings.Contains(" "+r+" ", " "+taskqueue.ID(w)+" ")
}

// listenCtx runs q.Listen in the background and returns its stop function
// (which waits for Listen to return) once it is advertised.
func listenCtx(t testing.TB, q *taskqueue.Queue, names []string, workers int) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Listen(ctx, names, workers) }()
	var once atomic.Bool
	var res error
	stop = func() error {
		if once.CompareAndSwap(false, true) {
			cancel()
			res = <-done
		}
		return res
	}
	t.Cleanup(func() { _ = stop() })
	waitUntil(t, 10*time.Second, "listener advertised", func() bool {
		st, err := q.Stats(context.Background(), names[0])
		return err == nil && st[0].Listeners > 0
	})
	return stop
}
