package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvAConcurrentReapers: a stalled worker (heartbeats paused, its task
// functions hung) holds 60 claims; 8 Queue values listen to the name and
// all reap the expired claims at once. Each task must be requeued exactly
// once (lost claims l=1), delivered exactly twice (dl=2), run exactly once
// on the live listeners, never twice at a time on them, and its stored
// result must be the live run's; the stalled worker's late completions and
// updates fail with ErrClaimLost.
func TestAdvAConcurrentReapers(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 30*time.Second)
		const n = 60
		vis := taskqueue.WithVisibilityTimeout(300 * time.Millisecond)
		release := make(chan struct{})
		var staleStarted atomic.Int64
		var staleUpdates sync.Map
		a := e.queue(t, vis, taskqueue.WithGracePeriod(10*time.Second), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			staleStarted.Add(1)
			<-release
			staleUpdates.Store(task.ID, task.Update(context.Background(), 1, 1))
			return "stale", nil
		}))
		actx, stopA := context.WithCancel(ctx)
		aDone := make(chan error, 1)
		go func() { aDone <- a.Listen(actx, []string{"r"}, n) }()
		advaWaitFor(t, 5*time.Second, "A listening", func() bool { st, _ := a.Stats(ctx, "r"); return st[0].Listeners == 1 })
		caller := e.queue(t)
		results := make(chan error, n)
		for i := range n {
			go func() {
				id := fmt.Sprint("t", i)
				task, err := caller.Query(ctx, id, "r", nil, taskqueue.WithPolicy(taskqueue.Remote))
				if err == nil && result(t, task) == "stale" {
					err = fmt.Errorf("%s: the stale worker's result was delivered", id)
				}
				results <- err
			}()
		}
		advaWaitFor(t, 5*time.Second, "A to hold every task", func() bool { return staleStarted.Load() == n })
		taskqueue.PauseHeartbeats(a, true)

		var mu sync.Mutex
		running := map[string]int{}
		live := newRuns()
		var overlaps atomic.Int64
		for i := range 8 {
			b := e.queue(t, vis, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
				mu.Lock()
				running[task.ID]++
				if running[task.ID] > 1 {
					overlaps.Add(1)
				}
				mu.Unlock()
				live.add(task.ID, strconv.Itoa(i))
				time.Sleep(20 * time.Millisecond)
				mu.Lock()
				running[task.ID]--
				mu.Unlock()
				return "b" + strconv.Itoa(i), nil
			}))
			listen(t, b, []string{"r"}, 8)
		}
		for range n {
			if err := <-results; err != nil {
				t.Error(err)
			}
		}
		close(release)
		time.Sleep(300 * time.Millisecond)
		stopA()
		<-aDone
		bad := 0
		for i := range n {
			id := fmt.Sprint("t", i)
			got, err := caller.GetTask(ctx, id)
			raw, _ := caller.Raw().HGet(ctx, taskqueue.TaskKey(caller, id), "l").Result()
			u, _ := staleUpdates.Load(id)
			uerr, _ := u.(error)
			if err != nil || got.State != taskqueue.Done || got.Deliveries != 2 || raw != "1" || live.count(id) != 1 ||
				result(t, got)[0] != 'b' || !errors.Is(uerr, taskqueue.ErrClaimLost) {
				bad++
				t.Errorf("%s: %v state %s deliveries %d lost %s live runs %v stale Update %v", id, err, got.State, got.Deliveries, raw, live.where(id), uerr)
			}
		}
		problems, _ := invariants(ctx, caller)
		t.Logf("%d claims reaped by 9 concurrent reapers: %d bad, %d overlapping live runs, invariants %v", n, bad, overlaps.Load(), problems)
		if overlaps.Load() > 0 || len(problems) > 0 {
			t.Errorf("overlaps %d, invariants %v", overlaps.Load(), problems)
		}
	})
}
