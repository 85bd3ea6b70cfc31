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

// TestAdvCResentSubmitAfterHandOff (held): Auto with a live listener; the
// submit's reply is lost and, before the resend, the listener runs the
// task, fails and hands it to the caller. The resend answers "q"; the
// caller reads the hand-off (its "o" message) and runs the task locally.
func TestAdvCResentSubmitAfterHandOff(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	var remote, local atomic.Int64
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		remote.Add(1)
		return nil, errors.New("remote failed")
	}))
	listenCtx(t, w, []string{"job"}, 1)
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "|t|X"))
	d.during = func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if cn, _ := w.Raw().HGet(context.Background(), taskqueue.TaskKey(w, "X"), "cn").Result(); cn == "handed" {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	owner := advQueue(t, e, advcClient(t, d, 0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		local.Add(1)
		return "local", nil
	}))
	d.armed.Store(true)
	task, err := owner.Query(ctx, "X", "job", nil, taskqueue.WithFallbackAfter(5*time.Second), taskqueue.WithTimeout(8*time.Second))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	if err != nil || string(task.Result) != `"local"` || remote.Load() != 1 || local.Load() != 1 {
		t.Errorf("Auto whose submit was resent after the hand-off: %v, %d remote, %d local runs", err, remote.Load(), local.Load())
	}
}

// TestAdvCResentCompleteAfterConsume (held): a local run's complete
// stores the result; its reply is lost and, before the resend, another
// process consumes the result WithOnce and a third queries the id again
// (a new incarnation, running). The resend answers "lost" (the record is
// another one): the caller waits as a joiner of its incarnation and finds
// it in T|g|.
func TestAdvCResentCompleteAfterConsume(t *testing.T) {
	loadAll(t)
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	other := advQueue(t, e, redistest.Client(t))
	third := advQueue(t, e, redistest.Client(t))
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("complete.lua"), "|t|X"))
	d.during = func() {
		_, _ = other.Wait(context.Background(), "X", taskqueue.WithOnce())
		_, _ = third.Submit(context.Background(), "X", "nobody", nil)
	}
	q := advQueue(t, e, advcClient(t, d, 0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		return "mine", nil
	}))
	d.armed.Store(true)
	task, err := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	if err != nil || string(task.Result) != `"mine"` {
		t.Errorf("local run whose complete was resent after a consume and a new incarnation: %v %v", task, err)
	}
}

// TestAdvCRetryDoorbell (held): a failed attempt is retried about its
// back-off later, also when the listener that could run it is blocked on
// its doorbell with a long wait (the retry doorbell rings it).
func TestAdvCRetryDoorbell(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	var starts []time.Time
	var runs atomic.Int64
	startsCh := make(chan time.Time, 10)
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithRetryBackoff(func(int) time.Duration { return 300 * time.Millisecond }),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			startsCh <- time.Now()
			if runs.Add(1) == 1 {
				return nil, errors.New("first fails")
			}
			return "ok", nil
		}))
	listenCtx(t, w, []string{"job"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(2)); err != nil {
		t.Fatal(err)
	}
	starts = append(starts, <-startsCh, <-startsCh)
	if gap := starts[1].Sub(starts[0]); gap > 550*time.Millisecond {
		t.Errorf("retry after a 300 ms back-off started %v after the first attempt", gap)
	}
}

// TestAdvCReleaseStuck (held): a task function that ignores its context
// outlives Listen's shutdown; its claim is released (queued again at the
// front), another listener runs it, the waiter gets that result, and the
// stuck run's late result is refused.
func TestAdvCReleaseStuck(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	release := make(chan struct{})
	defer close(release)
	w1 := advQueue(t, e, redistest.Client(t), taskqueue.WithGracePeriod(100*time.Millisecond),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-release
			return "stuck", nil
		}))
	stop := listenCtx(t, w1, []string{"job"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	res := make(chan *taskqueue.Task, 1)
	go func() {
		task, _ := p.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote))
		res <- task
	}()
	waitUntil(t, 5*time.Second, "X running", func() bool { st, _, _ := advcState(ctx, p, "X"); return st == "active" })
	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	w2 := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		return "second", nil
	}))
	listenCtx(t, w2, []string{"job"}, 1)
	task := <-res
	if task == nil || string(task.Result) != `"second"` || time.Since(start) > 3*time.Second {
		t.Errorf("stuck run released: %v after %v", task, time.Since(start))
	}
}

