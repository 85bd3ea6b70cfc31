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

// loadAll loads every script on the shared server (a private server would
// do the same), so EVALSHA runs at the first try.
func loadAll(t *testing.T) {
	t.Helper()
	// Running the test suite's TestPolicies-like operations loads them all;
	// simplest: a throw-away queue that exercises every script.
	ns := redistest.Namespace(t)
	c := redistest.Client(t)
	fn := taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		_ = task.Update(ctx, 1, 2)
		if task.Name == "fail" {
			return nil, errors.New("x")
		}
		return "ok", nil
	})
	q, err := taskqueue.New(c, ns, fn)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := ctxT(t, 10*time.Second)
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- q.Listen(lctx, []string{"w"}, 1) }()
	_, _ = q.Query(ctx, "l1", "w", nil, taskqueue.WithPolicy(taskqueue.Remote))
	_, _ = q.Query(ctx, "l2", "fail", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(time.Millisecond))
	_, _ = q.Wait(ctx, "l1") // look.lua
	_, _ = q.Stats(ctx)
	_, _ = q.Cancel(ctx, "none")
	_ = q.Requeue(ctx, "none")
	stop()
	<-done
	for _, n := range []string{"submit.lua", "claim.lua", "extend.lua", "complete.lua", "progress.lua", "look.lua", "cancel.lua", "steal.lua", "requeue.lua", "stats.lua"} {
		ok, err := c.ScriptExists(ctx, taskqueue.ScriptHash(n)).Result()
		if err != nil || !ok[0] {
			t.Fatalf("script %s not loaded (%v)", n, err)
		}
	}
}

func newResetQueue(t *testing.T, ns string, d *advaResetDialer, opts ...taskqueue.Option) *taskqueue.Queue {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Dialer: d.dial})
	t.Cleanup(func() { _ = c.Close() })
	q, err := taskqueue.New(c, ns, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// TestAdvAResentSubmitStrandsLocalRun: Query(Local) sends submit.lua, which
// creates the task and claims it for this Queue value (mode "l"). The
// connection breaks after Redis ran it (a reset; a CLIENT KILL at that
// moment): go-redis resends the command (MaxRetries, on by default), and
// the second copy finds the task existing and answers {"join","active"}.
// Query then waits as a joiner for a task that is claimed by itself and
// that nobody runs: the local run never starts, nothing heartbeats or
// reaps the claim (there is no listener), and the Query ends with
// ErrTimeout after its whole timeout. Submit, being the same script,
// reports created=false for a task it created.
func TestAdvAResentSubmitStrandsLocalRun(t *testing.T) {
	loadAll(t)
	for _, batching := range []int{0, taskqueue.DefaultBatching} {
		t.Run(fmt.Sprint("batching=", batching), func(t *testing.T) {
			t.Parallel()
			ns := redistest.Namespace(t)
			d := newResetDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "victim"))
			var ran atomic.Int64
			q := newResetQueue(t, ns, d, taskqueue.WithBatching(batching), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				ran.Add(1)
				return "local", nil
			}))
			ctx := ctxT(t, 10*time.Second)
			if _, err := q.Query(ctx, "warm", "job", nil, taskqueue.WithPolicy(taskqueue.Local)); err != nil {
				t.Fatal(err)
			}
			d.armed.Store(true)
			start := time.Now()
			task, err := q.Query(ctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
			if !d.didFire() {
				t.Fatal("the connection did not break")
			}
			got, _ := q.GetTask(ctx, "victim")
			if err != nil || ran.Load() != 2 { // the warm-up and the victim
				t.Fatalf("Query(Local) whose submit was resent after a connection reset: %v after %v, the local function ran %d times; task in Redis: state %s owner-claimed, deliveries %d; want the result of one local run",
					err, time.Since(start).Round(time.Millisecond), ran.Load()-1, got.State, got.Deliveries)
			}
			_ = task
		})
	}
}

