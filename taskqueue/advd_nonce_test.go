package taskqueue_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDNonceResends: the reply of steal / complete / claim is lost once
// and go-redis does not resend (MaxRetries -1): the library's own resend
// with the same nonce must find the first request's effect: one run, the
// caller gets the result, the record is done.
func TestAdvDNonceResends(t *testing.T) {
	for _, sc := range []struct{ script, policy string }{
		{"steal.lua", "remotefirst"}, {"complete.lua", "local"}, {"complete.lua", "listener"}, {"claim.lua", "listener"},
	} {
		t.Run(sc.script+"/"+sc.policy, func(t *testing.T) {
			e := advSingle(t)
			var runs atomic.Int64
			fn := func(ctx context.Context, task *taskqueue.Task) (any, error) { runs.Add(1); return "r", nil }
			d := newAdvcDialer(hasAll(taskqueue.ScriptHash(sc.script)))
			broken := advQueue(t, e, advcClient(t, d, -1), taskqueue.WithTaskFunc(fn))
			ctx := ctxT(t, 10*time.Second)
			d.armed.Store(true)
			var task *taskqueue.Task
			var err error
			switch sc.policy {
			case "remotefirst":
				task, err = broken.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.RemoteFirst), taskqueue.WithFallbackAfter(50*time.Millisecond))
			case "local":
				task, err = broken.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local))
			case "listener":
				listen(t, broken, []string{"job"}, 2)
				caller := advQueue(t, e, redistest.Client(t))
				task, err = caller.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(5*time.Second))
			}
			waitUntil(t, 3*time.Second, "the lost reply", d.didFire)
			time.Sleep(300 * time.Millisecond) // the resend
			if rec, _ := broken.GetTask(ctx, "X"); rec == nil || rec.State != taskqueue.Done {
				t.Errorf("record after the resend: %v", rec)
			}
			if err != nil || runs.Load() != 1 || task == nil || task.State != taskqueue.Done {
				t.Errorf("%s reply lost once: Query %v, %d runs, task %v", sc.script, err, runs.Load(), task)
			}
		})
	}
}
