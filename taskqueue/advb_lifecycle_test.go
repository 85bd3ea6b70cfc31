package taskqueue_test

// Adversarial tests (round B) of policies, lifecycle, expiry and stats
// that held: expected to PASS.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// blockFn waits for its context and returns its cause.
func blockFn(started chan<- string) taskqueue.TaskFunc {
	return func(ctx context.Context, t *taskqueue.Task) (any, error) {
		if started != nil {
			started <- t.ID
		}
		<-ctx.Done()
		return nil, context.Cause(ctx)
	}
}

// Close with remote queries, waits and a busy Listen: every waiting call
// returns ErrClosed promptly, Listen returns, running tasks are queued
// again (not lost, no attempt counted), and no goroutine is left behind.
func TestAdvBCloseReleasesEverything(t *testing.T) {
	e := advSingle(t)
	c1, c2, admin := redistest.Client(t), redistest.Client(t), e.queue(t)
	ctx := ctxT(t, 20*time.Second)
	for _, c := range []*redis.Client{c1, c2} {
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.Stats(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	base := runtime.NumGoroutine()

	started := make(chan string, 16)
	worker, err := taskqueue.New(c1, e.ns, taskqueue.WithBatching(0), taskqueue.WithTaskFunc(blockFn(started)), taskqueue.WithGracePeriod(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	caller, err := taskqueue.New(c2, e.ns)
	if err != nil {
		t.Fatal(err)
	}
	lerr := make(chan error, 1)
	go func() { lerr <- worker.Listen(context.Background(), []string{"block"}, 3) }()
	waitUntil(t, 5*time.Second, "listener", func() bool {
		st, _ := admin.Stats(ctx, "block")
		return st[0].Listeners == 1
	})
	errs := make(chan error, 16)
	for i := range 5 {
		go func() {
			_, err := caller.Query(ctx, fmt.Sprint("q", i), "block", nil, taskqueue.WithPolicy(taskqueue.Remote))
			errs <- err
		}()
	}
	for range 3 {
		<-started
	}
	waitUntil(t, 5*time.Second, "tasks queued", func() bool {
		st, _ := admin.Stats(ctx, "block")
		return st[0].Pending == 2 && st[0].Running == 3
	})
	for i := range 3 {
		go func() {
			_, err := caller.Wait(ctx, fmt.Sprint("q", i+2))
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	begin := time.Now()
	_ = caller.Close()
	for range 8 {
		select {
		case err := <-errs:
			if !errors.Is(err, taskqueue.ErrClosed) {
				t.Errorf("waiting call after Close: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("a waiting call did not return after Close")
		}
	}
	_ = worker.Close()
	select {
	case err := <-lerr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Listen did not return after Close")
	}
	t.Logf("everything returned %v after Close", time.Since(begin).Round(time.Millisecond))
	st, _ := admin.Stats(ctx, "block")
	if st[0].Pending != 5 || st[0].Running != 0 || st[0].Listeners != 0 {
		t.Fatalf("after Close: %+v", st[0])
	}
	for i := range 5 {
		got, err := admin.GetTask(ctx, fmt.Sprint("q", i))
		if err != nil || got.State != taskqueue.Pending || got.Attempts != 0 {
			t.Fatalf("q%d: %v %+v", i, err, got)
		}
	}
	if err := worker.Listen(ctx, []string{"block"}, 1); !errors.Is(err, taskqueue.ErrClosed) {
		t.Fatalf("Listen on a closed queue: %v", err)
	}
	if _, err := caller.Query(ctx, "z", "block", nil); !errors.Is(err, taskqueue.ErrClosed) {
		t.Fatalf("Query on a closed queue: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= base {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, base, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Two Listen calls on one Queue value with overlapping names: stopping one
// keeps the shared name advertised (beyond the visibility timeout) and
// served.
func TestAdvBListenTwiceOverlapping(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		q := e.queue(t, taskqueue.WithVisibilityTimeout(300*time.Millisecond), taskqueue.WithTaskFunc(okFn("w")))
		stopA := listenCtx(t, q, []string{"a", "b"}, 1)
		listenCtx(t, q, []string{"b", "c", "b"}, 1)
		time.Sleep(200 * time.Millisecond) // its first heartbeat is done (see TestAdvBStoppedListenerReadvertised)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if err := stopA(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			st, err := caller.Stats(ctx, "a", "b", "c")
			if err != nil || st[0].Listeners != 0 || st[1].Listeners != 1 || st[2].Listeners != 1 {
				t.Fatalf("after one Listen stopped: %v %+v", err, st)
			}
			time.Sleep(time.Second)
		}
		if task, err := caller.Query(ctx, "b1", "b", nil, taskqueue.WithPolicy(taskqueue.Remote)); err != nil || result(t, task) != "w" {
			t.Fatal(err)
		}
		// A Listen whose ctx has already ended returns nil at once.
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := q.Listen(cctx, []string{"b"}, 1); err != nil {
			t.Errorf("Listen with an ended ctx: %v", err)
		}
		if st, _ := caller.Stats(ctx, "b"); st[0].Listeners != 1 {
			t.Fatalf("the ended Listen withdrew a name still served: %+v", st)
		}
	})
}

// Grace period 0: a running task is stopped and queued again at once, at
// the front, with no attempt counted; Listen returns promptly.
func TestAdvBGraceZero(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		started := make(chan string, 1)
		q := e.queue(t, taskqueue.WithGracePeriod(0), taskqueue.WithTaskFunc(blockFn(started)))
		stop := listenCtx(t, q, []string{"block"}, 1)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Submit(ctx, "g1", "block", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		if _, err := caller.Submit(ctx, "g2", "block", nil); err != nil {
			t.Fatal(err)
		}
		begin := time.Now()
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d > 1500*time.Millisecond {
			t.Errorf("Listen took %v to stop", d)
		}
		got, err := caller.GetTask(ctx, "g1")
		if err != nil || got.State != taskqueue.Pending || got.Attempts != 0 {
			t.Fatalf("interrupted: %v %+v", err, got)
		}
		// g1 is first again: a new listener starts it before g2.
		started2 := make(chan string, 2)
		q2 := e.queue(t, taskqueue.WithGracePeriod(0), taskqueue.WithTaskFunc(blockFn(started2)))
		listenCtx(t, q2, []string{"block"}, 1)
		if id := <-started2; id != "g1" {
			t.Fatalf("requeued task not at the front: %s ran first", id)
		}
	})
}

// Policies under failure: LocalFirst with no listener times out cleanly
// (task cancelled, queue empty); RemoteFirst where remote and local fail
// reports the local failure; Local with its ctx cancelled mid-run records
// Cancelled; a Local run cancelled by another process ends Cancelled.
func TestAdvBPolicyFailures(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 30*time.Second)
		started := make(chan string, 4)
		caller := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			switch task.Name {
			case "fail":
				return nil, errors.New("local trouble")
			case "block":
				return blockFn(started)(ctx, task)
			}
			return "local", nil
		}))
		start := time.Now()
		_, err := caller.Query(ctx, "lf", "fail", nil, taskqueue.WithPolicy(taskqueue.LocalFirst), taskqueue.WithTimeout(500*time.Millisecond))
		if !errors.Is(err, taskqueue.ErrTimeout) || time.Since(start) > 2*time.Second {
			t.Fatalf("LocalFirst, no listener: %v after %v", err, time.Since(start))
		}
		got, err := caller.GetTask(ctx, "lf")
		if err != nil || got.State != taskqueue.Cancelled {
			t.Fatalf("LocalFirst abandoned task: %v %+v", err, got)
		}
		if st, _ := caller.Stats(ctx, "fail"); st[0].Pending != 0 || st[0].Running != 0 {
			t.Fatalf("stats: %+v", st)
		}

		worker := e.queue(t, taskqueue.WithRetryBackoff(func(int) time.Duration { return 10 * time.Millisecond }), taskqueue.WithTaskFunc(failFn("remote trouble")))
		listen(t, worker, []string{"fail"}, 1)
		_, err = caller.Query(ctx, "rf", "fail", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithMaxAttempts(2))
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.Message != "local trouble" || te.State != taskqueue.Failed {
			t.Fatalf("RemoteFirst both failing: %v", err)
		}
		if got, _ := caller.GetTask(ctx, "rf"); got.Attempts != 2 || got.State != taskqueue.Failed {
			t.Fatalf("RemoteFirst both failing, stored: %+v", got)
		}

		lctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := caller.Query(lctx, "lc", "block", nil, taskqueue.WithPolicy(taskqueue.Local))
			errc <- err
		}()
		<-started
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Local with its ctx cancelled: %v", err)
		}
		if got, err := caller.GetTask(ctx, "lc"); err != nil || got.State != taskqueue.Cancelled {
			t.Fatalf("Local cancelled: %v %+v", err, got)
		}

		go func() {
			_, err := caller.Query(ctx, "lc2", "block", nil, taskqueue.WithPolicy(taskqueue.Local))
			errc <- err
		}()
		<-started
		if ok, err := e.queue(t).Cancel(ctx, "lc2"); !ok || err != nil {
			t.Fatal(ok, err)
		}
		if err := <-errc; !errors.Is(err, taskqueue.ErrCancelled) {
			t.Fatalf("Local cancelled by another process: %v", err)
		}
		if got, err := caller.GetTask(ctx, "lc2"); err != nil || got.State != taskqueue.Cancelled {
			t.Fatalf("Local cancelled by another process: %v %+v", err, got)
		}
	})
}

