package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advcWaitState polls (without t.Fatal: it may run on any goroutine)
// until task id of q is in one of states, or d passes.
func advcWaitState(q *taskqueue.Queue, id string, d time.Duration, states ...string) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		st, _, _ := advcState(context.Background(), q, id)
		for _, s := range states {
			if st == s {
				return true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return false
}

// TestAdvCResentClaimTwoListenersOneQueue: the claim cache T|lc|<owner>
// is per Queue value, not per Listen call. Listen A's claim takes task ta
// and its reply is lost; before go-redis resends it, Listen B of the same
// Queue value claims task tb, overwriting the cache with its own nonce.
// A's resend no longer finds its nonce, claims afresh (nothing: ta is
// active) and ta is orphaned: active for this Queue value, run by nobody,
// heartbeated by nobody. Its claim lapses and is counted as a lost worker;
// with WithMaxLost(1) it becomes a dead letter without ever running (with
// the defaults it waits the whole visibility timeout for nothing).
func TestAdvCResentClaimTwoListenersOneQueue(t *testing.T) {
	loadAll(t)
	for _, batching := range []int{0, taskqueue.DefaultBatching} {
		t.Run(fmt.Sprint("batching=", batching), func(t *testing.T) {
			t.Parallel()
			e := advSingle(t)
			ctx := ctxT(t, 15*time.Second)
			producer := advQueue(t, e, redistest.Client(t))
			d := newAdvcDialer(hasAll(taskqueue.ScriptHash("claim.lua"), "nameAAA1"))
			d.cond = func() bool {
				st, _, _ := advcState(context.Background(), producer, "ta")
				return st == "active"
			}
			d.during = func() {
				_, _ = producer.Submit(context.Background(), "tb", "nameBBB2", nil)
				advcWaitState(producer, "tb", 3*time.Second, "active", "done")
			}
			var ranA atomic.Int64
			w, err := taskqueue.New(advcClient(t, d, 0), e.ns, taskqueue.WithBatching(batching),
				taskqueue.WithVisibilityTimeout(500*time.Millisecond), taskqueue.WithMaxLost(1),
				taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					if task.ID == "ta" {
						ranA.Add(1)
					}
					return "ran", nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = w.Close() })
			listenCtx(t, w, []string{"nameAAA1"}, 1)
			listenCtx(t, w, []string{"nameBBB2"}, 1)
			d.armed.Store(true)
			if _, err := producer.Submit(ctx, "ta", "nameAAA1", nil); err != nil {
				t.Fatal(err)
			}
			task, err := producer.Wait(ctx, "ta")
			if !d.didFire() {
				t.Fatal("the connection did not break")
			}
			if err != nil || ranA.Load() != 1 {
				st, errMsg := taskqueue.State(""), ""
				if task != nil {
					st, errMsg = task.State, task.Error
				}
				t.Errorf("task ta, whose claim reply was lost while another Listen of the same Queue value claimed tb: %v (state %s, %q), ran %d times; want it run once",
					err, st, errMsg, ranA.Load())
			}
		})
	}
}

// TestAdvCResentCancelHitsNewIncarnation: Cancel(X) cancels pending task
// X; its reply is lost. Before the resend arrives, X is submitted again:
// submit.lua replaces the cancelled record with a new incarnation, which
// has no cx field. The resend finds a pending task and cancels it too: one
// Cancel call cancelled two tasks, the second created after it took
// effect.
func TestAdvCResentCancelHitsNewIncarnation(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 10*time.Second)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Submit(ctx, "X", "nobody", nil); err != nil {
		t.Fatal(err)
	}
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("cancel.lua"), "|t|X"))
	var recreated bool
	d.during = func() {
		recreated, _ = p.Submit(context.Background(), "X", "nobody", nil)
	}
	qc := advQueue(t, e, advcClient(t, d, 0))
	d.armed.Store(true)
	ok, err := qc.Cancel(ctx, "X")
	if !d.didFire() || !recreated {
		t.Fatalf("setup: fired %v, re-created %v", d.didFire(), recreated)
	}
	got, gerr := p.GetTask(ctx, "X")
	if gerr != nil || got.State != taskqueue.Pending {
		t.Errorf("one Cancel(X) (%v, %v), resent after X was submitted again: the new task is %v (%v); want it pending, untouched", ok, err, got.State, gerr)
	}
}

