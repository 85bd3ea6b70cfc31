package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvACancelRacesCompletion: 300 remote tasks whose caller cancels
// (ctx) at a random moment around the task's completion. Each caller's
// answer must agree with the stored record: a result ⇒ Done; a
// cancellation ⇒ Cancelled or (cancel lost the race) Done; never anything
// else, never a run left active.
func TestAdvACancelRacesCompletion(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 30*time.Second)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			select {
			case <-time.After(time.Duration(500+rand.IntN(2000)) * time.Microsecond):
				return "done", nil
			case <-ctx.Done():
				return nil, context.Cause(ctx)
			}
		}))
		listen(t, worker, []string{"c"}, 32)
		caller := e.queue(t)
		var wg sync.WaitGroup
		var results, cancels, cancelledButDone atomic.Int64
		for g := range 10 {
			wg.Go(func() {
				for k := range 30 {
					id := fmt.Sprint("c", g, "-", k)
					qctx, cancel := context.WithCancel(ctx)
					time.AfterFunc(time.Duration(rand.IntN(6000))*time.Microsecond, cancel)
					task, err := caller.Query(qctx, id, "c", nil, taskqueue.WithPolicy(taskqueue.Remote))
					cancel()
					var got *taskqueue.Task
					deadline := time.Now().Add(3 * time.Second)
					for {
						got, _ = caller.GetTask(ctx, id)
						if got != nil && got.State.Terminal() || time.Now().After(deadline) {
							break
						}
						time.Sleep(5 * time.Millisecond)
					}
					switch {
					case err == nil:
						results.Add(1)
						if task.State != taskqueue.Done || got.State != taskqueue.Done {
							t.Errorf("%s: returned %s, stored %s", id, task.State, got.State)
						}
					case errors.Is(err, context.Canceled) && got == nil:
						cancels.Add(1) // cancelled before the task was created
					case errors.Is(err, context.Canceled):
						cancels.Add(1)
						if got.State == taskqueue.Done {
							cancelledButDone.Add(1)
						} else if got.State != taskqueue.Cancelled {
							t.Errorf("%s: caller cancelled, stored %s", id, got.State)
						}
					default:
						t.Errorf("%s: %v", id, err)
					}
				}
			})
		}
		wg.Wait()
		t.Logf("300 races: %d results, %d cancelled (%d of them finished Done anyway)", results.Load(), cancels.Load(), cancelledButDone.Load())
	})
}

// TestAdvAOnceRacesJoiners: small results (inline in the message): a
// WithOnce query and joiners of the same id, in the same Queue value and
// in others, all get the result; afterwards the id is gone. 100 ids.
func TestAdvAOnceRacesJoiners(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 30*time.Second)
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
			return task.ID, nil
		}))
		listen(t, worker, []string{"o"}, 16)
		qs := []*taskqueue.Queue{e.queue(t), e.queue(t)}
		var wg sync.WaitGroup
		var ok, notFound atomic.Int64
		for i := range 100 {
			id := fmt.Sprint("o", i)
			for j := range 4 {
				wg.Go(func() {
					time.Sleep(time.Duration(rand.IntN(1000)) * time.Microsecond)
					opts := []taskqueue.QueryOption{taskqueue.WithPolicy(taskqueue.Remote)}
					if j == 0 {
						opts = append(opts, taskqueue.WithOnce())
					}
					task, err := qs[j%2].Query(ctx, id, "o", nil, opts...)
					switch {
					case err == nil && result(t, task) == id:
						ok.Add(1)
					case errors.Is(err, taskqueue.ErrNotFound):
						notFound.Add(1)
						t.Errorf("%s (caller %d): %v", id, j, err)
					default:
						t.Errorf("%s (caller %d): %v", id, j, err)
					}
				})
			}
		}
		wg.Wait()
		t.Logf("400 queries of 100 ids (one WithOnce per id): %d results, %d not found", ok.Load(), notFound.Load())
	})
}

