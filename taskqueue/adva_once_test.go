package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvAOnceJoinerLosesLargeResult: one task id, two callers: A queries
// it WithOnce, B joins it (a Query of the same id from another Queue value,
// or a Wait). The result is larger than the 64 KiB that travels inside the
// completion message, so both are told "done, read it" and both read the
// record. A's read (look.lua with once) deletes it; when B's read comes
// second, B gets ErrNotFound for a task that finished with a result:
// the joiner loses the result. (The same happens to the non-once creator
// when the once caller is the joiner.) B's read is delayed 200 ms here to
// fix the order; without the delay it is a coin toss.
func TestAdvAOnceJoinerLosesLargeResult(t *testing.T) {
	for _, onceIsCreator := range []bool{true, false} {
		name := "once-creator"
		if !onceIsCreator {
			name = "once-joiner"
		}
		t.Run(name, func(t *testing.T) {
			forTargets(t, func(t *testing.T, tg target) {
				e := tg.env(t)
				ctx := ctxT(t, 20*time.Second)
				big := strings.Repeat("r", 70_000)
				release := make(chan struct{})
				worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					<-release
					return big, nil
				}))
				listen(t, worker, []string{"big"}, 1)
				a := e.queue(t)
				// B's client delays B's reads of the task, once armed.
				hook := &advaDelayHook{delay: 200 * time.Millisecond, match: func(c redis.Cmder) bool { return isScript(c, "look.lua") }}
				bClient := tg.client(t)
				bClient.AddHook(hook)
				b, err := taskqueue.New(bClient, e.ns, tg.opts...)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()

				var aOpts, bOpts []taskqueue.QueryOption
				aOpts = append(aOpts, taskqueue.WithPolicy(taskqueue.Remote))
				bOpts = append(bOpts, taskqueue.WithPolicy(taskqueue.Remote))
				if onceIsCreator {
					aOpts = append(aOpts, taskqueue.WithOnce())
				} else {
					// The once caller joins: B (delayed) is the creator.
					bOpts, aOpts = aOpts, append(bOpts, taskqueue.WithOnce())
				}
				type res struct {
					task *taskqueue.Task
					err  error
				}
				aRes, bRes := make(chan res, 1), make(chan res, 1)
				first, second := a, b
				firstOpts, secondOpts := aOpts, bOpts
				firstRes, secondRes := aRes, bRes
				if !onceIsCreator {
					first, second, firstOpts, secondOpts, firstRes, secondRes = b, a, bOpts, aOpts, bRes, aRes
				}
				go func() {
					task, err := first.Query(ctx, "t", "big", nil, firstOpts...)
					firstRes <- res{task, err}
				}()
				advaWaitFor(t, 5*time.Second, "the task to be created", func() bool { return advaRegistered(ctx, worker, first, "t") })
				go func() {
					task, err := second.Query(ctx, "t", "big", nil, secondOpts...)
					secondRes <- res{task, err}
				}()
				advaWaitFor(t, 5*time.Second, "the second caller to join", func() bool { return advaRegistered(ctx, worker, second, "t") })
				hook.armed.Store(true)
				close(release)
				ra, rb := <-aRes, <-bRes
				if ra.err != nil {
					t.Fatalf("the once caller: %v", ra.err)
				}
				if rb.err != nil || len(rb.task.Result) != len(big)+2 {
					t.Fatalf("the other caller of the same task (its read of the finished task came after the once caller's): %v; want the %d-byte result", rb.err, len(big)+2)
				}
			})
		})
	}
}

// TestAdvAOnceReadOfDeadLetterLeavesItListed: a task that ends a dead
// letter, read by a WithOnce Query: look.lua deletes the record but not its
// entry in the dead-letter set, so Stats counts a dead letter that
// DeadLetters does not list and Requeue does not find, for the dead-letter
// TTL (7 days by default).
func TestAdvAOnceReadOfDeadLetterLeavesItListed(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return nil, errors.New("boom")
		}))
		listen(t, worker, []string{"dies"}, 1)
		caller := e.queue(t)
		_, err := caller.Query(ctx, "d1", "dies", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.State != taskqueue.Dead {
			t.Fatalf("query: %v", err)
		}
		st, _ := caller.Stats(ctx, "dies")
		dl, _ := caller.DeadLetters(ctx, "dies", 10)
		rq := caller.Requeue(ctx, "d1")
		problems, _ := invariants(ctx, caller)
		if st[0].Dead != int64(len(dl)) || len(problems) > 0 {
			t.Fatalf("after a read-once of a dead letter: Stats.Dead=%d, DeadLetters lists %d, Requeue: %v; invariants: %v",
				st[0].Dead, len(dl), rq, problems)
		}
	})
}

