package taskqueue_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// Found by the demo's author: a task cancelled while its run was being
// interrupted (its listener closing) was queued again and run by another
// listener.
func TestCancelledTaskNotRequeuedByShutdown(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		l1 := e.queue(t, taskqueue.WithGracePeriod(0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-release // ignores its ctx for a while
			<-ctx.Done()
			return nil, ctx.Err()
		}))
		ctx := ctxT(t, 20*time.Second)
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- l1.Listen(lctx, []string{"c"}, 1) }()
		caller := e.queue(t)
		if _, err := caller.Submit(ctx, "c1", "c", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		stop() // the listener stops: the run is to be requeued
		if ok, err := caller.Cancel(ctx, "c1"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		close(release)
		<-done
		var reran atomic.Int64
		l2 := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			reran.Add(1)
			return nil, nil
		}))
		listen(t, l2, []string{"c"}, 1)
		time.Sleep(200 * time.Millisecond)
		got, err := caller.GetTask(ctx, "c1")
		if err != nil || got.State != taskqueue.Cancelled || reran.Load() != 0 {
			t.Fatalf("cancelled task: %v %+v, run again %d times", err, got, reran.Load())
		}
	})
}

// Found by the demo's author: a task whose caller cancelled it while its
// worker was dead was delivered again when the worker's claim ran out.
func TestCancelledTaskOfDeadWorkerNotRedelivered(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		started := make(chan struct{}, 1)
		release := make(chan struct{})
		opts := []taskqueue.Option{taskqueue.WithVisibilityTimeout(300 * time.Millisecond)}
		var dead *taskqueue.Queue
		dead = e.queue(t, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			taskqueue.PauseHeartbeats(dead, true)
			_ = dead.Close() // gone: it hears no cancellation
			started <- struct{}{}
			<-release
			return nil, nil
		}))...)
		ctx := ctxT(t, 20*time.Second)
		go func() { _ = dead.Listen(ctx, []string{"d"}, 1) }()
		caller := e.queue(t)
		if _, err := caller.Submit(ctx, "d1", "d", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		defer close(release)
		if ok, err := caller.Cancel(ctx, "d1"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		var reran atomic.Int64
		l2 := e.queue(t, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			reran.Add(1)
			return nil, nil
		}))...)
		listen(t, l2, []string{"d"}, 1)
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := caller.GetTask(ctx, "d1")
			if err != nil {
				t.Fatal(err)
			}
			if got.State == taskqueue.Cancelled {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %+v", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		if reran.Load() != 0 {
			t.Fatalf("cancelled task run again %d times", reran.Load())
		}
	})
}

// Found by the demo's author: a local run reported no delivery and no
// creation time, and a remote result came back without its params.
func TestLocalAndRemoteTasksAlike(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		seen := make(chan *taskqueue.Task, 2)
		fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
			seen <- task
			return "r", nil
		}
		worker := e.queue(t, taskqueue.WithTaskFunc(fn))
		listen(t, worker, []string{"remote"}, 1)
		caller := e.queue(t, taskqueue.WithTaskFunc(fn))
		ctx := ctxT(t, 20*time.Second)
		for _, c := range []struct {
			name   string
			policy taskqueue.Policy
		}{{"local", taskqueue.Local}, {"remote", taskqueue.Remote}} {
			task, err := caller.Query(ctx, c.name, c.name, map[string]int{"n": 1}, taskqueue.WithPolicy(c.policy))
			if err != nil {
				t.Fatal(err)
			}
			run := <-seen
			if run.Deliveries != 1 || task.Deliveries != 1 || task.Created.IsZero() || run.Expiry.IsZero() ||
				string(task.Params) != `{"n":1}` || string(run.Params) != `{"n":1}` {
				t.Errorf("%s: run %+v, result %+v", c.name, run, task)
			}
		}
	})
}

// Found by the demo's author: the last progress update, arriving with the
// result, could be skipped.
func TestLastProgressReported(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			for i := 1; i <= 4; i++ {
				if err := task.Update(ctx, float64(i), 4); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}))
		listen(t, worker, []string{"p"}, 8)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				var last taskqueue.Progress
				_, err := caller.Query(ctx, fmt.Sprint("p", i), "p", nil, taskqueue.WithPolicy(taskqueue.Remote),
					taskqueue.WithProgress(func(p taskqueue.Progress) { last = p }))
				if err != nil || last.Current != 4 {
					t.Errorf("query %d: %v, last progress %+v", i, err, last)
				}
			})
		}
		wg.Wait()
	})
}
