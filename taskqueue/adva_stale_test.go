package taskqueue_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvAStaleWorkerResumes: a worker stalls (heartbeats paused) holding
// a task; the task goes to another worker. The stale worker then resumes
// and ends its run (a) with a result after the other completed, (b) with an
// error (which would schedule a retry) after the other completed, (c) with
// a result while the other still runs. In each case the stored result must
// be the second worker's, the stale Update and completion must be refused
// (ErrClaimLost), and the caller must get the second worker's result.
// Variant "same-queue": the second claim is made by the stale worker's own
// Queue value (another of its listeners), so the run replacing the stale
// one lives in the same runner.
func TestAdvAStaleWorkerResumes(t *testing.T) {
	for _, c := range []struct {
		name      string
		staleErr  bool
		beforeEnd bool
		sameQueue bool
	}{
		{name: "result-after"}, {name: "error-after", staleErr: true}, {name: "result-while-running", beforeEnd: true},
		{name: "same-queue", sameQueue: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			forTargets(t, func(t *testing.T, tg target) {
				e := tg.env(t)
				ctx := ctxT(t, 20*time.Second)
				vis := taskqueue.WithVisibilityTimeout(300 * time.Millisecond)
				release := make(chan struct{})
				secondStarted := make(chan struct{})
				secondRelease := make(chan struct{})
				staleUpdate := make(chan error, 1)
				var calls atomic.Int64
				var a *taskqueue.Queue
				fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
					if calls.Add(1) == 1 {
						taskqueue.PauseHeartbeats(a, true)
						<-release
						staleUpdate <- task.Update(context.Background(), 1, 2)
						if c.staleErr {
							return nil, errors.New("stale failure")
						}
						return "stale", nil
					}
					close(secondStarted)
					<-secondRelease
					return "second", nil
				}
				a = e.queue(t, vis, taskqueue.WithTaskFunc(fn))
				listen(t, a, []string{"t"}, 1)
				caller := e.queue(t)
				done := make(chan *taskqueue.Task, 1)
				go func() {
					task, err := caller.Query(ctx, "s", "t", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(3))
					if err != nil {
						t.Error(err)
					}
					done <- task
				}()
				advaWaitFor(t, 5*time.Second, "first run", func() bool { return calls.Load() == 1 })
				if c.sameQueue {
					listen(t, a, []string{"t"}, 1) // a second listener of A's Queue value
				} else {
					b := e.queue(t, vis, taskqueue.WithTaskFunc(fn))
					listen(t, b, []string{"t"}, 1)
				}
				<-secondStarted
				if c.beforeEnd {
					taskqueue.PauseHeartbeats(a, false)
					close(release)
					if err := <-staleUpdate; !errors.Is(err, taskqueue.ErrClaimLost) {
						t.Errorf("stale Update: %v", err)
					}
					time.Sleep(100 * time.Millisecond)
					close(secondRelease)
				} else {
					close(secondRelease)
				}
				task := <-done
				if !c.beforeEnd {
					taskqueue.PauseHeartbeats(a, false)
					close(release)
					if err := <-staleUpdate; !errors.Is(err, taskqueue.ErrClaimLost) {
						t.Errorf("stale Update: %v", err)
					}
				}
				time.Sleep(200 * time.Millisecond)
				got, err := caller.GetTask(ctx, "s")
				if task == nil || result(t, task) != "second" || err != nil || got.State != taskqueue.Done || result(t, got) != "second" || got.Attempts != 0 {
					t.Fatalf("caller got %+v; stored %v %+v", task, err, got)
				}
			})
		})
	}
}