// A local run far longer than the visibility timeout keeps its claim
// (heartbeats) while a listener of its name reaps lost claims: it runs
// once, locally.
func TestAdvBLongLocalRunKeepsClaim(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		vis := taskqueue.WithVisibilityTimeout(100 * time.Millisecond)
		r := newRuns()
		worker := e.queue(t, vis, taskqueue.WithTaskFunc(r.fn("remote")))
		listen(t, worker, []string{"slow"}, 2)
		caller := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			r.add(task.ID, "local")
			for i := range 10 {
				time.Sleep(60 * time.Millisecond)
				if err := task.Update(ctx, float64(i), 10); err != nil {
					return nil, err
				}
			}
			return "local", nil
		}))
		ctx := ctxT(t, 20*time.Second)
		for _, p := range []taskqueue.Policy{taskqueue.Local, taskqueue.LocalFirst} {
			id := "long-" + p.String()
			task, err := caller.Query(ctx, id, "slow", nil, taskqueue.WithPolicy(p))
			if err != nil || result(t, task) != "local" || r.count(id) != 1 {
				t.Fatalf("%s: %v, ran %v", p, err, r.where(id))
			}
		}
	})
}

// The subscription dies while a caller waits and the result is published
// meanwhile: the resubscription makes the caller read the state, well
// before the 5 s safety net.
func TestAdvBSubscriptionKilled(t *testing.T) {
	e := advSingle(t)
	release := make(chan struct{})
	started := make(chan string, 1)
	worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		started <- task.ID
		<-release
		return "r", nil
	}))
	listen(t, worker, []string{"job"}, 1)
	caller := e.queue(t)
	ctx := ctxT(t, 20*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := caller.Query(ctx, "k", "job", nil, taskqueue.WithPolicy(taskqueue.Remote))
		done <- err
	}()
	<-started
	admin := redistest.Client(t)
	if err := admin.Do(ctx, "client", "kill", "type", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	close(release)
	begin := time.Now()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("result seen %v after it was stored", d)
	}
}

