package taskqueue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvACancelledTaskOfDeadWorkerRunsAgain: a caller cancels a running
// task (its Query's ctx ends: the task is "signalled", c=1), but the worker
// holding it is dead (a closed Queue whose task function never returns, so
// neither the pub/sub cancel nor its heartbeat reaches it). Its claim runs
// out and the reaper of a live listener queues the task again — and
// claim_for resets c to "0", so the cancellation is forgotten: the task runs
// again on the live listener and ends Done, although its only caller
// cancelled it. The reaper (and complete's "front"/"requeue") should end a
// task whose cancellation was asked as Cancelled instead of queueing it.
func TestAdvACancelledTaskOfDeadWorkerRunsAgain(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		vis := taskqueue.WithVisibilityTimeout(300 * time.Millisecond)
		started := make(chan struct{}, 1)
		stuck := make(chan struct{})
		defer close(stuck)
		dead := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-stuck // hung: ignores its context
			return "dead worker", nil
		}))
		dctx, stopDead := context.WithCancel(ctx)
		deadDone := make(chan error, 1)
		go func() { deadDone <- dead.Listen(dctx, []string{"job"}, 1) }()
		defer func() { stopDead(); <-deadDone }()
		advaWaitFor(t, 5*time.Second, "listener", func() bool {
			st, _ := dead.Stats(ctx, "job")
			return len(st) == 1 && st[0].Listeners == 1
		})

		caller := e.queue(t)
		qctx, cancelQuery := context.WithCancel(ctx)
		qdone := make(chan error, 1)
		go func() {
			_, err := caller.Query(qctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.Remote))
			qdone <- err
		}()
		<-started
		_ = dead.Close() // the worker process dies (its function hangs on)
		cancelQuery()    // the caller gives up: the task is cancelled
		if err := <-qdone; !errors.Is(err, context.Canceled) {
			t.Fatalf("query: %v", err)
		}
		got, err := caller.GetTask(ctx, "victim")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("after the caller cancelled: state %s", got.State)

		var ran atomic.Int64
		live := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "live worker", nil
		}))
		listen(t, live, []string{"job"}, 1)
		time.Sleep(2 * time.Second) // the claim runs out (300 ms) and is reaped (≤ 75 ms later)
		got, err = caller.GetTask(ctx, "victim")
		if err != nil {
			t.Fatal(err)
		}
		if ran.Load() != 0 || got.State != taskqueue.Cancelled {
			t.Fatalf("a task its caller cancelled ran again on a live listener (%d runs) and ended %s (result %s, deliveries %d); want Cancelled and no new run",
				ran.Load(), got.State, got.Result, got.Deliveries)
		}
	})
}

// TestAdvACancelDuringShutdownRequeuesAndRuns: the same forgetting through
// complete.lua "front": a listener stops (its grace period is over, the run
// context ends with the shutdown cause) and only then the caller cancels;
// the task function returns, the run is queued again at the front with
// c="1", and the next claim resets c and runs it.
func TestAdvACancelDuringShutdownRequeuesAndRuns(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		started := make(chan struct{}, 1)
		release := make(chan struct{})
		a := e.queue(t, taskqueue.WithGracePeriod(50*time.Millisecond), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			<-release // winds down slowly
			return nil, context.Cause(ctx)
		}))
		actx, stopA := context.WithCancel(ctx)
		aDone := make(chan error, 1)
		go func() { aDone <- a.Listen(actx, []string{"job"}, 1) }()
		advaWaitFor(t, 5*time.Second, "listener", func() bool {
			st, _ := a.Stats(ctx, "job")
			return len(st) == 1 && st[0].Listeners == 1
		})
		caller := e.queue(t)
		qctx, cancelQuery := context.WithCancel(ctx)
		qdone := make(chan error, 1)
		go func() {
			_, err := caller.Query(qctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.Remote))
			qdone <- err
		}()
		<-started
		stopA()                            // shutdown: grace 50 ms, then the run's context ends (errShutdown)
		time.Sleep(150 * time.Millisecond) // past the grace period
		cancelQuery()                      // now the caller cancels
		if err := <-qdone; !errors.Is(err, context.Canceled) {
			t.Fatalf("query: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		close(release)
		<-aDone
		got, _ := caller.GetTask(ctx, "victim")
		t.Logf("after the shutdown: state %s", got.State)

		var ran atomic.Int64
		b := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "b", nil
		}))
		listen(t, b, []string{"job"}, 1)
		time.Sleep(500 * time.Millisecond)
		got, err := caller.GetTask(ctx, "victim")
		if err != nil {
			t.Fatal(err)
		}
		if ran.Load() != 0 || got.State != taskqueue.Cancelled {
			t.Fatalf("a task cancelled while its listener shut down ran again (%d runs), ended %s; want Cancelled", ran.Load(), got.State)
		}
	})
}
