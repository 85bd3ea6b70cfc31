package taskqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// The lapsed-claim path of submit.lua: a Query(Local) (or Auto with no
// listener) of an id whose task is active but whose claim lapsed (its
// process hung; no listener reaps it) claims that task for a local run.

// TestAdvCLapsedJoinRunsCallersNameAndParams: the joiner runs the existing
// task, but Query builds the local task from the *caller's* name and
// params (localTask(id, name, p, rest)), not the record's: the function
// runs another task's body under the id, and the result is stored as the
// first task's result for its waiters.
func TestAdvCLapsedJoinRunsCallersNameAndParams(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	advcStall(t, e, "X", "job", map[string]string{"who": "A"}, vis)
	var gotName string
	var gotParams json.RawMessage
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			gotName, gotParams = task.Name, task.Params
			return "B ran " + task.Name, nil
		}))
	ctx := ctxT(t, 10*time.Second)
	task, err := b.Query(ctx, "X", "other", map[string]string{"who": "B"}, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	rec, _ := b.GetTask(ctx, "X")
	if gotName != "job" || string(gotParams) != `{"who":"A"}` {
		t.Errorf("a Query(Local) that took over the lapsed task X (name job, params {\"who\":\"A\"}) ran the function with name %q params %s; "+
			"the record says name %q, params %s, result %s: the caller's name and params were run under another task's id (a join must ignore them)",
			gotName, gotParams, rec.Name, rec.Params, task.Result)
	}
}

// TestAdvCLapsedJoinWithOtherNameRunsTwice: the same take-over with a
// different name: the local run's heartbeat extends T|a|<caller's name>
// (ZADD XX: a no-op), never T|a|job where submit put the claim, so the
// claim of a task that runs on a live, heartbeating process lapses after
// the visibility timeout; a listener of "job" reaps it and runs the task a
// second time while the first run is still going.
func TestAdvCLapsedJoinWithOtherNameRunsTwice(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	advcStall(t, e, "X", "job", nil, vis)
	ov := newAdvcOverlap()
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		defer ov.enter(task.ID)()
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(1500 * time.Millisecond):
		}
		return "ok", nil
	}
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	ctx := ctxT(t, 15*time.Second)
	res := make(chan error, 1)
	go func() {
		_, err := b.Query(ctx, "X", "other", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(5*time.Second))
		res <- err
	}()
	waitUntil(t, 3*time.Second, "B's local run", func() bool { return ov.runs.Load() == 1 })
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	listen(t, w, []string{"job"}, 1)
	err := <-res
	time.Sleep(200 * time.Millisecond)
	if ov.overlaps.Load() > 0 || ov.runs.Load() != 1 {
		t.Errorf("task X ran %d times, %d of them overlapping a live heartbeating run (B's Query: %v); want one run", ov.runs.Load(), ov.overlaps.Load(), err)
	}
}

// TestAdvCLapsedJoinResentSubmitStrands: the take-over's reply is lost and
// go-redis resends submit.lua. The resend check (rq == nonce) does not
// recognise the request, because the record's incarnation (rq) is the
// first creator's, so the resend finds the task active under a fresh
// claim (its own) and answers {"join"}: the caller waits as a joiner for
// a claim that it holds and nobody runs or heartbeats; no listener reaps
// it, and the Query times out.
func TestAdvCLapsedJoinResentSubmitStrands(t *testing.T) {
	loadAll(t)
	for _, batching := range []int{0, taskqueue.DefaultBatching} {
		t.Run(map[int]string{0: "batching=0", taskqueue.DefaultBatching: "batching=8"}[batching], func(t *testing.T) {
			e := advSingle(t)
			vis := 300 * time.Millisecond
			advcStall(t, e, "X", "job", nil, vis)
			d := newAdvcDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "|t|X"))
			var ran atomic.Int64
			b, err := taskqueue.New(advcClient(t, d, 0), e.ns, taskqueue.WithBatching(batching), taskqueue.WithVisibilityTimeout(vis),
				taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					ran.Add(1)
					return "B", nil
				}))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			ctx := ctxT(t, 10*time.Second)
			d.armed.Store(true)
			start := time.Now()
			_, err = b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(2*time.Second))
			if !d.didFire() {
				t.Fatal("the connection did not break")
			}
			st, owner, _ := advcState(ctx, b, "X")
			if err != nil || ran.Load() != 1 {
				t.Errorf("Query(Local) taking over a lapsed claim, its submit resent: %v after %v, %d local runs; task left %s owned by the caller itself (%v); want one local run and its result",
					err, time.Since(start).Round(time.Millisecond), ran.Load(), st, owner == taskqueue.ID(b))
			}
		})
	}
}