// TestAdvARemoteFirstJoinerSeesDeadThenDone: a RemoteFirst task (the
// creator) and a joiner of the same id. The listener's run fails (its last
// attempt): the task is Dead, and finish() tells every waiter. The joiner
// returns that failure. The creator takes the dead task over and runs it
// locally: it ends Done. Two callers of one task id get two different
// outcomes, and the record the joiner was given as final changed after.
func TestAdvARemoteFirstJoinerSeesDeadThenDone(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		release := make(chan struct{})
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-release
			return nil, errors.New("remote failed")
		}))
		listen(t, worker, []string{"rf"}, 1)
		creator := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return "local ok", nil
		}))
		joiner := e.queue(t)
		cres := make(chan error, 1)
		go func() {
			_, err := creator.Query(ctx, "t", "rf", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst))
			cres <- err
		}()
		advaWaitFor(t, 5*time.Second, "the creator", func() bool { return advaRegistered(ctx, worker, creator, "t") })
		jres := make(chan error, 1)
		go func() {
			_, err := joiner.Wait(ctx, "t")
			jres <- err
		}()
		advaWaitFor(t, 5*time.Second, "the joiner", func() bool { return advaRegistered(ctx, worker, joiner, "t") })
		close(release)
		cerr, jerr := <-cres, <-jres
		final, _ := creator.GetTask(ctx, "t")
		if (cerr == nil) != (jerr == nil) {
			t.Fatalf("one task, two outcomes: the creator got %v, the joiner got %v; the record ends %s", cerr, jerr, final.State)
		}
	})
}

// TestAdvAOnceQueryOfRequeuedDeadLetterLeaksPending: a WithOnce Query of an
// id whose task is a dead letter: submit.lua answers "done", and finished()
// reads the record again with look.lua (once) to delete it. If the dead
// letter is requeued in between (Requeue, or a RemoteFirst caller taking it
// over), look answers "wait" and Query returns the package's internal
// errPending sentinel ("pending") as its error — not a TaskError, not
// ErrNotFound, not the result. Found by the random workload; here the
// look is delayed 200 ms to fix the order.
func TestAdvAOnceQueryOfRequeuedDeadLetterLeaksPending(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		var fail atomic.Bool
		fail.Store(true)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if fail.Load() {
				return nil, errors.New("boom")
			}
			return "fine", nil
		}))
		stopListening := listen(t, worker, []string{"j"}, 1)
		if _, err := worker.Query(ctx, "d", "j", nil, taskqueue.WithPolicy(taskqueue.Remote)); err == nil {
			t.Fatal("want a dead letter")
		}
		stopListening() // the requeued task stays pending
		fail.Store(false)
		hook := &advaDelayHook{delay: 200 * time.Millisecond, match: func(c redis.Cmder) bool { return isScript(c, "look.lua") }}
		c := tg.client(t)
		c.AddHook(hook)
		caller, err := taskqueue.New(c, e.ns, tg.opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer caller.Close()
		hook.armed.Store(true)
		go func() {
			time.Sleep(100 * time.Millisecond)
			if err := worker.Requeue(ctx, "d"); err != nil {
				t.Error(err)
			}
		}()
		task, err := caller.Query(ctx, "d", "j", nil, taskqueue.WithOnce(), taskqueue.WithPolicy(taskqueue.Remote))
		var te *taskqueue.TaskError
		if err != nil && !errors.As(err, &te) && !errors.Is(err, taskqueue.ErrNotFound) {
			state := taskqueue.State("")
			if task != nil {
				state = task.State
			}
			t.Fatalf("WithOnce Query of a dead letter requeued meanwhile: error %q (%T), task state %q; want the dead letter's TaskError or the requeued run's result", err, err, state)
		}
	})
}

