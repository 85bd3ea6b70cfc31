package taskqueue_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// runs counts the executions of each task id, and where they ran.
type runs struct {
	mu sync.Mutex
	n  map[string]int
	at map[string][]string
}

func newRuns() *runs { return &runs{n: map[string]int{}, at: map[string][]string{}} }

func (r *runs) add(id, where string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[id]++
	r.at[id] = append(r.at[id], where)
}

func (r *runs) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}

func (r *runs) where(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.at[id]...)
}

// fn returns a task function that records its runs as where and behaves
// as the task's name says: "ok" returns where, "fail" fails, "slow"
// sleeps for its params' ms first, "block" waits for its ctx.
func (r *runs) fn(where string) taskqueue.TaskFunc {
	return func(ctx context.Context, t *taskqueue.Task) (any, error) {
		r.add(t.ID, where)
		switch t.Name {
		case "fail":
			return nil, fmt.Errorf("failed at %s", where)
		case "slow":
			var ms int
			_ = t.DecodeParams(&ms)
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		case "block":
			<-ctx.Done()
			return nil, context.Cause(ctx)
		}
		return where, nil
	}
}

func result(t *testing.T, task *taskqueue.Task) string {
	t.Helper()
	var s string
	if err := task.DecodeResult(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPolicies(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		caller := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		ctx := ctxT(t, 30*time.Second)
		q := func(id, name string, p taskqueue.Policy, opts ...taskqueue.QueryOption) (*taskqueue.Task, error) {
			return caller.Query(ctx, id, name, 1, append([]taskqueue.QueryOption{taskqueue.WithPolicy(p)}, opts...)...)
		}

		// Auto with no listener alive runs locally.
		if task, err := q("auto-none", "ok", taskqueue.Auto); err != nil || result(t, task) != "local" {
			t.Fatalf("Auto without listener: %v", err)
		}
		// Remote without a listener waits; it times out.
		if _, err := q("remote-none", "ok", taskqueue.Remote, taskqueue.WithTimeout(300*time.Millisecond)); !errors.Is(err, taskqueue.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Remote without listener: %v", err)
		}
		// Its caller cancelled it when giving up.
		if got, err := caller.GetTask(ctx, "remote-none"); err != nil || got.State != taskqueue.Cancelled {
			t.Fatalf("abandoned task: %v %+v", err, got)
		}

		listen(t, worker, []string{"ok", "fail", "slow"}, 4)
		for _, c := range []struct {
			id     string
			policy taskqueue.Policy
			want   string
		}{
			{"local", taskqueue.Local, "local"},
			{"remote", taskqueue.Remote, "remote"},
			{"auto", taskqueue.Auto, "remote"},
			{"localfirst", taskqueue.LocalFirst, "local"},
			{"remotefirst", taskqueue.RemoteFirst, "remote"},
		} {
			task, err := q(c.id, "ok", c.policy)
			if err != nil || result(t, task) != c.want || r.count(c.id) != 1 {
				t.Errorf("%s: %v, ran %v", c.policy, err, r.where(c.id))
			}
		}

		// LocalFirst: the local run fails, the remote run starts clean and
		// its failure is what the caller sees.
		_, err := q("lf-fail", "fail", taskqueue.LocalFirst)
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.Message != "failed at remote" || te.State != taskqueue.Dead {
			t.Fatalf("LocalFirst failing: %v", err)
		}
		if w := r.where("lf-fail"); len(w) != 2 || w[0] != "local" || w[1] != "remote" {
			t.Fatalf("LocalFirst ran at %v", w)
		}
		// RemoteFirst: the remote run fails, the local one reports.
		_, err = q("rf-fail", "fail", taskqueue.RemoteFirst)
		if !errors.As(err, &te) || te.Message != "failed at local" || te.State != taskqueue.Failed {
			t.Fatalf("RemoteFirst failing: %v", err)
		}
		if w := r.where("rf-fail"); len(w) != 2 || w[0] != "remote" || w[1] != "local" {
			t.Fatalf("RemoteFirst ran at %v", w)
		}
		// The take-over withdrew the dead letter.
		if st, _ := caller.Stats(ctx, "fail"); st[0].Dead != 1 {
			t.Fatalf("dead letters after the take-over: %+v", st)
		}
	})
}