// TestAdvCNoExtensionPastExpiry (held): a run that outlives its task's
// expiry (its function ignores its context) on a live worker is not run
// again elsewhere: its claim lapses and the task ends expired or dead.
func TestAdvCNoExtensionPastExpiry(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	vis := 300 * time.Millisecond
	ov := newAdvcOverlap()
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		defer ov.enter(task.ID)()
		time.Sleep(1500 * time.Millisecond) // ignores ctx
		return "late", nil
	}
	w1 := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	w2 := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	listenCtx(t, w1, []string{"job"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Submit(ctx, "X", "job", nil, taskqueue.WithTimeout(400*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "X running", func() bool { return ov.runs.Load() == 1 })
	res := make(chan *taskqueue.Task, 1)
	go func() {
		task, _ := p.Wait(ctx, "X")
		res <- task
	}()
	listenCtx(t, w2, []string{"job"}, 1)
	time.Sleep(2 * time.Second)
	got := <-res
	if ov.runs.Load() != 1 || got == nil || !got.State.Terminal() {
		t.Errorf("a run past its task's expiry: %d runs, task %v", ov.runs.Load(), got)
	} else {
		t.Logf("ended %s (%s)", got.State, got.Error)
	}
}

// TestAdvCSlowHeartbeatOverlap: the worker is alive and not paused, but
// one heartbeat round trip is slow (600 ms, within the heartbeat's own
// timeout of a visibility timeout). The claim lapses meanwhile and another
// listener reaps and runs the task; the first run's context is cancelled
// only when the slow heartbeat returns ("lost"), so both run at once.
// The runner could end its runs locally once a visibility timeout passed
// since its last successful heartbeat was sent, without waiting for the
// reply.
func TestAdvCSlowHeartbeatOverlap(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	vis := 300 * time.Millisecond
	ov := newAdvcOverlap()
	var started atomic.Int64
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		started.Add(1)
		defer ov.enter(task.ID)()
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(2 * time.Second):
		}
		return "ok", nil
	}
	var on atomic.Bool
	hook := delayHook{on: &on, d: 600 * time.Millisecond, shas: map[string]bool{taskqueue.AdvBScriptHash("extend"): true}}
	w1 := advQueue(t, e, hookedClient(t, hook), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	listenCtx(t, w1, []string{"job"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Submit(ctx, "X", "job", nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "X running", func() bool { return started.Load() == 1 })
	w2 := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	listenCtx(t, w2, []string{"job"}, 1)
	on.Store(true)
	time.Sleep(time.Second)
	on.Store(false)
	if ov.overlaps.Load() > 0 {
		t.Errorf("one heartbeat of a live worker took 600 ms (visibility 300 ms): %d runs of X overlapped (%d runs)", ov.overlaps.Load(), ov.runs.Load())
	}
}

// TestAdvCNoRetrySubmitGivesBack (held): MaxRetries -1; a Query's submit
// ran but its reply was lost: the Query fails, gives the task back (cancel
// with its incarnation), and a retry of the Query runs the task.
func TestAdvCNoRetrySubmitGivesBack(t *testing.T) {
	loadAll(t)
	for _, pol := range []taskqueue.Policy{taskqueue.Local, taskqueue.RemoteFirst, taskqueue.Auto, taskqueue.LocalFirst} {
		t.Run(pol.String(), func(t *testing.T) {
			t.Parallel()
			e := advSingle(t)
			ctx := ctxT(t, 15*time.Second)
			d := newAdvcDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "|t|X"))
			var ran atomic.Int64
			q := advQueue(t, e, advcClient(t, d, -1), taskqueue.WithVisibilityTimeout(300*time.Millisecond),
				taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					ran.Add(1)
					return "local", nil
				}))
			d.armed.Store(true)
			_, err1 := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(pol), taskqueue.WithFallbackAfter(50*time.Millisecond), taskqueue.WithTimeout(2*time.Second))
			if !d.didFire() || err1 == nil {
				t.Fatalf("setup: %v", err1)
			}
			st, _, _ := advcState(ctx, q, "X")
			task, err := q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(pol), taskqueue.WithFallbackAfter(50*time.Millisecond), taskqueue.WithTimeout(2*time.Second))
			if err != nil || string(task.Result) != `"local"` || ran.Load() != 1 {
				t.Errorf("%v: after a lost submit reply (task left %s) the retry: %v, %d runs", pol, st, err, ran.Load())
			}
		})
	}
}

// TestAdvCRequeueDuringOnceRead (held): a WithOnce query finds a dead
// letter; while its consuming read is slow, the dead letter is queued
// again and run to Done. The once read then consumes (and returns) the new
// result, and a Wait registered for the requeued run still gets it (from
// the message, or from T|g|).
func TestAdvCRequeueDuringOnceRead(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	var runs atomic.Int64
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		if runs.Add(1) == 1 {
			return nil, errors.New("first fails")
		}
		return advcBig, nil
	}))
	listenCtx(t, w, []string{"job"}, 1)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote)); err == nil {
		t.Fatal("want a dead letter")
	}
	var on atomic.Bool
	hook := delayHook{on: &on, d: 700 * time.Millisecond, shas: map[string]bool{taskqueue.AdvBScriptHash("look"): true}}
	a := advQueue(t, e, hookedClient(t, hook))
	on.Store(true)
	aRes := make(chan *taskqueue.Task, 1)
	go func() {
		task, _ := a.Query(ctx, "X", "job", nil, taskqueue.WithOnce())
		aRes <- task
	}()
	time.Sleep(100 * time.Millisecond)
	if err := p.Requeue(ctx, "X"); err != nil {
		t.Fatal(err)
	}
	b := advQueue(t, e, redistest.Client(t))
	bTask, bErr := b.Wait(ctx, "X")
	aTask := <-aRes
	if bErr != nil || len(bTask.Result) != len(advcBig)+2 || aTask == nil {
		t.Errorf("once read during a requeue: A %v; B %v", aTask, bErr)
	}
}