// TestAdvAResentSubmitLosesRemoteFirstFallback: the same resend for a
// RemoteFirst query with no listener: the second copy answers "join", so
// the Query waits as a joiner (owner=false) — no fallback to a local run,
// and no cancellation when it gives up: it times out after its whole
// timeout and leaves the task pending in the queue.
func TestAdvAResentSubmitLosesRemoteFirstFallback(t *testing.T) {
	loadAll(t)
	ns := redistest.Namespace(t)
	d := newResetDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "victim"))
	var ran atomic.Int64
	q := newResetQueue(t, ns, d, taskqueue.WithBatching(0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		ran.Add(1)
		return "local", nil
	}))
	ctx := ctxT(t, 10*time.Second)
	if _, err := q.Query(ctx, "warm", "job", nil, taskqueue.WithPolicy(taskqueue.Local)); err != nil {
		t.Fatal(err)
	}
	ran.Store(0)
	d.armed.Store(true)
	start := time.Now()
	_, err := q.Query(ctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
		taskqueue.WithFallbackAfter(100*time.Millisecond), taskqueue.WithTimeout(3*time.Second))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	got, _ := q.GetTask(ctx, "victim")
	if err != nil || ran.Load() != 1 {
		t.Fatalf("RemoteFirst (fallback 100ms, no listener) whose submit was resent: %v after %v, %d local runs; task left %s; want the local fallback's result",
			err, time.Since(start).Round(time.Millisecond), ran.Load(), got.State)
	}
}

// TestAdvAResentStealStrandsFallback: RemoteFirst, no listener: at the
// fallback point steal.lua claims the task for the caller; its reply is
// lost and the resent copy answers {"active"} (the caller's own claim), so
// the caller waits for "the listener that started it" — there is none. The
// task stays claimed by nobody running it until the Query times out.
func TestAdvAResentStealStrandsFallback(t *testing.T) {
	loadAll(t)
	ns := redistest.Namespace(t)
	d := newResetDialer(hasAll(taskqueue.ScriptHash("steal.lua"), "victim"))
	var ran atomic.Int64
	q := newResetQueue(t, ns, d, taskqueue.WithBatching(0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		ran.Add(1)
		return "local", nil
	}))
	ctx := ctxT(t, 10*time.Second)
	d.armed.Store(true)
	start := time.Now()
	_, err := q.Query(ctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
		taskqueue.WithFallbackAfter(100*time.Millisecond), taskqueue.WithTimeout(3*time.Second))
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	got, _ := q.GetTask(ctx, "victim")
	if err != nil || ran.Load() != 1 {
		t.Fatalf("RemoteFirst whose fallback steal was resent: %v after %v, %d local runs; task left %s; want the local fallback's result",
			err, time.Since(start).Round(time.Millisecond), ran.Load(), got.State)
	}
}

// TestAdvAResentClaimOrphansTasks: a listener's claim.lua runs (the task
// becomes active for the listener) but its reply is lost; go-redis resends
// it and the second copy claims nothing. The claimed task never runs: no
// run holds it, so nothing heartbeats it, and it sits until its claim
// runs out and is reaped as if its worker had died — counted as a lost
// claim. With WithMaxLost(1) it becomes a dead letter ("worker lost 1
// times") without ever having run; with the defaults it waits the
// visibility timeout (10 s) for nothing.
func TestAdvAResentClaimOrphansTasks(t *testing.T) {
	loadAll(t)
	ns := redistest.Namespace(t)
	d := newResetDialer(hasAll(taskqueue.ScriptHash("claim.lua")))
	var ran atomic.Int64
	w := newResetQueue(t, ns, d, taskqueue.WithBatching(0), taskqueue.WithVisibilityTimeout(300*time.Millisecond), taskqueue.WithMaxLost(1),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "ran", nil
		}))
	listen(t, w, []string{"job"}, 2)
	producer := newResetQueue(t, ns, newResetDialer(func([]byte) bool { return false }))
	ctx := ctxT(t, 10*time.Second)
	time.Sleep(100 * time.Millisecond) // the listener blocks on the doorbell
	d.armed.Store(true)
	if _, err := producer.Submit(ctx, "victim", "job", nil); err != nil {
		t.Fatal(err)
	}
	task, err := producer.Wait(ctx, "victim")
	if !d.didFire() {
		t.Fatal("the connection did not break")
	}
	if err != nil || ran.Load() != 1 {
		t.Fatalf("a task whose claim reply was lost: %v (state %s, %d runs, deliveries %d, error %q); want it run", err, task.State, ran.Load(), task.Deliveries, task.Error)
	}
}

