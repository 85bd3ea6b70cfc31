package taskqueue_test

// Adversarial tests (round B) that are expected to FAIL against the code
// under test: each one shows a contract violation. See the report for the
// diagnosis of each.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// failFn fails every run with msg.
func failFn(msg string) taskqueue.TaskFunc {
	return func(ctx context.Context, t *taskqueue.Task) (any, error) { return nil, errors.New(msg) }
}

// okFn returns s.
func okFn(s string) taskqueue.TaskFunc {
	return func(ctx context.Context, t *taskqueue.Task) (any, error) { return s, nil }
}

// D1. RemoteFirst (and Auto) with WithOnce: the remote run fails, so the
// query should fall back to the local run, as it does without WithOnce.
// The once-read of the dead record deletes it before the take-over, which
// then finds nothing.
func TestAdvBRemoteFirstOnceRemoteFails(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(failFn("remote trouble")))
		caller := e.queue(t, taskqueue.WithTaskFunc(okFn("local")))
		listen(t, worker, []string{"job"}, 1)
		ctx := ctxT(t, 20*time.Second)
		for _, p := range []taskqueue.Policy{taskqueue.RemoteFirst, taskqueue.Auto} {
			id := "once-" + p.String()
			task, err := caller.Query(ctx, id, "job", nil, taskqueue.WithPolicy(p), taskqueue.WithOnce(),
				taskqueue.WithFallbackAfter(10*time.Second))
			if err != nil {
				t.Errorf("%s + WithOnce, remote run failed: got %v; want the local fallback's result \"local\" (as without WithOnce)", p, err)
				continue
			}
			if result(t, task) != "local" {
				t.Errorf("%s + WithOnce: result %s", p, task.Result)
			}
		}
		// The control: without WithOnce the fallback works.
		if task, err := caller.Query(ctx, "no-once", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst)); err != nil || result(t, task) != "local" {
			t.Fatalf("control without once: %v", err)
		}
	})
}

// D2. Duplicate ids: a second caller waiting for a RemoteFirst task (Wait,
// or a joining Query) returns the transient Dead state of the failed
// remote attempt, while the owner takes the task over, runs it locally and
// it ends Done. Two callers of one task id see two different outcomes.
func TestAdvBJoinerSeesTransientDead(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		started, release := make(chan struct{}, 1), make(chan struct{})
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-release
			return nil, errors.New("remote trouble")
		}))
		owner := e.queue(t, taskqueue.WithTaskFunc(okFn("local")))
		other := e.queue(t)
		listen(t, worker, []string{"job"}, 1)
		ctx := ctxT(t, 20*time.Second)
		ownerDone := make(chan error, 1)
		go func() {
			task, err := owner.Query(ctx, "dup", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(10*time.Second))
			if err == nil && result(t, task) != "local" {
				err = fmt.Errorf("owner result %s", task.Result)
			}
			ownerDone <- err
		}()
		<-started
		waitDone := make(chan *taskqueue.Task, 1)
		waitErr := make(chan error, 1)
		go func() {
			task, err := other.Wait(ctx, "dup")
			waitDone <- task
			waitErr <- err
		}()
		waitUntil(t, 5*time.Second, "the waiter registered", func() bool { return registered(ctx, owner, other, "dup") })
		close(release)
		if err := <-ownerDone; err != nil {
			t.Fatalf("owner: %v", err)
		}
		final, err := owner.GetTask(ctx, "dup")
		if err != nil || final.State != taskqueue.Done {
			t.Fatalf("final record: %v %+v", err, final)
		}
		task, err := <-waitDone, <-waitErr
		if err != nil || task == nil || task.State != taskqueue.Done {
			t.Fatalf("the other caller of task \"dup\" got %v (state %v); the task ended %s with result %s: every caller of an id should see its one outcome",
				err, stateOf(task), final.State, final.Result)
		}
	})
}

func stateOf(t *taskqueue.Task) taskqueue.State {
	if t == nil {
		return ""
	}
	return t.State
}