// TestAdvCLapsedJoinInheritsCancel (held): task X's caller cancelled it
// (Cancel: "signalled", c=1) while its worker hung; the claim lapses and a
// new Query(Local) of X takes the lapsed task over. claim_for resets c, so
// the new caller's run is not cancelled by the stale request: it gets its
// result. (The stale cancel request is dropped rather than ending the old
// incarnation Cancelled as claim.lua's reaper would; the new caller wants
// a result either way.)
func TestAdvCLapsedJoinInheritsCancel(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	a := advcStall(t, e, "X", "job", nil, vis)
	ctx := ctxT(t, 10*time.Second)
	if ok, err := a.Cancel(ctx, "X"); !ok || err != nil {
		t.Fatalf("Cancel: %v %v", ok, err)
	}
	var ran atomic.Int64
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			select {
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			case <-time.After(600 * time.Millisecond):
			}
			return "B", nil
		}))
	task, err := b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if err != nil {
		st := taskqueue.State("")
		if task != nil {
			st = task.State
		}
		t.Errorf("a new Query(Local) of X after X was cancelled (its worker hung): %v (state %q, %d runs); want a fresh run's result", err, st, ran.Load())
	}
}

// TestAdvCLapsedJoinRunsExpiredTask: the hung task's expiry passed too.
// The new Query(Local), with its own timeout of seconds, takes over the
// expired task instead of replacing it (submit replaces expired records,
// but this one is still "active"): its function starts with its context
// already ended (ErrExpired) — "it never starts afterwards" — and the
// Query fails at once.
func TestAdvCLapsedJoinRunsExpiredTask(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	advcStall(t, e, "X", "job", nil, vis, taskqueue.WithTimeout(400*time.Millisecond))
	time.Sleep(500 * time.Millisecond) // past X's expiry
	var startedDone atomic.Int64
	var ran atomic.Int64
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			if ctx.Err() != nil {
				startedDone.Add(1)
				return nil, context.Cause(ctx)
			}
			return "B", nil
		}))
	ctx := ctxT(t, 10*time.Second)
	task, err := b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if err != nil || startedDone.Load() > 0 {
		st := taskqueue.State("")
		if task != nil {
			st = task.State
		}
		t.Errorf("Query(Local, timeout 3s) of an id whose hung task expired: %v (state %q); the function ran %d times, %d of them started with its context already ended; want a fresh task run to its result",
			err, st, ran.Load(), startedDone.Load())
	}
}

// TestAdvCLapsedSubmitLeavesActiveEntry: a Submit (mode "q") of an id
// whose claim lapsed queues the task again (pending, in T|q|) but leaves
// its entry in T|a|: the task is listed as both pending and running
// (Stats counts it twice), an invariant violation.
func TestAdvCLapsedSubmitLeavesActiveEntry(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	a := advcStall(t, e, "X", "job", nil, vis)
	ctx := ctxT(t, 10*time.Second)
	p := advQueue(t, e, redistest.Client(t))
	if _, err := p.Submit(ctx, "X", "job", nil); err != nil {
		t.Fatal(err)
	}
	st, _ := p.Stats(ctx, "job")
	problems, err := invariants(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 || st[0].Pending+st[0].Running != 1 {
		t.Errorf("after a Submit re-queued a lapsed task: Stats pending %d running %d (one task); invariants: %v", st[0].Pending, st[0].Running, problems)
	}
}

// TestAdvCLapsedJoinerCancelsForEveryone: B's Query(Local) takes over the
// lapsed task X that another caller created and others wait for (a Wait in
// process C). B's own timeout is short; when it passes, runHere records
// the outcome "cancel": the task ends Cancelled for every waiter, though
// B merely joined it ("a Query that joined one just stops waiting").
func TestAdvCLapsedJoinerCancelsForEveryone(t *testing.T) {
	e := advSingle(t)
	vis := 300 * time.Millisecond
	advcStall(t, e, "X", "job", nil, vis)
	ctx := ctxT(t, 10*time.Second)
	c := advQueue(t, e, redistest.Client(t))
	waitRes := make(chan *taskqueue.Task, 1)
	var waitErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		task, err := c.Wait(wctx, "X")
		waitErr = err
		waitRes <- task
	}()
	waitUntil(t, 3*time.Second, "C registered", func() bool { return registered(ctx, c, c, "X") })
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}))
	_, berr := b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(300*time.Millisecond))
	wg.Wait()
	task := <-waitRes
	if errors.Is(waitErr, taskqueue.ErrCancelled) || task != nil && task.State == taskqueue.Cancelled {
		t.Errorf("B joined X (lapsed) and its own timeout passed (%v): X ended Cancelled for C's Wait (%v); a joiner's timeout must not cancel the task", berr, waitErr)
	}
}
