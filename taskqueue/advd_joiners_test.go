package taskqueue_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDTwoLapsedJoiners: two Query(Local) callers of two processes
// join a lapsed task at once: one runs it, both get its result, one run.
func TestAdvDTwoLapsedJoiners(t *testing.T) {
	for i := 0; i < 5; i++ {
		e := advSingle(t)
		vis := 300 * time.Millisecond
		advcStall(t, e, "X", "job", nil, vis)
		ov := newAdvcOverlap()
		fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
			defer ov.enter(task.ID)()
			time.Sleep(150 * time.Millisecond)
			return "r", nil
		}
		ctx := ctxT(t, 10*time.Second)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for k := 0; k < 2; k++ {
			q := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
			wg.Add(1)
			go func(k int) {
				defer wg.Done()
				_, errs[k] = q.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
			}(k)
		}
		wg.Wait()
		if ov.runs.Load() != 1 || errs[0] != nil || errs[1] != nil {
			t.Errorf("round %d: %d runs, errors %v", i, ov.runs.Load(), errs)
		}
	}
}