// TestAdvAJoinerLosesSmallResultToOnce: even with a small result (which
// travels inside the completion message), a Query that joins a running
// task gets ErrNotFound when the task finishes and a WithOnce caller
// consumes it between the joiner's submit ("join": it is registered, and
// its message with the whole result arrives) and its first read of the
// task: await reads the state first (look.lua answers "none") and returns
// ErrNotFound without looking at the message it was sent. Found by
// TestAdvAOnceRacesJoiners (1 in 400 on the cluster); here the joiner's
// first read is delayed 200 ms to fix the order.
func TestAdvAJoinerLosesSmallResultToOnce(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		release := make(chan struct{})
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-release
			return "small", nil
		}))
		listen(t, worker, []string{"j"}, 1)
		a := e.queue(t)
		hook := &advaDelayHook{delay: 200 * time.Millisecond, match: func(c redis.Cmder) bool { return isScript(c, "look.lua") }}
		bc := tg.client(t)
		bc.AddHook(hook)
		b, err := taskqueue.New(bc, e.ns, tg.opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		ares := make(chan error, 1)
		go func() {
			_, err := a.Query(ctx, "t", "j", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
			ares <- err
		}()
		advaWaitFor(t, 5*time.Second, "A to create the task", func() bool { return advaRegistered(ctx, worker, a, "t") })
		hook.armed.Store(true)
		bres := make(chan error, 1)
		go func() {
			task, err := b.Query(ctx, "t", "j", nil, taskqueue.WithPolicy(taskqueue.Remote))
			if err == nil && result(t, task) != "small" {
				err = errors.New("wrong result")
			}
			bres <- err
		}()
		advaWaitFor(t, 5*time.Second, "B to join", func() bool { return advaRegistered(ctx, worker, b, "t") })
		close(release)
		if err := <-ares; err != nil {
			t.Fatal(err)
		}
		if err := <-bres; err != nil {
			t.Fatalf("a Query that joined the running task (and was sent its result): %v; want the result", err)
		}
	})
}

// TestAdvAStaleHintAnswersNewIncarnation: a Queue value's hub hands a
// completion message to every call watching the id, and a call watches
// the id from before its submit. Two calls of one Queue value: G1 queries
// id X WithOnce; G2 queries X too, its submit a little later (delayed here
// 300 ms, as a slow network or a busy batch would). X finishes: the hub
// gives the message to G1 and to G2's watch; G1 reads X once and deletes
// it; G2's submit then creates X anew ("q": G2 owns the new task) — and
// G2's await finds the old message in its watch and returns the result of
// the run G1 consumed, at once. The new task G2 created runs later for
// nobody (or, without a listener, stays queued until it expires). The
// stale hint should be checked against the incarnation (e.g. by the
// creation time or a run token) or dropped by the submit.
func TestAdvAStaleHintAnswersNewIncarnation(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		release := make(chan struct{})
		var runs atomic.Int64
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			n := runs.Add(1)
			if n == 1 {
				<-release
			}
			return fmt.Sprint("run ", n), nil
		}))
		listen(t, worker, []string{"j"}, 1)
		hook := &advaDelayHook{delay: 300 * time.Millisecond, match: func(c redis.Cmder) bool { return isScript(c, "submit.lua") }}
		c := tg.client(t)
		c.AddHook(hook)
		q, err := taskqueue.New(c, e.ns, tg.opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		g1 := make(chan error, 1)
		go func() {
			_, err := q.Query(ctx, "x", "j", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
			g1 <- err
		}()
		advaWaitFor(t, 5*time.Second, "run 1", func() bool { return runs.Load() == 1 })
		hook.armed.Store(true)
		type res struct {
			task *taskqueue.Task
			err  error
		}
		g2 := make(chan res, 1)
		go func() {
			task, err := q.Query(ctx, "x", "j", nil, taskqueue.WithPolicy(taskqueue.Remote))
			g2 <- res{task, err}
		}()
		time.Sleep(50 * time.Millisecond) // G2 watches x; its submit is on its way
		close(release)
		if err := <-g1; err != nil {
			t.Fatal(err)
		}
		r := <-g2
		if r.err != nil {
			t.Fatal(r.err)
		}
		got := result(t, r.task)
		time.Sleep(200 * time.Millisecond)
		stored, _ := q.GetTask(ctx, "x")
		if got != "run 2" {
			t.Fatalf("G2 created task x anew (it runs: %d runs, stored %s %s) but returned %q, the result of the run G1 consumed WithOnce",
				runs.Load(), stored.State, stored.Result, got)
		}
	})
}