// A LocalFirst whose local run fails hands the task to listeners from a
// clean state: no leftover error or progress.
func TestLocalFirstRemoteRunStartsClean(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		seen := make(chan *taskqueue.Task, 1)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			got, err := task.Q().GetTask(ctx, task.ID)
			if err != nil {
				return nil, err
			}
			seen <- got
			return "ok", nil
		}))
		caller := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if err := task.Update(ctx, 3, 10); err != nil {
				return nil, err
			}
			return nil, errors.New("local trouble")
		}))
		listen(t, worker, []string{"job"}, 1)
		task, err := caller.Query(ctxT(t, 20*time.Second), "j", "job", nil, taskqueue.WithPolicy(taskqueue.LocalFirst))
		if err != nil || task.State != taskqueue.Done {
			t.Fatal(err)
		}
		got := <-seen
		if got.Error != "" || !got.Progress.UpdatedAt.IsZero() || got.State != taskqueue.Active || got.Deliveries != 2 {
			t.Fatalf("remote run saw %+v", got)
		}
	})
}

// RemoteFirst falling back to local never leaves the task to run remotely
// too: a listener that picks it up only after the take-over does not run
// it.
func TestRemoteFirstFallbackRunsOnce(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		caller := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		ctx := ctxT(t, 30*time.Second)
		// One worker, busy with a slow task: the query's task waits in
		// the queue past its fallback point.
		listen(t, worker, []string{"slow", "ok"}, 1)
		go func() { _, _ = caller.Query(ctx, "busy", "slow", 700, taskqueue.WithPolicy(taskqueue.Remote)) }()
		for r.count("busy") == 0 {
			time.Sleep(time.Millisecond)
		}
		task, err := caller.Query(ctx, "rf", "ok", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(100*time.Millisecond))
		if err != nil || result(t, task) != "local" {
			t.Fatal(err)
		}
		time.Sleep(900 * time.Millisecond) // the worker is free again
		if w := r.where("rf"); len(w) != 1 {
			t.Fatalf("ran at %v", w)
		}

		// Started by a listener before the fallback point: its result is
		// awaited, and the task runs once.
		task, err = caller.Query(ctx, "rf2", "slow", 600, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(150*time.Millisecond))
		if err != nil || result(t, task) != "remote" || r.count("rf2") != 1 {
			t.Fatal(err, r.where("rf2"))
		}
	})
}

// Many RemoteFirst queries whose fallback races with a listener picking
// the task up: every task runs exactly once.
func TestRemoteFirstRaceRunsOnce(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		caller := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		listen(t, worker, []string{"ok"}, 8)
		ctx := ctxT(t, 60*time.Second)
		const n = 300
		var wg sync.WaitGroup
		var local, remote atomic.Int64
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("race-%d", i)
				// Fallback points around the pick-up time.
				task, err := caller.Query(ctx, id, "ok", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst),
					taskqueue.WithFallbackAfter(time.Duration(i%5)*300*time.Microsecond+time.Microsecond))
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				if result(t, task) == "local" {
					local.Add(1)
				} else {
					remote.Add(1)
				}
			}()
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
		for i := range n {
			if id := fmt.Sprintf("race-%d", i); r.count(id) != 1 {
				t.Errorf("%s ran %v", id, r.where(id))
			}
		}
		t.Logf("%d tasks: %d ran locally, %d remotely, each once", n, local.Load(), remote.Load())
	})
}

func TestOnce(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		caller := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		listen(t, worker, []string{"ok"}, 2)
		ctx := ctxT(t, 20*time.Second)
		for _, p := range []taskqueue.Policy{taskqueue.Remote, taskqueue.Local} {
			id := "once-" + p.String()
			if _, err := caller.Query(ctx, id, "ok", nil, taskqueue.WithPolicy(p), taskqueue.WithOnce()); err != nil {
				t.Fatal(err)
			}
			if ok, err := caller.HasTask(ctx, id); ok || err != nil {
				t.Fatalf("%s: result kept after a read-once query (%v)", p, err)
			}
			if _, err := caller.GetTask(ctx, id); !errors.Is(err, taskqueue.ErrNotFound) {
				t.Fatalf("%s: GetTask after once: %v", p, err)
			}
			// The id is free again: a new query runs the task again.
			if _, err := caller.Query(ctx, id, "ok", nil, taskqueue.WithPolicy(p)); err != nil || r.count(id) != 2 {
				t.Fatalf("%s: rerun %v %v", p, err, r.where(id))
			}
			if ok, _ := caller.HasTask(ctx, id); !ok {
				t.Fatalf("%s: result not kept without once", p)
			}
		}
	})
}

