package taskqueue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advdHanded starts a RemoteFirst Query of X (1 attempt) on A, whose only
// remote run (on listener L) fails, so X is handed to A, and returns once
// A's function runs the hand-off. fnA runs it.
func advdHanded(t *testing.T, e env, vis time.Duration, fnA taskqueue.TaskFunc, lruns *atomic.Int64) (*taskqueue.Queue, chan error, func() error) {
	t.Helper()
	a := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fnA))
	l := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			lruns.Add(1)
			return nil, errors.New("remote failure")
		}))
	stopL := listenCtx(t, l, []string{"job"}, 1)
	res := make(chan error, 1)
	go func() {
		_, err := a.Query(context.Background(), "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
			taskqueue.WithMaxAttempts(1), taskqueue.WithFallbackAfter(5*time.Second), taskqueue.WithTimeout(10*time.Second))
		res <- err
	}()
	return a, res, stopL
}

// TestAdvDCloseDuringHandoffRunRequeues: a RemoteFirst caller whose task
// was handed to it (its last remote attempt failed) closes while it runs
// the hand-off: runHere records "front", so the task is queued again for
// listeners with its attempts used up, and runs remotely once more. A
// Close one moment earlier (handed, not yet running: cancel.lua detach)
// makes it dead instead.
func TestAdvDCloseDuringHandoffRunRequeues(t *testing.T) {
	e := advSingle(t)
	vis := 2 * time.Second
	var lruns atomic.Int64
	started := make(chan struct{})
	a, res, _ := advdHanded(t, e, vis, func(ctx context.Context, task *taskqueue.Task) (any, error) {
		close(started)
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}, &lruns)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the hand-off never ran on A")
	}
	_ = a.Close()
	err := <-res
	time.Sleep(500 * time.Millisecond)
	ctx := ctxT(t, 5*time.Second)
	rec, _ := advQueue(t, e, redistest.Client(t)).GetTask(ctx, "X")
	if lruns.Load() > 1 || rec == nil || rec.State != taskqueue.Dead {
		var st taskqueue.State
		if rec != nil {
			st = rec.State
		}
		t.Errorf("A (RemoteFirst, 1 attempt) closed while running its hand-off (Query: %v): X then ran %d times on the listener (attempts 1), ended %v; "+
			"want dead (as a Close before the hand-off ran makes it), not another remote attempt", err, lruns.Load(), st)
	}
}

// TestAdvDLapsedHandoffRunsAgain: the hand-off's claim lapses (A hangs
// while running it). claim.lua would make X dead (cn "handed"), but a
// Query(Local) of another process joining it goes through submit.lua's
// lapsed-claim path, which ignores "handed": X runs a third time, past its
// one attempt, while A's hung run still goes.
func TestAdvDLapsedHandoffRunsAgain(t *testing.T) {
	e := advSingle(t)
	vis := 400 * time.Millisecond
	var lruns atomic.Int64
	started := make(chan struct{})
	release := make(chan struct{})
	a, _, stopL := advdHanded(t, e, vis, func(ctx context.Context, task *taskqueue.Task) (any, error) {
		close(started)
		<-release // hung: ignores ctx
		return "A", nil
	}, &lruns)
	defer close(release)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the hand-off never ran on A")
	}
	_ = stopL() // no listener reaps the lapsed hand-off
	taskqueue.PauseHeartbeats(a, true)
	ctx := ctxT(t, 10*time.Second)
	waitUntil(t, 5*time.Second, "the hand-off's claim to lapse", func() bool {
		l := advdLease(a, "job", "X")
		return l > 0 && advdRedisNow(a) > l+5
	})
	var jruns atomic.Int64
	j := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			jruns.Add(1)
			return "J", nil
		}))
	task, err := j.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if jruns.Load() > 0 {
		var st taskqueue.State
		if task != nil {
			st = task.State
		}
		t.Errorf("X (1 attempt, failed remotely, handed to A whose claim lapsed) ran again on a Query(Local) joiner (%v, %v): "+
			"a lapsed hand-off is dead (claim.lua), the joiner should get that", st, err)
	}
}