// Scripts flushed from Redis (restart, SCRIPT FLUSH): every operation
// still runs (EVAL fallback), batched or not.
func TestAdvBScriptFlush(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(okFn("w")))
		listen(t, worker, []string{"job"}, 1)
		caller := e.queue(t, taskqueue.WithTaskFunc(okFn("l")))
		ctx := ctxT(t, 20*time.Second)
		for i := range 3 {
			switch c := caller.Raw().(type) {
			case *redis.ClusterClient:
				_ = c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.ScriptFlush(ctx).Err() })
			default:
				_ = c.ScriptFlush(ctx).Err()
			}
			for _, p := range []taskqueue.Policy{taskqueue.Remote, taskqueue.Local} {
				if _, err := caller.Query(ctx, fmt.Sprint(p, i), "job", nil, taskqueue.WithPolicy(p)); err != nil {
					t.Fatalf("after SCRIPT FLUSH: %v", err)
				}
			}
		}
	})
}

// Expiry: a task waiting out a retry back-off past its expiry is skipped
// when due (logged, never run again); GetTask/HasTask after the result's
// life find nothing and the id runs again; a requeued dead letter gets a
// new expiry and a record life to match; Submit of an id whose once-result
// was consumed creates it again.
func TestAdvBExpiryPaths(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		var logs syncBuffer
		r := newRuns()
		var fail atomic.Bool
		fail.Store(true)
		worker := e.queue(t, taskqueue.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
			taskqueue.WithRetryBackoff(func(int) time.Duration { return 600 * time.Millisecond }),
			taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				r.add(task.ID, "w")
				if fail.Load() {
					return nil, errors.New("no")
				}
				return "w", nil
			}))
		listen(t, worker, []string{"job"}, 1)
		caller := e.queue(t, taskqueue.WithTaskFunc(okFn("l")))
		ctx := ctxT(t, 20*time.Second)
		if _, err := caller.Submit(ctx, "retry", "job", nil, taskqueue.WithTimeout(300*time.Millisecond), taskqueue.WithMaxAttempts(5)); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 5*time.Second, "the delayed task skipped", func() bool { return strings.Contains(logs.String(), "id=retry reason=expired") })
		time.Sleep(100 * time.Millisecond)
		if r.count("retry") != 1 {
			t.Fatalf("ran %d times", r.count("retry"))
		}

		if _, err := caller.Query(ctx, "short", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(200*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if ok, _ := caller.HasTask(ctx, "short"); !ok {
			t.Fatal("result not kept")
		}
		time.Sleep(300 * time.Millisecond)
		if ok, err := caller.HasTask(ctx, "short"); ok || err != nil {
			t.Fatalf("HasTask after the result's life: %v %v", ok, err)
		}
		if _, err := caller.GetTask(ctx, "short"); !errors.Is(err, taskqueue.ErrNotFound) {
			t.Fatalf("GetTask after the result's life: %v", err)
		}

		const tt = 3 * time.Second
		if _, err := caller.Query(ctx, "dl", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(tt)); !errors.Is(err, taskqueue.ErrTaskFailed) {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		before, _ := caller.GetTask(ctx, "dl")
		fail.Store(false)
		if err := caller.Requeue(ctx, "dl"); err != nil {
			t.Fatal(err)
		}
		after, _ := caller.GetTask(ctx, "dl")
		ttlMs, _ := caller.Raw().Do(ctx, "pttl", taskqueue.TaskKey(caller, "dl")).Int64()
		if !after.Expiry.After(before.Expiry.Add(900*time.Millisecond)) || time.Duration(ttlMs)*time.Millisecond < tt-100*time.Millisecond {
			t.Fatalf("requeued dead letter: expiry %v (was %v), record TTL %d ms", after.Expiry, before.Expiry, ttlMs)
		}
		task, err := caller.Wait(ctx, "dl", taskqueue.WithOnce())
		if err != nil || result(t, task) != "w" {
			t.Fatal(err)
		}
		if ok, err := caller.Submit(ctx, "dl", "job", nil); !ok || err != nil {
			t.Fatalf("Submit after the once-read: %v %v", ok, err)
		}
		if task, err := caller.Wait(ctx, "dl"); err != nil || result(t, task) != "w" || r.count("dl") != 3 {
			t.Fatalf("%v %v", err, r.where("dl"))
		}
	})
}