func TestDuplicateIDs(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		callers := []*taskqueue.Queue{e.queue(t), e.queue(t)}
		listen(t, worker, []string{"slow"}, 4)
		ctx := ctxT(t, 20*time.Second)
		// Four queries of one id, from two Queue values, while it is
		// pending or running: one run, every caller gets its result.
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				task, err := callers[i%2].Query(ctx, "dup", "slow", 300, taskqueue.WithPolicy(taskqueue.Remote))
				if err != nil || result(t, task) != "remote" {
					t.Errorf("caller %d: %v", i, err)
				}
			}()
		}
		wg.Wait()
		if r.count("dup") != 1 {
			t.Fatalf("ran %d times", r.count("dup"))
		}
		// Finished: a further query returns the stored result at once.
		start := time.Now()
		task, err := callers[0].Query(ctx, "dup", "slow", 300, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil || result(t, task) != "remote" || r.count("dup") != 1 || time.Since(start) > 250*time.Millisecond {
			t.Fatalf("query of a finished id: %v, ran %d", err, r.count("dup"))
		}
		// Submit of an existing id changes nothing.
		if created, err := callers[1].Submit(ctx, "dup", "slow", 1); created || err != nil {
			t.Fatalf("Submit of an existing id: %v %v", created, err)
		}
	})
}

func TestSubmitAndWait(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")))
		producer, waiter := e.queue(t), e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if created, err := producer.Submit(ctx, "s1", "ok", nil); !created || err != nil {
			t.Fatal(created, err)
		}
		got, err := producer.GetTask(ctx, "s1")
		if err != nil || got.State != taskqueue.Pending {
			t.Fatalf("submitted: %v %+v", err, got)
		}
		done := make(chan *taskqueue.Task, 1)
		go func() {
			task, err := waiter.Wait(ctx, "s1")
			if err != nil {
				t.Error(err)
			}
			done <- task
		}()
		time.Sleep(50 * time.Millisecond)
		listen(t, worker, []string{"ok", "slow"}, 1)
		if task := <-done; task == nil || result(t, task) != "remote" {
			t.Fatal("Wait did not get the result")
		}
		// Wait of a finished task returns at once; of an unknown one fails.
		if task, err := waiter.Wait(ctx, "s1", taskqueue.WithOnce()); err != nil || result(t, task) != "remote" {
			t.Fatal(err)
		}
		if _, err := waiter.Wait(ctx, "s1"); !errors.Is(err, taskqueue.ErrNotFound) {
			t.Fatalf("Wait after once: %v", err)
		}
		// Ending a Wait's ctx does not cancel the task.
		if _, err := producer.Submit(ctx, "s2", "slow", 200); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := waiter.Wait(wctx, "s2"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait past its ctx: %v", err)
		}
		if task, err := waiter.Wait(ctx, "s2"); err != nil || result(t, task) != "remote" {
			t.Fatal(err)
		}
	})
}

