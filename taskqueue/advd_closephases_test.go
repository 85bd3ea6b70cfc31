package taskqueue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDCloseRemoteFirstPhases: a RemoteFirst caller (1 attempt) closes
// while its task is queued, while its last remote attempt runs (then
// fails), or right after it failed (handed over): the caller returns
// ErrClosed at once; the task ends dead (failed phases) or done/queued,
// never left claimed by the closed Queue value.
func TestAdvDCloseRemoteFirstPhases(t *testing.T) {
	for _, phase := range []string{"queued", "running", "handed"} {
		t.Run(phase, func(t *testing.T) {
			e := advSingle(t)
			vis := 500 * time.Millisecond
			ctx := ctxT(t, 10*time.Second)
			running := make(chan struct{}, 1)
			goOn := make(chan struct{})
			var l *taskqueue.Queue
			if phase != "queued" {
				l = advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
					taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
						running <- struct{}{}
						<-goOn
						return nil, errors.New("remote failure")
					}))
				listen(t, l, []string{"job"}, 1)
			}
			a := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
				taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
					<-ctx.Done()
					return nil, context.Cause(ctx)
				}))
			res := make(chan error, 1)
			go func() {
				_, err := a.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithMaxAttempts(1),
					taskqueue.WithFallbackAfter(5*time.Second), taskqueue.WithTimeout(8*time.Second))
				res <- err
			}()
			switch phase {
			case "queued":
				waitUntil(t, 3*time.Second, "X queued", func() bool { s, _, _ := advcState(ctx, a, "X"); return s == "pending" })
				_ = a.Close()
			case "running":
				<-running
				_ = a.Close()
				close(goOn)
			case "handed":
				<-running
				// Close the moment the hand-off is made (A's own channel).
				close(goOn)
				waitUntil(t, 3*time.Second, "the hand-off", func() bool { _, o, _ := advcState(ctx, a, "X"); return o == taskqueue.ID(a) })
				_ = a.Close()
			}
			var err error
			select {
			case err = <-res:
			case <-time.After(2 * time.Second):
				t.Fatalf("Query did not return after Close")
			}
			if !errors.Is(err, taskqueue.ErrClosed) {
				t.Errorf("Query after Close: %v, want ErrClosed", err)
			}
			time.Sleep(3 * vis)
			s, o, _ := advcState(ctx, a, "X")
			want := map[string]string{"queued": "pending", "running": "dead", "handed": "dead"}[phase]
			if s != want || s == "active" && o == taskqueue.ID(a) {
				t.Errorf("phase %s: X is %s (owner %s; closed A is %s), want %s", phase, s, o, taskqueue.ID(a), want)
			}
			p, _ := invariants(ctx, a)
			if len(p) > 0 {
				t.Errorf("invariants: %v", p)
			}
		})
	}
}