// D3. Close while a Local query runs its task: waiting calls should return
// ErrClosed. The local run's context is cancelled (cause ErrClosed) and the
// run is recorded as a task failure: the Query returns a *TaskError (state
// failed, message "context canceled"), and the record stays failed, so a
// later Query of the id from another process gets that failure instead of
// running the task.
func TestAdvBCloseDuringLocalRun(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		started := make(chan struct{})
		q := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}))
		ctx := ctxT(t, 20*time.Second)
		errc := make(chan error, 1)
		go func() {
			_, err := q.Query(ctx, "closing", "job", nil, taskqueue.WithPolicy(taskqueue.Local))
			errc <- err
		}()
		<-started
		_ = q.Close()
		err := <-errc
		other := e.queue(t, taskqueue.WithTaskFunc(okFn("again")))
		got, gerr := other.GetTask(ctx, "closing")
		if !errors.Is(err, taskqueue.ErrClosed) {
			t.Errorf("Query during Close: %v; want ErrClosed (record: state %v err %q, %v)", err, stateOf(got), errOf(got), gerr)
		}
		if gerr == nil && got.State == taskqueue.Failed {
			_, qerr := other.Query(ctx, "closing", "job", nil, taskqueue.WithPolicy(taskqueue.Local))
			t.Errorf("Close recorded the local run as a task failure (%q); a later Query of the id in another process returns %v", got.Error, qerr)
		}
	})
}

func errOf(t *taskqueue.Task) string {
	if t == nil {
		return ""
	}
	return t.Error
}

// D4. A result above the 64 KiB inline limit, read with WithOnce by a Wait
// while the Query that created the task also waits (same process): the
// Query must read the record itself, and finds it deleted: ErrNotFound
// although its task finished Done. (With a small result the Query gets it
// from the message, so the outcome depends on the result's size.) The
// hook only makes the Query's read come second, as it may anyway.
func TestAdvBOnceWaitTakesLargeResultFromQuery(t *testing.T) {
	e := advSingle(t)
	var slow atomic.Bool
	c := hookedClient(t, delayHook{on: &slow, d: 300 * time.Millisecond, marked: true})
	big := strings.Repeat("x", 70_000)
	release := make(chan struct{})
	worker := advQueue(t, e, hookedClient(t, delayHook{on: new(atomic.Bool)}), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		<-release
		slow.Store(true)
		return big, nil
	}))
	caller := advQueue(t, e, c)
	listen(t, worker, []string{"big"}, 1)
	ctx := ctxT(t, 20*time.Second)
	qctx := context.WithValue(ctx, slowKey{}, true)
	qerr := make(chan error, 1)
	go func() {
		task, err := caller.Query(qctx, "big", "big", nil, taskqueue.WithPolicy(taskqueue.Remote))
		if err == nil && len(task.Result) != len(big)+2 {
			err = fmt.Errorf("result of %d bytes", len(task.Result))
		}
		qerr <- err
	}()
	waitUntil(t, 5*time.Second, "the task pending", func() bool {
		got, err := caller.GetTask(ctx, "big")
		return err == nil && got.State == taskqueue.Active
	})
	werr := make(chan error, 1)
	go func() {
		_, err := caller.Wait(ctx, "big", taskqueue.WithOnce())
		werr <- err
	}()
	time.Sleep(100 * time.Millisecond) // the Wait has read and registered
	close(release)
	if err := <-werr; err != nil {
		t.Fatalf("Wait once: %v", err)
	}
	if err := <-qerr; err != nil {
		t.Fatalf("the Query that created the task (result of %d bytes, finished Done) got %v", len(big)+2, err)
	}
}

// D5. A dead letter read with WithOnce: its record is deleted but its entry
// in the dead letter set stays, so Stats counts a dead letter that
// DeadLetters does not list (until a listener trims it a dead-letter TTL
// later, 7 days by default).
func TestAdvBOnceDeadLetterLeavesStaleCount(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(failFn("boom")))
		caller := e.queue(t)
		listen(t, worker, []string{"job"}, 1)
		ctx := ctxT(t, 20*time.Second)
		_, err := caller.Query(ctx, "d1", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
		if !errors.Is(err, taskqueue.ErrTaskFailed) {
			t.Fatalf("query: %v", err)
		}
		dead, err := caller.DeadLetters(ctx, "job", 100)
		if err != nil {
			t.Fatal(err)
		}
		st, err := caller.Stats(ctx, "job")
		if err != nil {
			t.Fatal(err)
		}
		if int(st[0].Dead) != len(dead) {
			t.Fatalf("after a once-read of a dead letter: Stats says %d dead, DeadLetters lists %d", st[0].Dead, len(dead))
		}
	})
}