// Stats after a mixed workload equal what the test counts itself, and
// Stats() without names lists every name used, sorted.
func TestAdvBStatsMixed(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		release := make(chan struct{})
		started := make(chan string, 4)
		worker := e.queue(t, taskqueue.WithRetryBackoff(func(int) time.Duration { return time.Minute }),
			taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				if task.Name == "c" && task.ID == "c-run" {
					started <- task.ID
					<-release
					return "done", nil
				}
				return nil, errors.New("no")
			}))
		listen(t, worker, []string{"b", "c"}, 3)
		t.Cleanup(func() { close(release) })
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		for _, s := range []struct {
			id, name string
			att      int
		}{{"a1", "a", 1}, {"a2", "a", 1}, {"a3", "a", 1}, {"b1", "b", 3}, {"b2", "b", 3}, {"c-dead", "c", 1}, {"c-run", "c", 1}} {
			if _, err := caller.Submit(ctx, s.id, s.name, nil, taskqueue.WithMaxAttempts(s.att)); err != nil {
				t.Fatal(err)
			}
		}
		<-started
		want := map[string]taskqueue.Stats{
			"a": {Name: "a", Pending: 3},
			"b": {Name: "b", Delayed: 2, Listeners: 1},
			"c": {Name: "c", Running: 1, Dead: 1, Listeners: 1},
		}
		var got []taskqueue.Stats
		deadline := time.Now().Add(5 * time.Second)
		for {
			var err error
			got, err = caller.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ok := len(got) == 3
			for i, n := range []string{"a", "b", "c"} {
				ok = ok && got[i] == want[n]
			}
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Stats() = %+v, want %+v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if ok, _ := caller.Cancel(ctx, "b1"); !ok {
			t.Fatal("cancel of a delayed task")
		}
		if ok, _ := caller.Cancel(ctx, "a1"); !ok {
			t.Fatal("cancel of a pending task")
		}
		st, _ := caller.Stats(ctx, "a", "b")
		if st[0].Pending != 2 || st[1].Delayed != 1 {
			t.Fatalf("after cancels: %+v", st)
		}
		dead, _ := caller.DeadLetters(ctx, "c", 10)
		if len(dead) != 1 || dead[0].ID != "c-dead" {
			t.Fatalf("dead letters %+v", dead)
		}
	})
}