// TestAdvCResentRequeueRunsTwice: Requeue(X) of a dead letter; its reply
// is lost. Before the resend arrives, a listener runs X, which fails again
// and is a dead letter again. The resend's nonce check (qn) only applies
// when the task is not dead, so the resend queues it once more: one
// Requeue call, two more runs.
func TestAdvCResentRequeueRunsTwice(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 10*time.Second)
	var runs atomic.Int64
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		runs.Add(1)
		return nil, errors.New("boom")
	}))
	listenCtx(t, w, []string{"dies"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Query(ctx, "X", "dies", nil, taskqueue.WithPolicy(taskqueue.Remote)); err == nil {
		t.Fatal("want a dead letter")
	}
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("requeue.lua"), "|t|X"))
	var deadAgain bool
	d.during = func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && !deadAgain {
			st, _, _ := advcState(context.Background(), p, "X")
			deadAgain = runs.Load() == 2 && st == "dead"
			time.Sleep(2 * time.Millisecond)
		}
	}
	qr := advQueue(t, e, advcClient(t, d, 0))
	d.armed.Store(true)
	err := qr.Requeue(ctx, "X")
	if !d.didFire() || !deadAgain {
		t.Fatalf("setup: fired %v, dead again %v", d.didFire(), deadAgain)
	}
	time.Sleep(500 * time.Millisecond)
	st, _, _ := advcState(ctx, p, "X")
	if runs.Load() != 2 {
		t.Errorf("one Requeue(X) (%v) whose reply was lost: X ran %d more times (state now %s); want one", err, runs.Load()-1, st)
	}
}

// TestAdvCNoRetryStealLeavesTaskClaimed: MaxRetries -1. RemoteFirst with
// no listener: at the fallback point steal.lua claims the task for the
// caller and its reply is lost. Query returns the network error but,
// unlike a lost submit reply (given back with cancel), the steal's claim
// stays: the task is active, claimed by the caller, which will not run it
// and does not heartbeat it. No listener reaps it, and a retry of the same
// Query joins it (the lapsed-claim path queues it for listeners: there are
// none) and times out too: the id is poisoned until its record expires.
func TestAdvCNoRetryStealLeavesTaskClaimed(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("steal.lua"), "|t|X"))
	var ran atomic.Int64
	q, err := taskqueue.New(advcClient(t, d, -1), e.ns, taskqueue.WithBatching(0), taskqueue.WithVisibilityTimeout(300*time.Millisecond),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "local", nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	d.armed.Store(true)
	_, err1 := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
		taskqueue.WithFallbackAfter(100*time.Millisecond), taskqueue.WithTimeout(2*time.Second))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	time.Sleep(500 * time.Millisecond)
	st1, owner, _ := advcState(ctx, q, "X")
	start := time.Now()
	_, err2 := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
		taskqueue.WithFallbackAfter(100*time.Millisecond), taskqueue.WithTimeout(2*time.Second))
	st2, _, _ := advcState(ctx, q, "X")
	if err1 == nil && ran.Load() == 1 {
		return // it recovered the claim: fine
	}
	if st1 == "active" || err2 != nil {
		t.Errorf("RemoteFirst whose steal reply was lost (no resend): Query %v; 500 ms later the task is %s, claimed by the caller itself (%v), run by nobody; "+
			"retrying the same Query: %v after %v (task %s), %d local runs in all; want the task given back or run",
			err1, st1, owner == taskqueue.ID(q), err2, time.Since(start).Round(time.Millisecond), st2, ran.Load())
	}
}