// TestAdvAListenerWithdrawnThenReadvertised: Listen's withdrawal (ZREM of
// its listener entry) can be overtaken by a heartbeat that was already on
// its way with the old list of names: extend.lua re-adds the listener for a
// whole visibility timeout after Listen returned. Auto then queues tasks
// for a listener that is gone, and waits for the fallback (half the
// timeout) instead of running them at once. Here the in-flight heartbeat
// is delayed 300 ms to open the window.
func TestAdvAListenerWithdrawnThenReadvertised(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		hook := &advaDelayHook{delay: 300 * time.Millisecond, match: func(c redis.Cmder) bool { return isScript(c, "extend.lua") }}
		c := tg.client(t)
		c.AddHook(hook)
		fn := taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return "ran", nil })
		w, err := taskqueue.New(c, e.ns, append(append([]taskqueue.Option{}, tg.opts...), fn, taskqueue.WithVisibilityTimeout(3*time.Second))...)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		lctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Listen(lctx, []string{"j"}, 1) }()
		advaWaitFor(t, 5*time.Second, "listener", func() bool { st, _ := w.Stats(ctx, "j"); return st[0].Listeners == 1 })
		hook.armed.Store(true)
		advaWaitFor(t, 5*time.Second, "a heartbeat in flight", func() bool { return hook.hits.Load() > 0 })
		stop()
		<-done
		time.Sleep(400 * time.Millisecond) // the delayed heartbeat lands
		st, _ := w.Stats(ctx, "j")
		caller := e.queue(t, fn)
		start := time.Now()
		_, qerr := caller.Query(ctx, "auto", "j", nil, taskqueue.WithTimeout(2*time.Second))
		took := time.Since(start)
		if st[0].Listeners != 0 || took > 500*time.Millisecond {
			t.Fatalf("after Listen returned: %d listener(s) advertised; an Auto query took %v (%v) instead of running locally at once", st[0].Listeners, took.Round(time.Millisecond), qerr)
		}
	})
}

// TestAdvABadInputChangesNothing: the remaining entry points with bad
// arguments fail before sending anything.
func TestAdvABadInputChangesNothing(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 10*time.Second)
		q := e.queue(t)
		long := strings.Repeat("k", 1025)
		for _, id := range []string{"", long} {
			if _, err := q.Cancel(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("Cancel(%d bytes): %v", len(id), err)
			}
			if err := q.Requeue(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("Requeue: %v", err)
			}
			if _, err := q.Wait(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("Wait: %v", err)
			}
			if _, err := q.GetTask(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("GetTask: %v", err)
			}
			if _, err := q.HasTask(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("HasTask: %v", err)
			}
			if _, err := q.DeadLetters(ctx, id, 1); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("DeadLetters: %v", err)
			}
			if _, err := q.Stats(ctx, id); !errors.Is(err, taskqueue.ErrInvalidKey) {
				t.Errorf("Stats: %v", err)
			}
		}
		if _, err := q.DeadLetters(ctx, "n", 0); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("DeadLetters(0): %v", err)
		}
		if _, err := q.Wait(ctx, "i", taskqueue.WithTimeout(-1)); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("Wait with a bad option: %v", err)
		}
		if _, err := q.Query(ctx, "i", "n", nil, taskqueue.WithFallbackAfter(-1)); !errors.Is(err, taskqueue.ErrInvalidArgument) {
			t.Errorf("negative fallback: %v", err)
		}
		if _, err := taskqueue.New(e.tg.client(t), e.ns, taskqueue.WithRetryBackoff(nil)); err == nil {
			t.Error("nil back-off accepted")
		}
		n, err := q.Raw().Exists(ctx, taskqueue.TaskKey(q, "i"), taskqueue.Tag(q)+"|names").Result()
		if err != nil || n != 0 {
			t.Errorf("bad input wrote keys (%d, %v)", n, err)
		}
	})
}
