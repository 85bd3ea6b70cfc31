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

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvAInvariantsUnderRandomLoad: a randomized concurrent workload —
// Query with every policy (some WithOnce), Submit, Wait, Cancel, Requeue
// of dead letters, failing and flaky tasks with retries, listeners
// starting and stopping, workers stalling (heartbeats paused) — over a
// small id space so that operations on one id collide. The invariants
// (checkScript) are checked atomically every 10 ms while it runs and at the
// end; every call must return within its timeout plus slack, with an
// expected kind of error; and no id may run twice at the same time on
// workers that are not stalled.
//
// Variant "with-once" also reads results WithOnce; its check leaves out the
// dead-letter sets, which a read-once of a dead letter leaves stale (see
// TestAdvAOnceReadOfDeadLetterLeavesItListed).
func TestAdvAInvariantsUnderRandomLoad(t *testing.T) {
	for _, withOnce := range []bool{false, true} {
		name := "no-once"
		if withOnce {
			name = "with-once"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			advaRandomLoad(t, withOnce)
		})
	}
}

func advaRandomLoad(t *testing.T, withOnce bool) {
	filter := func(p []string) []string {
		if !withOnce {
			return p
		}
		var out []string
		for _, s := range p {
			if !strings.Contains(s, "x|") {
				out = append(out, s)
			}
		}
		return out
	}
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 40*time.Second)
		vis := 300 * time.Millisecond
		names := []string{"ok", "fail", "flaky", "slow", "block"}

		var mu sync.Mutex
		runningLive := map[string]int{}
		who := map[string][]string{}
		var overlaps atomic.Int64
		var runsTotal atomic.Int64
		fn := func(q **taskqueue.Queue, stalled *atomic.Bool) taskqueue.TaskFunc {
			return func(ctx context.Context, task *taskqueue.Task) (any, error) {
				runsTotal.Add(1)
				live := !stalled.Load()
				if live {
					mu.Lock()
					runningLive[task.ID]++
					me := fmt.Sprintf("%s@%s(%v)", taskqueue.ID(*q)[:6], time.Now().Format("05.000"), task.Expiry.Format("05.000"))
					who[task.ID] = append(who[task.ID], me)
					if runningLive[task.ID] > 1 {
						overlaps.Add(1)
						t.Logf("overlap on %s: name %s, deliveries %d, attempts %d: %v", task.ID, task.Name, task.Deliveries, task.Attempts, who[task.ID])
					}
					mu.Unlock()
					defer func() {
						mu.Lock()
						runningLive[task.ID]--
						who[task.ID] = append(who[task.ID], "end:"+me+"@"+time.Now().Format("05.000")+":"+fmt.Sprint(context.Cause(ctx)))
						mu.Unlock()
					}()
				}
				if rand.IntN(3) == 0 {
					_ = task.Update(ctx, 1, 3)
				}
				switch task.Name {
				case "fail":
					return nil, errors.New("fails")
				case "flaky":
					if task.Attempts < 1 {
						return nil, errors.New("flaky")
					}
				case "slow":
					select {
					case <-time.After(time.Duration(rand.IntN(60)) * time.Millisecond):
					case <-ctx.Done():
						return nil, context.Cause(ctx)
					}
				case "block":
					select {
					case <-time.After(time.Duration(rand.IntN(400)) * time.Millisecond):
					case <-ctx.Done():
						return nil, context.Cause(ctx)
					}
				}
				return task.ID, nil
			}
		}
		backoff := taskqueue.WithRetryBackoff(func(int) time.Duration { return time.Duration(rand.IntN(30)) * time.Millisecond })
		type member struct {
			q       *taskqueue.Queue
			stalled *atomic.Bool
		}
		var members []member
		for range 4 {
			m := member{stalled: new(atomic.Bool)}
			m.q = e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithGracePeriod(100*time.Millisecond), backoff,
				taskqueue.WithMaxLost(3), taskqueue.WithTaskFunc(fn(&m.q, m.stalled)))
			members = append(members, m)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var unexpected, pendingLeaks atomic.Int64
		var ops atomic.Int64
		fail := func(format string, args ...any) {
			unexpected.Add(1)
			t.Errorf(format, args...)
		}
		// Listeners that come and go, workers that stall.
		for i, m := range members {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					lctx, cancel := context.WithTimeout(ctx, time.Duration(300+rand.IntN(900))*time.Millisecond)
					err := m.q.Listen(lctx, names[i%2:], 1+rand.IntN(4))
					cancel()
					if err != nil {
						fail("Listen: %v", err)
					}
					time.Sleep(time.Duration(rand.IntN(100)) * time.Millisecond)
				}
			})
			if i == 0 {
				// Member 0 stalls now and then; its runs are never counted
				// as live ones.
				m.stalled.Store(true)
				wg.Go(func() {
					paused := false
					for {
						select {
						case <-stop:
							taskqueue.PauseHeartbeats(m.q, false)
							return
						case <-time.After(time.Duration(200+rand.IntN(400)) * time.Millisecond):
						}
						paused = !paused
						taskqueue.PauseHeartbeats(m.q, paused)
					}
				})
			}
		}
		// Callers. The id space moves on every 700 ms, so that finished
		// ids (kept for their timeout) do not end the runs.
		t0 := time.Now()
		var used sync.Map
		policies := []taskqueue.Policy{taskqueue.Auto, taskqueue.Local, taskqueue.Remote, taskqueue.LocalFirst, taskqueue.RemoteFirst}
		for c := range 12 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					ops.Add(1)
					m := members[1+rand.IntN(len(members)-1)]
					id := fmt.Sprintf("id%d-%d", rand.IntN(25), time.Since(t0)/(700*time.Millisecond))
					used.Store(id, true)
					name := names[rand.IntN(len(names))]
					timeout := time.Duration(200+rand.IntN(1500)) * time.Millisecond
					opts := []taskqueue.QueryOption{taskqueue.WithTimeout(timeout), taskqueue.WithMaxAttempts(1 + rand.IntN(3)),
						taskqueue.WithPolicy(policies[rand.IntN(len(policies))]), taskqueue.WithFallbackAfter(time.Duration(rand.IntN(300)) * time.Millisecond)}
					if withOnce && rand.IntN(4) == 0 {
						opts = append(opts, taskqueue.WithOnce())
					}
					start := time.Now()
					var err error
					switch k := rand.IntN(10); {
					case k < 5:
						qctx, cancel := context.WithTimeout(ctx, time.Duration(100+rand.IntN(2000))*time.Millisecond)
						_, err = m.q.Query(qctx, id, name, c, opts...)
						cancel()
					case k < 7:
						_, err = m.q.Submit(ctx, id, name, c, opts...)
					case k < 8:
						wctx, cancel := context.WithTimeout(ctx, time.Duration(rand.IntN(500))*time.Millisecond)
						_, err = m.q.Wait(wctx, id)
						cancel()
					case k < 9:
						_, err = m.q.Cancel(ctx, id)
					default:
						err = m.q.Requeue(ctx, id)
						if errors.Is(err, taskqueue.ErrInvalidArgument) || errors.Is(err, taskqueue.ErrNotFound) {
							err = nil
						}
					}
					if el := time.Since(start); el > timeout+2500*time.Millisecond {
						fail("%s call took %v (timeout %v)", id, el, timeout)
					}
					var te *taskqueue.TaskError
					switch {
					case withOnce && err != nil && err.Error() == "pending":
						// Known: TestAdvAOnceQueryOfRequeuedDeadLetterLeaksPending.
						pendingLeaks.Add(1)
					case err == nil, errors.As(err, &te), errors.Is(err, taskqueue.ErrTimeout), errors.Is(err, taskqueue.ErrNotFound), errors.Is(err, taskqueue.ErrCancelled),
						errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.Is(err, taskqueue.ErrNoTaskFunc):
					default:
						fail("%s: unexpected error %v", id, err)
					}
				}
			})
		}
		// The checker.
		var checks atomic.Int64
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
				p, err := invariants(ctx, members[0].q)
				if err != nil {
					fail("checker: %v", err)
					return
				}
				p = filter(p)
				checks.Add(1)
				if len(p) > 0 {
					fail("invariants broken: %v", p)
				}
			}
		})
		time.Sleep(6 * time.Second)
		close(stop)
		wg.Wait()
		p, err := invariants(ctx, members[0].q)
		p = filter(p)
		if err != nil || len(p) > 0 {
			t.Errorf("final invariants: %v %v", p, err)
		}
		st, _ := members[0].q.Stats(ctx)
		if overlaps.Load() > 0 {
			t.Errorf("%d runs started while the same id ran on a live worker", overlaps.Load())
		}
		t.Logf("%d operations, %d runs, %d invariant checks, %d unexpected, %d errPending leaks, %d overlapping runs on live workers; final stats %+v",
			ops.Load(), runsTotal.Load(), checks.Load(), unexpected.Load(), pendingLeaks.Load(), overlaps.Load(), st)
		// Liveness: a clean listener of every name; every task must end
		// (each expires within 1.7 s of its creation at the latest).
		clean := e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn(new(*taskqueue.Queue), new(atomic.Bool))))
		listen(t, clean, names, 8)
		deadline := time.Now().Add(4 * time.Second)
		for {
			var open []string
			for id := range used.Range {
				id := id.(string)
				if got, err := clean.GetTask(ctx, id); err == nil && !got.State.Terminal() {
					open = append(open, fmt.Sprintf("%s %s (expiry %v ago)", id, got.State, time.Since(got.Expiry).Round(time.Millisecond)))
				}
			}
			if len(open) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("tasks still open 4 s after the load stopped, with a live listener: %v", open)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}