func TestProgress(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		step := make(chan struct{})
		saved := make(chan taskqueue.Progress, 10)
		var worker *taskqueue.Queue
		worker = e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			for i := 1; i <= 5; i++ {
				<-step
				if err := task.Update(ctx, float64(i), 5); err != nil {
					return nil, err
				}
				got, err := worker.GetTask(ctx, task.ID)
				if err != nil {
					return nil, err
				}
				saved <- got.Progress
			}
			return "done", nil
		}))
		listen(t, worker, []string{"p"}, 1)
		caller := e.queue(t)
		var seen []float64
		var mu sync.Mutex
		done := make(chan error, 1)
		go func() {
			_, err := caller.Query(ctxT(t, 20*time.Second), "prog", "p", nil, taskqueue.WithPolicy(taskqueue.Remote),
				taskqueue.WithProgress(func(p taskqueue.Progress) {
					mu.Lock()
					seen = append(seen, p.Current)
					mu.Unlock()
				}))
			done <- err
		}()
		for i := 1; i <= 5; i++ {
			step <- struct{}{}
			// Every update is saved, not only the first.
			if p := <-saved; p.Current != float64(i) || p.Total != 5 || p.UpdatedAt.IsZero() {
				t.Fatalf("update %d saved as %+v", i, p)
			}
			// and reaches the waiting caller.
			deadline := time.Now().Add(5 * time.Second)
			for {
				mu.Lock()
				n := len(seen)
				last := 0.0
				if n > 0 {
					last = seen[n-1]
				}
				mu.Unlock()
				if last == float64(i) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("caller saw %v, want %d", seen, i)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// Update fails with a timeout error once the task has expired, and the
// run's context ends at the expiry.
func TestUpdateAfterExpiry(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		errs := make(chan error, 2)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-ctx.Done()
			errs <- context.Cause(ctx)
			time.Sleep(time.Until(task.Expiry) + 20*time.Millisecond)
			errs <- task.Update(context.Background(), 1, 1)
			return nil, ctx.Err()
		}))
		listen(t, worker, []string{"x"}, 1)
		caller := e.queue(t)
		_, err := caller.Query(ctxT(t, 20*time.Second), "exp", "x", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(300*time.Millisecond))
		if !errors.Is(err, taskqueue.ErrTimeout) {
			t.Fatalf("query: %v", err)
		}
		if cause := <-errs; !errors.Is(cause, taskqueue.ErrExpired) && !errors.Is(cause, taskqueue.ErrCancelled) {
			t.Fatalf("run's context ended with %v", cause)
		}
		if err := <-errs; !errors.Is(err, taskqueue.ErrExpired) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Update after expiry: %v", err)
		}
	})
}

// syncBuffer is a log sink safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A queued task whose expiry passed, or whose record is gone, is skipped
// with a log line and never runs.
func TestExpiredQueuedTaskSkipped(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		var logs syncBuffer
		producer := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if _, err := producer.Submit(ctx, "old", "ok", nil, taskqueue.WithTimeout(50*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := producer.Submit(ctx, "gone", "ok", nil); err != nil {
			t.Fatal(err)
		}
		if err := producer.Raw().Del(ctx, taskqueue.TaskKey(producer, "gone")).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := producer.Submit(ctx, "fresh", "ok", nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")), taskqueue.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		listen(t, worker, []string{"ok"}, 1)
		if task, err := producer.Wait(ctx, "fresh"); err != nil || result(t, task) != "remote" {
			t.Fatal(err)
		}
		if r.count("old") != 0 || r.count("gone") != 0 {
			t.Fatalf("ran expired tasks: %v %v", r.where("old"), r.where("gone"))
		}
		got, err := producer.GetTask(ctx, "old")
		if err != nil || got.State != taskqueue.Expired || !errors.Is(got.Err(), taskqueue.ErrExpired) {
			t.Fatalf("expired task: %v %+v", err, got)
		}
		for _, want := range []string{"id=old reason=expired", "id=gone reason=gone"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("no log line %q in:\n%s", want, logs.String())
			}
		}
	})
}

// A stored result lives at least as long as the caller's timeout.
func TestResultLifetime(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		q := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		ctx := ctxT(t, 20*time.Second)
		const timeout = 40 * time.Second
		if _, err := q.Query(ctx, "life", "ok", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(timeout)); err != nil {
			t.Fatal(err)
		}
		ttl, err := q.Raw().PTTL(ctx, taskqueue.TaskKey(q, "life")).Result()
		if err != nil || ttl < timeout-time.Second || ttl > timeout {
			t.Fatalf("result TTL %v (%v), want about %v", ttl, err, timeout)
		}
	})
}

