package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDShortVisNoFalseLoss: healthy Redis, very short visibility
// timeouts, -race load: listeners and local queries of the same Queue
// values run tasks 3-5 visibility timeouts long; none may be cancelled
// with ErrClaimLost and none may run twice.
func TestAdvDShortVisNoFalseLoss(t *testing.T) {
	for _, vis := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond} {
		vis := vis
		t.Run(vis.String(), func(t *testing.T) {
			forTargets(t, func(t *testing.T, tg target) {
				e := tg.env(t)
				var lost, runs atomic.Int64
				ov := newAdvcOverlap()
				fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
					defer ov.enter(task.ID)()
					runs.Add(1)
					select {
					case <-ctx.Done():
						if errors.Is(context.Cause(ctx), taskqueue.ErrClaimLost) {
							lost.Add(1)
						}
						return nil, context.Cause(ctx)
					case <-time.After(4 * vis):
						return "ok", nil
					}
				}
				qs := []*taskqueue.Queue{}
				for i := 0; i < 3; i++ {
					q := e.queue(t, taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
					listen(t, q, []string{"job"}, 4)
					qs = append(qs, q)
				}
				ctx := ctxT(t, 14*time.Second)
				var wg sync.WaitGroup
				var errs atomic.Int64
				for i := 0; i < 60; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						pol := []taskqueue.Policy{taskqueue.Remote, taskqueue.Local, taskqueue.Auto, taskqueue.LocalFirst, taskqueue.RemoteFirst}[i%5]
						_, err := qs[i%3].Query(ctx, fmt.Sprint("T", i), "job", i, taskqueue.WithPolicy(pol), taskqueue.WithTimeout(10*time.Second))
						if err != nil {
							errs.Add(1)
							t.Logf("query %d (%v): %v", i, pol, err)
						}
					}(i)
				}
				wg.Wait()
				if lost.Load() > 0 || ov.overlaps.Load() > 0 || errs.Load() > 0 {
					t.Errorf("%s, vis %v, healthy Redis: %d runs, %d cancelled with ErrClaimLost, %d overlapping, %d queries failed", tg.name, vis, runs.Load(), lost.Load(), ov.overlaps.Load(), errs.Load())
				} else {
					t.Logf("vis %v: %d runs, no false loss", vis, runs.Load())
				}
			})
		})
	}
}
