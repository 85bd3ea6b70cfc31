package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvARetryWaitsForReapTick: a listener with idle workers left runs a
// task that fails; complete.lua puts it in the delayed set for its back-off
// (10 ms here) but rings no doorbell and wakes no dispatcher: the
// listener's dispatcher sits in BLPOP with the timeout it computed before
// (up to a second), so each retry starts up to a second after it is due.
// The first retry of three attempts with a 10 ms back-off starts ~1 s
// after the failure. (A listener with one worker re-claims when its worker
// frees and waits the computed "next": gaps of 70–100 ms, the 100 ms being
// Redis's resolution of BLPOP timeouts on an idle server, hz 10.)
func TestAdvARetryWaitsForReapTick(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		var mu sync.Mutex
		var starts []time.Time
		worker := e.queue(t, taskqueue.WithRetryBackoff(func(int) time.Duration { return 10 * time.Millisecond }),
			taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				mu.Lock()
				starts = append(starts, time.Now())
				mu.Unlock()
				if task.Attempts < 2 {
					return nil, errors.New("flaky")
				}
				return "ok", nil
			}))
		listen(t, worker, []string{"flaky"}, 4)
		caller := e.queue(t)
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if _, err := caller.Query(ctx, "r", "flaky", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(3)); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		var gaps []time.Duration
		for i := 1; i < len(starts); i++ {
			gaps = append(gaps, starts[i].Sub(starts[i-1]).Round(time.Millisecond))
		}
		t.Logf("3 attempts, back-off 10 ms: %v in all; gaps between attempts %v", took.Round(time.Millisecond), gaps)
		for _, g := range gaps {
			if g > 250*time.Millisecond {
				t.Fatalf("a retry due after 10 ms started %v after the failure (gaps %v)", g, gaps)
			}
		}
	})
}

// TestAdvAWakeupLatency: idle listeners of several names (several Queue
// values), many producers submitting in bursts; every task must start
// promptly (no lost doorbell). Reports the latency distribution.
func TestAdvAWakeupLatency(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 30*time.Second)
		var mu sync.Mutex
		startAt := map[string]time.Time{}
		fn := taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			mu.Lock()
			startAt[task.ID] = time.Now()
			mu.Unlock()
			return nil, nil
		})
		names := []string{"n0", "n1", "n2"}
		for i := range 4 {
			w := e.queue(t, fn)
			listen(t, w, names[i%3:], 2+i)
		}
		producers := make([]*taskqueue.Queue, 6)
		for i := range producers {
			producers[i] = e.queue(t)
		}
		submitAt := map[string]time.Time{}
		var smu sync.Mutex
		const bursts, per = 8, 30
		for b := range bursts {
			var wg sync.WaitGroup
			for p, q := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range per / len(producers) {
						id := fmt.Sprintf("b%d-p%d-%d", b, p, i)
						smu.Lock()
						submitAt[id] = time.Now()
						smu.Unlock()
						if _, err := q.Submit(ctx, id, names[(p+i)%3], nil); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			time.Sleep(time.Duration(100+b*150) * time.Millisecond) // idle gaps, up to > 1 s
		}
		advaWaitFor(t, 10*time.Second, "every task to start", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(startAt) == len(submitAt)
		})
		var lat []time.Duration
		for id, s := range submitAt {
			lat = append(lat, startAt[id].Sub(s))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p := func(f float64) time.Duration { return lat[int(f*float64(len(lat)-1))].Round(100 * time.Microsecond) }
		t.Logf("%d tasks: submit→start p50 %v p99 %v max %v", len(lat), p(0.5), p(0.99), p(1))
		if p(1) > 300*time.Millisecond {
			t.Errorf("a task waited %v to start with idle listeners", p(1))
		}
	})
}

// TestAdvAReapedTaskPickedUpPromptly: a stalled worker's claim runs out
// while every other listener is idle; how long after the claim's deadline
// does the task start again? (Documented: about the visibility timeout
// plus a second.)
func TestAdvAReapedTaskPickedUpPromptly(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		vis := 400 * time.Millisecond
		started := make(chan struct{}, 1)
		stalled := make(chan struct{}) // a stalled process: its run does not return either
		defer close(stalled)
		var stale *taskqueue.Queue
		stale = e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithGracePeriod(50*time.Millisecond), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			taskqueue.PauseHeartbeats(stale, true)
			started <- struct{}{}
			<-stalled
			return nil, context.Cause(ctx)
		}))
		sctx, stopStale := context.WithCancel(ctx)
		sdone := make(chan error, 1)
		go func() { sdone <- stale.Listen(sctx, []string{"j"}, 1) }()
		defer func() { stopStale(); <-sdone }()
		caller := e.queue(t)
		if _, err := caller.Submit(ctx, "x", "j", nil); err != nil {
			t.Fatal(err)
		}
		<-started
		claimed := time.Now()
		var again atomic.Int64
		restart := make(chan time.Time, 1)
		live := e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if again.Add(1) == 1 {
				restart <- time.Now()
			}
			return "ok", nil
		}))
		listen(t, live, []string{"j"}, 2)
		select {
		case at := <-restart:
			d := at.Sub(claimed) - vis
			t.Logf("restarted %v after the claim's deadline (reap tick %v)", d.Round(time.Millisecond), min(time.Second, vis/4))
			if d > vis/4+200*time.Millisecond {
				t.Errorf("restarted %v after the deadline", d)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("never delivered again")
		}
	})
}

// TestAdvAIdleListenStopLatency: how long an idle Listen takes to return
// after its context ends (its dispatcher sits in BLPOP for up to a reap
// tick; go-redis does not abandon a blocking read when the context ends).
func TestAdvAIdleListenStopLatency(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		w := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return nil, nil }))
		var worst time.Duration
		for range 5 {
			lctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- w.Listen(lctx, []string{"idle"}, 1) }()
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			stop()
			<-done
			worst = max(worst, time.Since(start))
		}
		t.Logf("idle Listen returned at worst %v after its context ended", worst.Round(time.Millisecond))
		if worst > 1500*time.Millisecond {
			t.Errorf("idle Listen took %v to return", worst)
		}
	})
}