// Many concurrent queries of one id under each policy, from two processes
// that both listen: the task runs once and every caller sees its result.
func TestAdvBDuplicateStorm(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		r := newRuns()
		a := e.queue(t, taskqueue.WithTaskFunc(r.fn("a")))
		b := e.queue(t, taskqueue.WithTaskFunc(r.fn("b")))
		listen(t, a, []string{"slow"}, 4)
		listen(t, b, []string{"slow"}, 4)
		ctx := ctxT(t, 30*time.Second)
		policies := []taskqueue.Policy{taskqueue.Auto, taskqueue.Local, taskqueue.Remote, taskqueue.LocalFirst, taskqueue.RemoteFirst}
		for k := range 10 {
			id := fmt.Sprint("storm", k)
			var wg sync.WaitGroup
			results := make(chan string, 20)
			for i := range 20 {
				q := []*taskqueue.Queue{a, b}[i%2]
				wg.Go(func() {
					task, err := q.Query(ctx, id, "slow", 30, taskqueue.WithPolicy(policies[(i+k)%5]), taskqueue.WithFallbackAfter(time.Duration(i)*time.Millisecond+time.Microsecond))
					if err != nil {
						t.Errorf("%s: %v", id, err)
						return
					}
					results <- result(t, task)
				})
			}
			wg.Wait()
			close(results)
			seen := map[string]bool{}
			for s := range results {
				seen[s] = true
			}
			if r.count(id) != 1 || len(seen) != 1 {
				t.Fatalf("%s ran at %v; callers saw %v", id, r.where(id), seen)
			}
		}
	})
}