func TestCancellation(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		causes := make(chan error, 1)
		started := make(chan struct{}, 1)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-ctx.Done()
			causes <- context.Cause(ctx)
			return nil, ctx.Err()
		}))
		listen(t, worker, []string{"block"}, 1)
		caller := e.queue(t)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := caller.Query(ctx, "c1", "block", nil, taskqueue.WithPolicy(taskqueue.Remote))
			done <- err
		}()
		<-started
		start := time.Now()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("query: %v", err)
		}
		select {
		case cause := <-causes:
			if !errors.Is(cause, taskqueue.ErrCancelled) {
				t.Fatalf("remote context cause %v", cause)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the remote task's context was not cancelled")
		}
		t.Logf("remote context cancelled %v after the caller's", time.Since(start))
		bg := ctxT(t, 10*time.Second)
		for {
			got, err := caller.GetTask(bg, "c1")
			if err != nil {
				t.Fatal(err)
			}
			if got.State == taskqueue.Cancelled {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Cancel of a pending task withdraws it.
		if _, err := caller.Submit(bg, "c2", "nobody-listens", nil); err != nil {
			t.Fatal(err)
		}
		if ok, err := caller.Cancel(bg, "c2"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if st, _ := caller.Stats(bg, "nobody-listens"); st[0].Pending != 0 {
			t.Fatalf("cancelled task still pending: %+v", st)
		}
		if ok, err := caller.Cancel(bg, "c2"); ok || err != nil {
			t.Fatalf("second cancel: %v %v", ok, err)
		}
	})
}

func TestRetriesAndDeadLetters(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		var fail atomic.Bool
		fail.Store(true)
		worker := e.queue(t, taskqueue.WithRetryBackoff(func(int) time.Duration { return 20 * time.Millisecond }),
			taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				r.add(task.ID, fmt.Sprint(task.Attempts))
				if fail.Load() {
					return nil, fmt.Errorf("attempt %d failed", task.Attempts+1)
				}
				return "fine", nil
			}))
		listen(t, worker, []string{"flaky"}, 2)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		_, err := caller.Query(ctx, "r1", "flaky", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(3))
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.State != taskqueue.Dead || te.Message != "attempt 3 failed" {
			t.Fatalf("query: %v", err)
		}
		if w := r.where("r1"); strings.Join(w, ",") != "0,1,2" {
			t.Fatalf("attempts seen by the runs: %v", w)
		}
		dead, err := caller.DeadLetters(ctx, "flaky", 10)
		if err != nil || len(dead) != 1 || dead[0].ID != "r1" || dead[0].Attempts != 3 || dead[0].Error != "attempt 3 failed" {
			t.Fatalf("dead letters: %v %+v", err, dead)
		}
		if st, _ := caller.Stats(ctx, "flaky"); st[0].Dead != 1 || st[0].Pending != 0 || st[0].Running != 0 {
			t.Fatalf("stats: %+v", st)
		}
		// Requeue: it runs again, with its attempts reset.
		fail.Store(false)
		if err := caller.Requeue(ctx, "r1"); err != nil {
			t.Fatal(err)
		}
		task, err := caller.Wait(ctx, "r1")
		if err != nil || result(t, task) != "fine" {
			t.Fatal(err)
		}
		if st, _ := caller.Stats(ctx, "flaky"); st[0].Dead != 0 {
			t.Fatalf("stats after requeue: %+v", st)
		}
		if err := caller.Requeue(ctx, "r1"); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Fatalf("requeue of a done task: %v", err)
		}
		if err := caller.Requeue(ctx, "nope"); !errors.Is(err, taskqueue.ErrNotFound) {
			t.Fatalf("requeue of an unknown task: %v", err)
		}
		// ErrSkipRetry ends the task at once.
		fail.Store(true)
		worker2 := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			r.add(task.ID, "skip")
			return nil, fmt.Errorf("bad input: %w", taskqueue.ErrSkipRetry)
		}))
		listen(t, worker2, []string{"bad"}, 1)
		if _, err := caller.Query(ctx, "r2", "bad", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(5)); !errors.As(err, &te) || r.count("r2") != 1 {
			t.Fatalf("skip retry: %v, %d runs", err, r.count("r2"))
		}
	})
}