// D6. Cancel of a running task whose worker stalled: Cancel reports true
// ("signalled"), but when the stalled worker's claim runs out the task is
// queued again with its cancel flag cleared, and another listener runs it
// to completion. A cancelled task should end Cancelled and never run again.
func TestAdvBCancelForgottenWhenClaimLapses(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		vis := taskqueue.WithVisibilityTimeout(300 * time.Millisecond)
		started, release := make(chan struct{}, 1), make(chan struct{})
		var a *taskqueue.Queue
		a = e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			taskqueue.PauseHeartbeats(a, true) // a long stall (GC, swap, …): it ignores ctx too
			started <- struct{}{}
			<-release
			return "a", nil
		}))
		listen(t, a, []string{"job"}, 1)
		t.Cleanup(func() { close(release) }) // before Listen's cleanup waits for it
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Submit(ctx, "c", "job", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		if ok, err := caller.Cancel(ctx, "c"); !ok || err != nil {
			t.Fatalf("Cancel: %v %v", ok, err)
		}
		time.Sleep(600 * time.Millisecond) // the stalled claim runs out
		var bRuns atomic.Int64
		b := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			bRuns.Add(1)
			return "b", nil
		}))
		listen(t, b, []string{"job"}, 1)
		time.Sleep(time.Second)
		got, err := caller.GetTask(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		if bRuns.Load() != 0 || got.State != taskqueue.Cancelled {
			t.Fatalf("task cancelled (Cancel returned true) while its worker stalled: ran again %d times on another listener, ended %s with result %s",
				bRuns.Load(), got.State, got.Result)
		}
	})
}

// D7. Auto (and RemoteFirst): the only listener claimed the task before
// the fallback point and then stopped (its run interrupted and queued
// again, as documented) — the task is pending, no listener is alive, and
// the caller has a task function. The caller no longer falls back: it
// waits out its whole timeout and the task ends cancelled.
func TestAdvBAutoFallbackAfterListenerLeft(t *testing.T) {
	for _, p := range []taskqueue.Policy{taskqueue.Auto, taskqueue.RemoteFirst} {
		t.Run(p.String(), func(t *testing.T) {
			forTargets(t, func(t *testing.T, tg target) {
				e := tg.env(t)
				started := make(chan struct{}, 1)
				worker := e.queue(t, taskqueue.WithGracePeriod(0), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					started <- struct{}{}
					<-ctx.Done()
					return nil, context.Cause(ctx)
				}))
				caller := e.queue(t, taskqueue.WithTaskFunc(okFn("local")))
				stop := listenCtx(t, worker, []string{"job"}, 1)
				ctx := ctxT(t, 20*time.Second)
				type res struct {
					err  error
					took time.Duration
				}
				done := make(chan res, 1)
				go func() {
					start := time.Now()
					_, err := caller.Query(ctx, "t", "job", nil, taskqueue.WithPolicy(p), taskqueue.WithTimeout(5*time.Second),
						taskqueue.WithFallbackAfter(300*time.Millisecond))
					done <- res{err, time.Since(start)}
				}()
				<-started
				time.Sleep(500 * time.Millisecond) // past the fallback point: the listener runs it
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				// The task is pending again, and at once taken over by the
				// caller (past its fallback point).
				if st, _ := caller.Stats(ctx, "job"); st[0].Listeners != 0 {
					t.Fatalf("after the listener left: %+v", st)
				}
				r := <-done
				if r.err != nil {
					got, _ := caller.GetTask(ctx, "t")
					t.Fatalf("%s query whose only listener left after starting the task (task requeued, pending): %v after %v (task ends %s); want the local fallback",
						p, r.err, r.took.Round(time.Millisecond), stateOf(got))
				}
			})
		})
	}
}