// TestAdvCNoRetryCompleteLosesLocalResult: MaxRetries -1. A Query(Local)
// runs its function; complete.lua stores the result but its reply is
// lost. Query fails with "recording the end of task" although the task is
// Done in Redis: the caller loses a result that was stored (it has no way
// to learn the outcome but a second query).
func TestAdvCNoRetryCompleteLosesLocalResult(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 10*time.Second)
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("complete.lua"), "|t|X"))
	q, err := taskqueue.New(advcClient(t, d, -1), e.ns, taskqueue.WithBatching(0),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return "R", nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	d.armed.Store(true)
	task, err := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	got, _ := q.GetTask(ctx, "X")
	if err != nil || task == nil || string(task.Result) != `"R"` {
		t.Errorf("Query(Local) whose complete reply was lost (no resend): %v; the task in Redis is %s with result %s; want the result", err, got.State, got.Result)
	}
}

// TestAdvCNoRetryClaimOrphansTask: MaxRetries -1. A listener's claim
// takes task ta and its reply is lost: the listener logs the error and
// claims again with a new nonce, which does not find the first claim. ta
// stays claimed by a live listener that does not run or heartbeat it; its
// claim lapses and counts as a lost worker: with WithMaxLost(1) it dies
// without running.
func TestAdvCNoRetryClaimOrphansTask(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 10*time.Second)
	producer := advQueue(t, e, redistest.Client(t))
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("claim.lua"), "nameAAA1"))
	d.cond = func() bool {
		st, _, _ := advcState(context.Background(), producer, "ta")
		return st == "active"
	}
	var ran atomic.Int64
	w, err := taskqueue.New(advcClient(t, d, -1), e.ns, taskqueue.WithBatching(0),
		taskqueue.WithVisibilityTimeout(500*time.Millisecond), taskqueue.WithMaxLost(1),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "ran", nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	listenCtx(t, w, []string{"nameAAA1"}, 1)
	d.armed.Store(true)
	if _, err := producer.Submit(ctx, "ta", "nameAAA1", nil); err != nil {
		t.Fatal(err)
	}
	task, err := producer.Wait(ctx, "ta")
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	if err != nil || ran.Load() != 1 {
		st, msg := taskqueue.State(""), ""
		if task != nil {
			st, msg = task.State, task.Error
		}
		t.Errorf("task ta whose claim reply was lost (no resend): %v (state %s, %q), ran %d times; want it run", err, st, msg, ran.Load())
	}
}

// TestAdvCHandOffToClosedOwnerRetries: a RemoteFirst caller's process
// closes while a listener runs its task (MaxAttempts 1). The run fails:
// die hands the task to the closed caller (fb is still set), nobody runs
// the hand-off, its claim lapses and the reaper queues the task again as
// a lost claim: a listener runs the failed task a second time — one more
// attempt than WithMaxAttempts allows — before it is a dead letter, and
// waiters wait a visibility timeout longer.
func TestAdvCHandOffToClosedOwnerRetries(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	vis := 300 * time.Millisecond
	var runs atomic.Int64
	release := make(chan struct{})
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if runs.Add(1) == 1 {
				<-release
			}
			return nil, errors.New("boom")
		}))
	listenCtx(t, w, []string{"job"}, 1)
	owner := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return "local", nil }))
	var wg sync.WaitGroup
	wg.Add(1)
	var qerr error
	go func() {
		defer wg.Done()
		_, qerr = owner.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
			taskqueue.WithFallbackAfter(5*time.Second), taskqueue.WithTimeout(10*time.Second))
	}()
	waitUntil(t, 5*time.Second, "the listener's run", func() bool { return runs.Load() == 1 })
	_ = owner.Close()
	wg.Wait()
	close(release)
	obs := advQueue(t, e, redistest.Client(t))
	start := time.Now()
	task, err := obs.Wait(ctx, "X")
	took := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	if runs.Load() != 1 {
		st := taskqueue.State("")
		if task != nil {
			st = task.State
		}
		t.Errorf("MaxAttempts 1, caller closed (%v) while the listener ran: the function ran %d times; the task ended %s (%v) after %v; want one run, then a dead letter",
			qerr, runs.Load(), st, err, took.Round(time.Millisecond))
	}
}