// A worker whose claim was lost (it stalled past the visibility timeout
// and the task went to another worker) can store neither progress nor a
// result.
func TestClaimTokens(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		release := make(chan struct{})
		stale := make(chan error, 1)
		var first atomic.Bool
		first.Store(true)
		opts := []taskqueue.Option{taskqueue.WithVisibilityTimeout(300 * time.Millisecond)}
		var a *taskqueue.Queue
		a = e.queue(t, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if first.CompareAndSwap(true, false) {
				taskqueue.PauseHeartbeats(a, true) // a long stall
				<-release
				stale <- task.Update(context.Background(), 1, 2)
				return "stale", nil
			}
			return "a", nil
		}))...)
		listen(t, a, []string{"t"}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		done := make(chan *taskqueue.Task, 1)
		go func() {
			task, err := caller.Query(ctx, "tok", "t", nil, taskqueue.WithPolicy(taskqueue.Remote))
			if err != nil {
				t.Error(err)
			}
			done <- task
		}()
		for first.Load() {
			time.Sleep(time.Millisecond)
		}
		b := e.queue(t, append(opts, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return "b", nil
		}))...)
		listen(t, b, []string{"t"}, 1)
		task := <-done
		if task == nil || result(t, task) != "b" || task.Deliveries != 2 {
			t.Fatalf("result %+v", task)
		}
		close(release)
		if err := <-stale; !errors.Is(err, taskqueue.ErrClaimLost) {
			t.Fatalf("stale Update: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		got, err := caller.GetTask(ctx, "tok")
		if err != nil || result(t, got) != "b" {
			t.Fatalf("stored: %v %+v", err, got)
		}
		taskqueue.PauseHeartbeats(a, false)
	})
}

// A listener stays visible to Auto while all its workers are busy, and a
// busy listener stops promptly when its context ends.
func TestListenerLiveness(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		worker := e.queue(t, taskqueue.WithTaskFunc(r.fn("remote")), taskqueue.WithVisibilityTimeout(300*time.Millisecond),
			taskqueue.WithGracePeriod(200*time.Millisecond))
		ctx := ctxT(t, 20*time.Second)
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- worker.Listen(lctx, []string{"block", "ok"}, 1) }()
		caller := e.queue(t, taskqueue.WithTaskFunc(r.fn("local")))
		for {
			st, _ := caller.Stats(ctx, "ok")
			if st[0].Listeners == 1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if _, err := caller.Submit(ctx, "busy", "block", nil); err != nil {
			t.Fatal(err)
		}
		for r.count("busy") == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Second) // over 3 visibility timeouts, busy
		if st, _ := caller.Stats(ctx, "ok"); st[0].Listeners != 1 {
			t.Fatalf("busy listener not visible: %+v", st)
		}
		// Auto sees it: the task is queued for it, and the fallback runs it
		// locally since the listener is busy.
		task, err := caller.Query(ctx, "auto", "ok", nil, taskqueue.WithFallbackAfter(100*time.Millisecond))
		if err != nil || result(t, task) != "local" || r.count("auto") != 1 {
			t.Fatalf("Auto with a busy listener: %v %v", err, r.where("auto"))
		}
		start := time.Now()
		stop()
		if st, _ := caller.Stats(ctx, "ok"); st[0].Listeners != 0 {
			// Withdrawn at once (before the grace period ends).
			time.Sleep(50 * time.Millisecond)
			if st, _ := caller.Stats(ctx, "ok"); st[0].Listeners != 0 {
				t.Errorf("stopped listener still visible: %+v", st)
			}
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("busy listener did not stop")
		}
		t.Logf("busy listener stopped %v after its context ended", time.Since(start))
		// The interrupted task is queued again, not lost, without counting an attempt.
		got, err := caller.GetTask(ctx, "busy")
		if err != nil || got.State != taskqueue.Pending || got.Attempts != 0 {
			t.Fatalf("interrupted task: %v %+v", err, got)
		}
	})
}