// D8. After the dead-letter TTL, with no listener running to trim them,
// Stats still counts dead letters whose records are gone; DeadLetters
// lists none.
func TestAdvBDeadLetterCountAfterTTL(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithDeadLetterTTL(time.Second), taskqueue.WithTaskFunc(failFn("boom")))
		caller := e.queue(t, taskqueue.WithDeadLetterTTL(time.Second))
		stop := listenCtx(t, worker, []string{"job"}, 1)
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Query(ctx, "d", "job", nil, taskqueue.WithPolicy(taskqueue.Remote)); !errors.Is(err, taskqueue.ErrTaskFailed) {
			t.Fatal(err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1300 * time.Millisecond)
		dead, err := caller.DeadLetters(ctx, "job", 10)
		if err != nil {
			t.Fatal(err)
		}
		st, err := caller.Stats(ctx, "job")
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 0 || st[0].Dead != 0 {
			t.Fatalf("past the dead-letter TTL: DeadLetters lists %d, Stats counts %d dead", len(dead), st[0].Dead)
		}
	})
}

// D9. Names are data, any bytes: a name that is not valid UTF-8 comes back
// altered in the Task a remote Query returns (the inline message is JSON
// decoded by encoding/json, which replaces invalid bytes with U+FFFD); so
// does the error message of a failed task. GetTask returns them intact.
func TestAdvBNonUTF8NameAndError(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		name := "n\xff\xfe"
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if task.ID == "fail" {
				return nil, errors.New("bad byte \xff")
			}
			return "ok", nil
		}))
		listen(t, worker, []string{name}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		task, err := caller.Query(ctx, "ok", name, nil, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil {
			t.Fatal(err)
		}
		if task.Name != name {
			stored, _ := caller.GetTask(ctx, "ok")
			t.Errorf("Query returned Name %q, stored %q, want %q", task.Name, stored.Name, name)
		}
		_, err = caller.Query(ctx, "fail", name, nil, taskqueue.WithPolicy(taskqueue.Remote))
		var te *taskqueue.TaskError
		if !errors.As(err, &te) {
			t.Fatal(err)
		}
		if te.Message != "bad byte \xff" {
			t.Errorf("TaskError.Message %q, want %q (the worker's error text)", te.Message, "bad byte \xff")
		}
	})
}

// D10. A local run's Task: Deliveries counts "the runs started, including
// the current one", and the record says 1, but the function and the caller
// get 0; the returned Task also lacks Created.
func TestAdvBLocalTaskFields(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		var seen atomic.Int64
		seen.Store(-1)
		q := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			seen.Store(int64(task.Deliveries))
			return "ok", nil
		}))
		ctx := ctxT(t, 10*time.Second)
		task, err := q.Query(ctx, "l", "job", nil, taskqueue.WithPolicy(taskqueue.Local))
		if err != nil {
			t.Fatal(err)
		}
		stored, err := q.GetTask(ctx, "l")
		if err != nil {
			t.Fatal(err)
		}
		if seen.Load() != int64(stored.Deliveries) || task.Deliveries != stored.Deliveries || task.Created.IsZero() != stored.Created.IsZero() {
			t.Fatalf("local run: the function saw Deliveries %d, Query returned Deliveries %d Created %v; the record has Deliveries %d Created %v",
				seen.Load(), task.Deliveries, task.Created, stored.Deliveries, stored.Created)
		}
	})
}

