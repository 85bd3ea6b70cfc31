package taskqueue_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestThousandWaitingQueries: 1 000 concurrent Query calls in one process
// wait through the client's connections (8 in the main pool, 2 in
// go-redis's pipeline pool, which batching uses) plus the Queue's one
// subscription, not one blocking connection per waiter.
func TestThousandWaitingQueries(t *testing.T) {
	if testing.Short() {
		t.Skip("1 000 waiters")
	}
	ctx := ctxT(t, 60*time.Second)
	ns := redistest.Namespace(t)
	name := "waiters-" + strings.ReplaceAll(ns, "|", "-")
	c := redis.NewClient(&redis.Options{
		Addr: redistest.Addr(t), PoolSize: 8, MaxActiveConns: 8, PipelinePoolSize: 2,
		OnConnect: func(ctx context.Context, cn *redis.Conn) error { return cn.ClientSetName(ctx, name).Err() },
	})
	defer c.Close()
	caller, err := taskqueue.New(c, ns)
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			task, err := caller.Query(ctx, fmt.Sprint("w", i), "sq", i, taskqueue.WithPolicy(taskqueue.Remote))
			if err == nil {
				var got int
				if err = task.DecodeResult(&got); err == nil && got != i*i {
					err = fmt.Errorf("task %d: result %d", i, got)
				}
			}
			errs <- err
		})
	}
	for {
		st, err := caller.Stats(ctx, "sq")
		if err != nil {
			t.Fatal(err)
		}
		if st[0].Pending == n {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	admin := redistest.Client(t)
	count := func() int {
		list, err := admin.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(list, "name="+name+" ")
	}
	maxConns := count()
	worker, err := taskqueue.New(redistest.Client(t), ns, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		var i int
		if err := task.DecodeParams(&i); err != nil {
			return nil, err
		}
		return i * i, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer worker.Close()
	listen(t, worker, []string{"sq"}, 50)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(20 * time.Millisecond):
			maxConns = max(maxConns, count())
		}
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if maxConns > 11 {
		t.Fatalf("%d connections for %d waiting queries, want ≤ 11 (8 + 2 pipeline + subscription)", maxConns, n)
	}
	t.Logf("%d waiting queries served through at most %d connections", n, maxConns)
}
