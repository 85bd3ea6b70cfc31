package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// exampleClient returns a client of the test server (any
// redis.UniversalClient works) and a fresh prefix, so that examples and
// tests share the server without seeing each other's keys.
func exampleClient() (*redis.Client, string) {
	addr, err := redistest.SharedAddr()
	if err != nil {
		panic(err)
	}
	return redis.NewClient(&redis.Options{Addr: addr}), redistest.NewNamespace("tq-example")
}

// A worker process listens; a caller queries and waits for the result.
func Example() {
	rdb, prefix := exampleClient()
	defer rdb.Close()
	ctx := context.Background()

	worker, _ := taskqueue.New(rdb, prefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		var p struct{ A, B int }
		if err := t.DecodeParams(&p); err != nil {
			return nil, err
		}
		return p.A + p.B, nil
	}))
	defer worker.Close()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go worker.Listen(lctx, []string{"add"}, 4)

	caller, _ := taskqueue.New(rdb, prefix)
	defer caller.Close()
	task, err := caller.Query(ctx, "sum-1", "add", map[string]int{"A": 2, "B": 3},
		taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(10*time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	var sum int
	_ = task.DecodeResult(&sum)
	fmt.Println(task.State, sum)
	// Output: done 5
}

// Auto runs the task in the caller's process while no listener of its
// name is alive.
func ExampleQueue_Query_auto() {
	rdb, prefix := exampleClient()
	defer rdb.Close()
	q, _ := taskqueue.New(rdb, prefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		return "ran here", nil
	}))
	defer q.Close()
	task, err := q.Query(context.Background(), "job-1", "report", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(string(task.Result))
	// Output: "ran here"
}

// A task reports progress; the caller follows it while it waits.
func ExampleWithProgress() {
	rdb, prefix := exampleClient()
	defer rdb.Close()
	ctx := context.Background()
	step := make(chan struct{})
	worker, _ := taskqueue.New(rdb, prefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		for i := 1; i <= 3; i++ {
			if err := t.Update(ctx, float64(i), 3); err != nil {
				return nil, err
			}
			<-step // the example waits until the caller saw each update
		}
		return nil, nil
	}))
	defer worker.Close()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go worker.Listen(lctx, []string{"import"}, 1)

	caller, _ := taskqueue.New(rdb, prefix)
	defer caller.Close()
	_, err := caller.Query(ctx, "import-7", "import", nil, taskqueue.WithPolicy(taskqueue.Remote),
		taskqueue.WithProgress(func(p taskqueue.Progress) {
			fmt.Printf("%.0f/%.0f\n", p.Current, p.Total)
			step <- struct{}{}
		}))
	fmt.Println("finished:", err == nil)
	// Output:
	// 1/3
	// 2/3
	// 3/3
	// finished: true
}

// A task function's error reaches the caller with the worker's message;
// after its last attempt the task is a dead letter that can be queued
// again.
func ExampleQueue_DeadLetters() {
	rdb, prefix := exampleClient()
	defer rdb.Close()
	ctx := context.Background()
	worker, _ := taskqueue.New(rdb, prefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		return nil, errors.New("upstream unavailable")
	}), taskqueue.WithRetryBackoff(func(int) time.Duration { return 10 * time.Millisecond }))
	defer worker.Close()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go worker.Listen(lctx, []string{"sync"}, 1)

	_, err := worker.Query(ctx, "sync-3", "sync", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(2))
	var te *taskqueue.TaskError
	if errors.As(err, &te) {
		fmt.Println(te.State, te.Message)
	}
	dead, _ := worker.DeadLetters(ctx, "sync", 10)
	fmt.Println(len(dead), dead[0].ID, dead[0].Attempts)
	// Output:
	// dead upstream unavailable
	// 1 sync-3 2
}

// Submit queues a task without waiting; Wait, in any process, waits for
// its result.
func ExampleQueue_Submit() {
	rdb, prefix := exampleClient()
	defer rdb.Close()
	ctx := context.Background()
	producer, _ := taskqueue.New(rdb, prefix)
	defer producer.Close()
	created, _ := producer.Submit(ctx, "mail-1", "send-mail", map[string]string{"to": "ops@example.com"})
	fmt.Println("created:", created)

	worker, _ := taskqueue.New(rdb, prefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		return "sent", nil
	}))
	defer worker.Close()
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	go worker.Listen(lctx, []string{"send-mail"}, 1)

	task, err := producer.Wait(ctx, "mail-1", taskqueue.WithOnce())
	fmt.Println(string(task.Result), err)
	// Output:
	// created: true
	// "sent" <nil>
}