// D11. A listener that stops is withdrawn at once, but a heartbeat that
// was already on its way (it read the names before the withdrawal) lands
// after it and advertises the stopped listener again for a whole
// visibility timeout: Auto then queues tasks for nobody. The hook adds
// 60 ms of latency to heartbeats, as a loaded network would.
func TestAdvBStoppedListenerReadvertised(t *testing.T) {
	e := advSingle(t)
	var on atomic.Bool
	on.Store(true)
	c := hookedClient(t, delayHook{on: &on, d: 60 * time.Millisecond, shas: map[string]bool{taskqueue.AdvBScriptHash("extend"): true}})
	worker := advQueue(t, e, c, taskqueue.WithVisibilityTimeout(600*time.Millisecond), taskqueue.WithTaskFunc(okFn("w")))
	admin := e.queue(t)
	ctx := ctxT(t, 30*time.Second)
	for trial := range 25 {
		stop := listenCtx(t, worker, []string{"job"}, 1)
		time.Sleep(time.Duration(trial*37%200) * time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(150 * time.Millisecond) // any heartbeat in flight has landed
		st, err := admin.Stats(ctx, "job")
		if err != nil {
			t.Fatal(err)
		}
		if st[0].Listeners != 0 {
			t.Fatalf("trial %d: 150ms after Listen returned, the stopped listener is advertised again (%+v)", trial, st[0])
		}
	}
}

// D12. Graceful shutdown with a task function that ignores its context:
// Listen returns after the grace periods, but the process keeps
// heartbeating the task's claim, so the task is neither "queued again for
// another worker" nor redelivered: another listener never gets it while
// the function runs.
func TestAdvBStuckTaskNotRequeuedAfterListenReturns(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		vis := taskqueue.WithVisibilityTimeout(300 * time.Millisecond)
		started, release := make(chan struct{}, 1), make(chan struct{})
		t.Cleanup(func() { close(release) })
		a := e.queue(t, vis, taskqueue.WithGracePeriod(100*time.Millisecond), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-release // ignores ctx
			return "a", nil
		}))
		stop := listenCtx(t, a, []string{"job"}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Submit(ctx, "s", "job", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		begin := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Listen returned %v after its ctx ended", time.Since(begin).Round(time.Millisecond))
		var bRuns atomic.Int64
		b := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			bRuns.Add(1)
			return "b", nil
		}))
		listen(t, b, []string{"job"}, 1)
		time.Sleep(2 * time.Second)
		got, _ := caller.GetTask(ctx, "s")
		if bRuns.Load() == 0 {
			t.Fatalf("2s after Listen returned, the interrupted task was not delivered to another listener (state %s, deliveries %d)",
				stateOf(got), got.Deliveries)
		}
	})
}

// D11b. The same race without any injected latency: a Listen starting on
// one name (its first heartbeat reads every name of the Queue value) while
// another Listen of the same Queue value stops re-advertises the stopped
// name for a visibility timeout.
func TestAdvBListenStartReadvertisesStoppedName(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		q := e.queue(t, taskqueue.WithVisibilityTimeout(400*time.Millisecond), taskqueue.WithTaskFunc(okFn("w")))
		admin := e.queue(t)
		ctx := ctxT(t, 30*time.Second)
		for trial := range 12 {
			stopA := listenCtx(t, q, []string{"a"}, 1)
			bctx, stopB := context.WithCancel(ctx)
			bdone := make(chan error, 4)
			for j := range 4 { // four Listen calls start, each with a first heartbeat
				go func() { bdone <- q.Listen(bctx, []string{fmt.Sprint("b", trial, "-", j)}, 1) }()
			}
			if err := stopA(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(60 * time.Millisecond)
			st, err := admin.Stats(ctx, "a")
			stopB()
			for range 4 {
				<-bdone
			}
			if err != nil {
				t.Fatal(err)
			}
			if st[0].Listeners != 0 {
				t.Fatalf("trial %d: Listen of \"a\" returned, yet 60ms later \"a\" is advertised again (%d listeners) until the visibility timeout: Auto queues for nobody",
					trial, st[0].Listeners)
			}
		}
	})
}

// D13. RemoteFirst taking over a task whose remote run died: while the
// local run is active, GetTask shows it Active with Finished set (the
// dead record's "f" is not cleared by the take-over), though Finished is
// "zero until terminal".
func TestAdvBTakeOverKeepsFinished(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(failFn("remote trouble")))
		listen(t, worker, []string{"job"}, 1)
		seen := make(chan *taskqueue.Task, 1)
		var caller *taskqueue.Queue
		caller = e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			got, err := caller.GetTask(ctx, task.ID)
			if err != nil {
				return nil, err
			}
			seen <- got
			return "local", nil
		}))
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Query(ctx, "to", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst)); err != nil {
			t.Fatal(err)
		}
		got := <-seen
		if got.State == taskqueue.Active && !got.Finished.IsZero() {
			t.Fatalf("during the take-over run: state %s, Finished %v (want zero until terminal), Error %q", got.State, got.Finished, got.Error)
		}
	})
}