func TestBadInput(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		q := e.queue(t, taskqueue.WithMaxPayload(64))
		ctx := ctxT(t, 10*time.Second)
		long := strings.Repeat("k", 1025)
		for _, c := range []struct {
			name      string
			id, tname string
			params    any
			opts      []taskqueue.QueryOption
			want      error
		}{
			{"empty id", "", "n", nil, nil, taskqueue.ErrInvalidKey},
			{"long id", long, "n", nil, nil, taskqueue.ErrInvalidKey},
			{"empty name", "i", "", nil, nil, taskqueue.ErrInvalidKey},
			{"bad JSON", "i", "n", []byte("{"), nil, taskqueue.ErrInvalidArgument},
			{"unmarshalable", "i", "n", func() {}, nil, taskqueue.ErrInvalidArgument},
			{"too large", "i", "n", strings.Repeat("x", 100), nil, taskqueue.ErrPayloadTooLarge},
			{"negative timeout", "i", "n", nil, []taskqueue.QueryOption{taskqueue.WithTimeout(-time.Second)}, taskqueue.ErrInvalidArgument},
			{"zero attempts", "i", "n", nil, []taskqueue.QueryOption{taskqueue.WithMaxAttempts(0)}, taskqueue.ErrInvalidArgument},
			{"bad policy", "i", "n", nil, []taskqueue.QueryOption{taskqueue.WithPolicy(99)}, taskqueue.ErrInvalidArgument},
			{"local without function", "i", "n", nil, []taskqueue.QueryOption{taskqueue.WithPolicy(taskqueue.Local)}, taskqueue.ErrNoTaskFunc},
		} {
			if _, err := q.Query(ctx, c.id, c.tname, c.params, c.opts...); !errors.Is(err, c.want) {
				t.Errorf("Query %s: %v, want %v", c.name, err, c.want)
			}
			if c.want != taskqueue.ErrNoTaskFunc {
				if _, err := q.Submit(ctx, c.id, c.tname, c.params, c.opts...); !errors.Is(err, c.want) {
					t.Errorf("Submit %s: %v, want %v", c.name, err, c.want)
				}
			}
		}
		if n, err := q.Raw().Exists(ctx, taskqueue.TaskKey(q, "i")).Result(); n != 0 || err != nil {
			t.Fatalf("bad input wrote a task (%v)", err)
		}
		if err := q.Listen(ctx, nil, 1); !errors.Is(err, taskqueue.ErrNoTaskFunc) {
			t.Fatalf("Listen without function: %v", err)
		}
		w := e.queue(t, taskqueue.WithTaskFunc(newRuns().fn("x")))
		if err := w.Listen(ctx, []string{"a"}, 0); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Fatalf("Listen with 0 workers: %v", err)
		}
		if err := w.Listen(ctx, []string{""}, 1); !errors.Is(err, taskqueue.ErrInvalidKey) {
			t.Fatalf("Listen with an empty name: %v", err)
		}
		for _, o := range []taskqueue.Option{taskqueue.WithVisibilityTimeout(0), taskqueue.WithMaxPayload(0), taskqueue.WithDefaultTimeout(-1), taskqueue.WithSuffix("a{b")} {
			if _, err := taskqueue.New(e.tg.client(t), e.ns, o); err == nil {
				t.Error("New accepted a bad option")
			}
		}
	})
}

// Ids and names are data: spaces, newlines, braces and other bytes pass
// through the scripts and messages unchanged.
func TestOddIDsAndNames(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if err := task.Update(ctx, 1, 2); err != nil {
				return nil, err
			}
			return task.ID + "/" + task.Name, nil
		}))
		names := []string{"a b", "x\ny", "{tag}", "ü|*?", "d 5 abc"}
		listen(t, worker, names, 2)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		for i, name := range names {
			id := fmt.Sprintf("id %d\nwith {odd} bytes \x00 %s", i, name)
			var prog atomic.Int64
			task, err := caller.Query(ctx, id, name, nil, taskqueue.WithPolicy(taskqueue.Remote),
				taskqueue.WithProgress(func(taskqueue.Progress) { prog.Add(1) }))
			if err != nil || result(t, task) != id+"/"+name || task.ID != id {
				t.Fatalf("%q: %v", id, err)
			}
		}
	})
}

// A waiting caller whose completion message is lost still gets the result:
// the safety sweep reads the state of every waited task every few seconds.
func TestLostMessageRecovered(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		release := make(chan struct{})
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			<-release
			return "late", nil
		}))
		listen(t, worker, []string{"quiet"}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		done := make(chan error, 1)
		go func() {
			task, err := caller.Query(ctx, "lost", "quiet", nil, taskqueue.WithPolicy(taskqueue.Remote))
			if err == nil && result(t, task) != "late" {
				err = fmt.Errorf("result %s", task.Result)
			}
			done <- err
		}()
		key := taskqueue.TaskKey(caller, "lost")
		for {
			st, _ := caller.Raw().HGet(ctx, key, "s").Result()
			if st == "active" {
				break
			}
			time.Sleep(time.Millisecond)
		}
		// Nobody is told about the completion any more.
		if err := caller.Raw().HDel(ctx, key, "r").Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 7*time.Second {
			t.Fatalf("result reached the caller after %v", d)
		}
	})
}