// TestAdvAResentAnswers: resent cancel/requeue/submit scripts answer about
// their own first copy: Cancel reports false for a task it cancelled,
// Requeue an error for a dead letter it queued again, Submit created=false
// for a task it created.
func TestAdvAResentAnswers(t *testing.T) {
	loadAll(t)
	ns := redistest.Namespace(t)
	ctx := ctxT(t, 10*time.Second)
	var problems []string

	d := newResetDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "s1"))
	q := newResetQueue(t, ns, d, taskqueue.WithBatching(0))
	d.armed.Store(true)
	created, err := q.Submit(ctx, "s1", "nobody", nil)
	if d.didFire() && (!created || err != nil) {
		got, _ := q.GetTask(ctx, "s1")
		problems = append(problems, fmt.Sprintf("Submit of a new id: created=%v err=%v, but it created the task (state %s)", created, err, got.State))
	}

	d2 := newResetDialer(hasAll(taskqueue.ScriptHash("cancel.lua"), "s1"))
	q2 := newResetQueue(t, ns, d2, taskqueue.WithBatching(0))
	d2.armed.Store(true)
	ok, err := q2.Cancel(ctx, "s1")
	if d2.didFire() && (!ok || err != nil) {
		got, _ := q2.GetTask(ctx, "s1")
		problems = append(problems, fmt.Sprintf("Cancel of a pending task: %v %v, but it cancelled it (state %s)", ok, err, got.State))
	}

	// A dead letter to requeue.
	w := newResetQueue(t, ns, newResetDialer(func([]byte) bool { return false }), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		return nil, errors.New("boom")
	}))
	lctx, stop := context.WithCancel(ctx)
	ldone := make(chan error, 1)
	go func() { ldone <- w.Listen(lctx, []string{"dies"}, 1) }()
	if _, err := q2.Query(ctx, "r1", "dies", nil, taskqueue.WithPolicy(taskqueue.Remote)); err == nil {
		t.Fatal("want a dead letter")
	}
	stop()
	<-ldone
	d3 := newResetDialer(hasAll(taskqueue.ScriptHash("requeue.lua"), "r1"))
	q3 := newResetQueue(t, ns, d3, taskqueue.WithBatching(0))
	d3.armed.Store(true)
	err = q3.Requeue(ctx, "r1")
	if d3.didFire() && err != nil {
		got, _ := q3.GetTask(ctx, "r1")
		problems = append(problems, fmt.Sprintf("Requeue of a dead letter: %v, but it queued it again (state %s)", err, got.State))
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestAdvALostSubmitReplyPoisonsLocalID: without resends (MaxRetries -1) a
// Query(Local) whose submit reply is lost fails with the network error —
// but Redis ran submit.lua: the task exists, claimed for the caller's Queue
// value, and nothing runs it. Only listeners reap lapsed claims, and Local
// tasks of a name nobody listens to have none, so the claim never lapses
// into anything: the caller's retry of the same id joins that dead claim and
// times out, and so does every query of the id until the record expires
// (2 × timeout + 60 s).
func TestAdvALostSubmitReplyPoisonsLocalID(t *testing.T) {
	loadAll(t)
	ns := redistest.Namespace(t)
	d := newResetDialer(hasAll(taskqueue.ScriptHash("submit.lua"), "victim"))
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(t), Dialer: d.dial, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	var ran atomic.Int64
	q, err := taskqueue.New(c, ns, taskqueue.WithBatching(0), taskqueue.WithVisibilityTimeout(300*time.Millisecond),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			ran.Add(1)
			return "local", nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := ctxT(t, 10*time.Second)
	d.armed.Store(true)
	_, err = q.Query(ctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(2*time.Second))
	if !d.didFire() || err == nil {
		t.Fatalf("the submit did not fail (%v)", err)
	}
	t.Logf("first Query: %v", err)
	start := time.Now()
	_, err = q.Query(ctx, "victim", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(2*time.Second))
	got, _ := q.GetTask(ctx, "victim")
	ttl := c.PTTL(ctx, taskqueue.TaskKey(q, "victim")).Val()
	if err != nil || ran.Load() != 1 {
		t.Fatalf("retrying Query(Local) of the id after a lost submit reply: %v after %v, %d runs; the task stays %s (claimed, nobody runs it) for another %v",
			err, time.Since(start).Round(time.Millisecond), ran.Load(), got.State, ttl.Round(time.Second))
	}
}