// D14. WithProgress and local runs: "f is called with the task's progress
// while Query waits … after every update". For a Local query (and the
// local part of LocalFirst/RemoteFirst) the callback is never called,
// although the updates are saved and published to this very Queue value
// (a joiner in another process sees them).
func TestAdvBProgressCallbackLocalRun(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		joined := make(chan struct{})
		q := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-joined
			for i := 1; i <= 3; i++ {
				if err := task.Update(ctx, float64(i), 3); err != nil {
					return nil, err
				}
				time.Sleep(50 * time.Millisecond)
			}
			return "ok", nil
		}))
		other := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		var local, remote atomic.Int64
		done := make(chan error, 2)
		go func() {
			_, err := q.Query(ctx, "lp", "job", nil, taskqueue.WithPolicy(taskqueue.Local),
				taskqueue.WithProgress(func(taskqueue.Progress) { local.Add(1) }))
			done <- err
		}()
		waitUntil(t, 5*time.Second, "the local run", func() bool { ok, _ := q.HasTask(ctx, "lp"); return ok })
		go func() {
			_, err := other.Wait(ctx, "lp", taskqueue.WithProgress(func(taskqueue.Progress) { remote.Add(1) }))
			done <- err
		}()
		waitUntil(t, 5*time.Second, "the waiter registered", func() bool { return registered(ctx, q, other, "lp") })
		close(joined)
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		if local.Load() == 0 {
			t.Fatalf("3 progress updates of a local run: the Query's WithProgress callback ran %d times, a Wait in another process saw %d",
				local.Load(), remote.Load())
		}
	})
}

// D15. LocalFirst: the remote run starts clean (no leftover progress in
// Redis), but the caller's WithProgress callback is first called with the
// failed local run's leftover progress once the query waits for the
// listeners, as if the remote run had reported it.
func TestAdvBLocalFirstStaleProgressCallback(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			time.Sleep(200 * time.Millisecond) // reports no progress
			return "remote", nil
		}))
		listen(t, worker, []string{"job"}, 1)
		caller := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if err := task.Update(ctx, 7, 10); err != nil {
				return nil, err
			}
			time.Sleep(50 * time.Millisecond) // the message has arrived
			return nil, errors.New("local trouble")
		}))
		var seen []taskqueue.Progress
		var mu sync.Mutex
		task, err := caller.Query(ctxT(t, 20*time.Second), "lfp", "job", nil, taskqueue.WithPolicy(taskqueue.LocalFirst),
			taskqueue.WithProgress(func(p taskqueue.Progress) { mu.Lock(); seen = append(seen, p); mu.Unlock() }))
		if err != nil || result(t, task) != "remote" {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		// The local run's own update is reported while it runs (once);
		// its message, arriving later, is not reported again.
		if len(seen) > 1 {
			t.Fatalf("the remote run reported no progress, yet the callback saw %+v (the failed local run's, again)", seen)
		}
	})
}

// D16. ErrSkipRetry "makes the task fail at once, without its remaining
// attempts", and the queue itself wraps an unstorable result (too large,
// not JSON-encodable) in it. LocalFirst ignores it: the local run's
// unstorable result (or a skip-retry error) hands the task to the
// listeners, which run it again and fail the same way.
func TestAdvBLocalFirstIgnoresSkipRetry(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		fn := func(where string) taskqueue.TaskFunc {
			return func(ctx context.Context, task *taskqueue.Task) (any, error) {
				r.add(task.ID, where)
				if task.ID == "skip" {
					return nil, fmt.Errorf("params unusable: %w", taskqueue.ErrSkipRetry)
				}
				return make(chan int), nil // cannot be stored
			}
		}
		worker := e.queue(t, taskqueue.WithTaskFunc(fn("remote")))
		listen(t, worker, []string{"job"}, 1)
		caller := e.queue(t, taskqueue.WithTaskFunc(fn("local")))
		ctx := ctxT(t, 20*time.Second)
		for _, id := range []string{"skip", "unstorable"} {
			_, err := caller.Query(ctx, id, "job", nil, taskqueue.WithPolicy(taskqueue.LocalFirst))
			if !errors.Is(err, taskqueue.ErrTaskFailed) {
				t.Fatalf("%s: %v", id, err)
			}
			if w := r.where(id); len(w) != 1 {
				t.Errorf("%s: a skip-retry failure of the local run ran again at %v (error %v)", id, w, err)
			}
		}
	})
}
