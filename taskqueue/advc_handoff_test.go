package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvCHandOffMessageLost (held): the owner's subscription connection
// is cut right before the listener's failed run hands the task over, so
// the "o" message is lost; the resubscription's kick makes the owner read
// the record and run the hand-off, long before its fallback point.
func TestAdvCHandOffMessageLost(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	release := make(chan struct{})
	var remote atomic.Int64
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		remote.Add(1)
		<-release
		return nil, errors.New("remote failed")
	}))
	listenCtx(t, w, []string{"job"}, 1)
	ch := &advcChaos{}
	oc := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Dialer: ch.dial})
	t.Cleanup(func() { _ = oc.Close() })
	var local atomic.Int64
	owner := advQueue(t, e, oc, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		local.Add(1)
		return "local", nil
	}))
	res := make(chan error, 1)
	var got *taskqueue.Task
	go func() {
		var err error
		got, err = owner.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
			taskqueue.WithFallbackAfter(8*time.Second), taskqueue.WithTimeout(10*time.Second))
		res <- err
	}()
	waitUntil(t, 5*time.Second, "the remote run", func() bool { return remote.Load() == 1 })
	ch.killSub()
	close(release)
	start := time.Now()
	err := <-res
	if err != nil || local.Load() != 1 || time.Since(start) > 3*time.Second {
		t.Errorf("hand-off whose message was lost: %v after %v, %d local runs (%v)", err, time.Since(start).Round(time.Millisecond), local.Load(), got)
	}
}

// TestAdvCHandOffAfterRetries (held): MaxAttempts 3 with a fallback
// owner: the listener's three failures end in a hand-off, the owner runs
// it once; with an early fallback point the owner may take a retry over,
// but every attempt runs in one place and no more than three remotely.
func TestAdvCHandOffAfterRetries(t *testing.T) {
	for _, fb := range []time.Duration{8 * time.Second, 30 * time.Millisecond} {
		t.Run(fmt.Sprint("fallback=", fb), func(t *testing.T) {
			t.Parallel()
			e := advSingle(t)
			ctx := ctxT(t, 15*time.Second)
			ov := newAdvcOverlap()
			var remote, local atomic.Int64
			w := advQueue(t, e, redistest.Client(t), taskqueue.WithRetryBackoff(func(int) time.Duration { return 100 * time.Millisecond }),
				taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					defer ov.enter(task.ID)()
					remote.Add(1)
					time.Sleep(50 * time.Millisecond)
					return nil, errors.New("remote failed")
				}))
			listenCtx(t, w, []string{"job"}, 2)
			owner := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				defer ov.enter(task.ID)()
				local.Add(1)
				return "local", nil
			}))
			task, err := owner.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithMaxAttempts(3),
				taskqueue.WithFallbackAfter(fb), taskqueue.WithTimeout(10*time.Second))
			if err != nil || string(task.Result) != `"local"` || local.Load() != 1 || remote.Load() > 3 || ov.overlaps.Load() > 0 {
				t.Errorf("RemoteFirst, MaxAttempts 3, fallback %v: %v; %d remote and %d local runs, %d overlapping", fb, err, remote.Load(), local.Load(), ov.overlaps.Load())
			}
		})
	}
}

// TestAdvCRemoteFirstOwnerAlsoListens (held): the RemoteFirst caller's
// Queue value also listens to the name: its own listener runs the task,
// fails, the task is handed to the same Queue value and its Query runs it
// locally (not confused with the listener's ended run).
func TestAdvCRemoteFirstOwnerAlsoListens(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	ov := newAdvcOverlap()
	var runs atomic.Int64
	q := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		defer ov.enter(task.ID)()
		if runs.Add(1) == 1 {
			return nil, errors.New("first run fails")
		}
		return "second", nil
	}))
	listenCtx(t, q, []string{"job"}, 2)
	task, err := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
		taskqueue.WithFallbackAfter(5*time.Second), taskqueue.WithTimeout(8*time.Second))
	if err != nil || string(task.Result) != `"second"` || runs.Load() != 2 || ov.overlaps.Load() > 0 {
		t.Errorf("RemoteFirst on a Queue value that listens too: %v, %d runs, %d overlapping", err, runs.Load(), ov.overlaps.Load())
	}
}

// TestAdvCOwnerCtxEndsAtHandOff: the owner's context ends right when the
// hand-off reaches it: giveUp's cancel finds the task claimed for the
// owner ("handed", not the owner's submit nonce), so it only signals
// (c=1) a claim that nobody runs; the task stays active until that claim
// lapses and a listener reaps it. A joiner in another process waits that
// long for the cancellation.
func TestAdvCOwnerCtxEndsAtHandOff(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	vis := 2 * time.Second
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		time.Sleep(300 * time.Millisecond)
		return nil, errors.New("remote failed")
	}))
	listenCtx(t, w, []string{"job"}, 1)
	// The owner's local run would start when it reads the hand-off; its
	// context ends as the hand-off arrives: look.lua is slowed so that the
	// owner reads it after its timeout.
	var on atomic.Bool
	hook := delayHook{on: &on, d: 400 * time.Millisecond, shas: map[string]bool{taskqueue.AdvBScriptHash("look"): true}}
	owner := advQueue(t, e, hookedClient(t, hook), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return "local", nil }))
	on.Store(true)
	qctx, cancel := context.WithTimeout(ctx, 450*time.Millisecond)
	defer cancel()
	_, qerr := owner.Query(qctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(5*time.Second))
	on.Store(false)
	obs := advQueue(t, e, redistest.Client(t))
	start := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	task, err := obs.Wait(wctx, "X")
	took := time.Since(start)
	if took > time.Second {
		st := taskqueue.State("")
		if task != nil {
			st = task.State
		}
		t.Errorf("owner gave up (%v) as the task was handed to it: a joiner waited %v for the outcome (%s, %v); want it at once", qerr, took.Round(time.Millisecond), st, err)
	}
}
