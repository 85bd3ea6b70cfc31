package taskqueue_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// The benchmarks run on the shared redis-server of the test binary, each in
// a namespace of its own, with the caller and the listener on clients of
// their own, as two processes would be. For the comparison with
// hibiken/asynq on the same server, and for Redis CPU per task, see
// bench/taskbench.

// benchQueue returns a Queue on namespace ns with its own client.
func benchQueue(b *testing.B, ns string, opts ...taskqueue.Option) *taskqueue.Queue {
	b.Helper()
	q, err := taskqueue.New(redistest.Client(b), ns, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = q.Close() })
	return q
}

func noop(context.Context, *taskqueue.Task) (any, error) { return nil, nil }

// BenchmarkQueryRemote: one op is a remote Query of a no-op task, from
// the submit to the caller woken with the result (four round trips in a
// row). With -cpu or b.RunParallel's goroutines, calls overlap.
func BenchmarkQueryRemote(b *testing.B) {
	ns := redistest.Namespace(b)
	worker := benchQueue(b, ns, taskqueue.WithTaskFunc(noop))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Listen(ctx, []string{"noop"}, 50) }()
	b.Cleanup(func() { stop(); <-done })
	caller := benchQueue(b, ns)
	for i := range 100 { // warm up: subscription, scripts, connections
		if _, err := caller.Query(context.Background(), "w"+strconv.Itoa(i), "noop", nil, taskqueue.WithPolicy(taskqueue.Remote)); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := "q" + strconv.FormatInt(n.Add(1), 10)
			if _, err := caller.Query(context.Background(), id, "noop", nil, taskqueue.WithPolicy(taskqueue.Remote)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSubmitListen: one op is a no-op task submitted (by parallel
// producers) and run by a listener with 50 workers; the timer stops when
// the last one has run.
func BenchmarkSubmitListen(b *testing.B) {
	ns := redistest.Namespace(b)
	var ran atomic.Int64
	all := make(chan struct{})
	var want atomic.Int64
	want.Store(-1)
	worker := benchQueue(b, ns, taskqueue.WithTaskFunc(func(context.Context, *taskqueue.Task) (any, error) {
		if ran.Add(1) == want.Load() {
			close(all)
		}
		return nil, nil
	}))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- worker.Listen(ctx, []string{"noop"}, 50) }()
	b.Cleanup(func() { stop(); <-done })
	producer := benchQueue(b, ns)
	want.Store(int64(b.N))
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			id := "s" + strconv.FormatInt(n.Add(1), 10)
			if _, err := producer.Submit(context.Background(), id, "noop", nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	select {
	case <-all:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d tasks ran", ran.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}
