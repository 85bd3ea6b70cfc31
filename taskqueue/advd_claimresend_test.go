package taskqueue_test

import (
	"context"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDClaimResendLapsed: a listener's claim took X but its reply was
// lost (MaxRetries -1); the connection came back only after X's lease
// ran out. The listener resends the claim with the same nonce and
// claim.lua's cache (T|lc) hands X back although its lease lapsed (only
// state and token are checked), so the listener starts a run whose claim
// anyone may take: a Query(Local) of another process does, and X runs
// twice at once until the listener's next heartbeat finds the claim lost.
func TestAdvDClaimResendLapsed(t *testing.T) {
	e := advSingle(t)
	vis := 600 * time.Millisecond
	ov := newAdvcOverlap()
	fn := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		defer ov.enter(task.ID)()
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(time.Second):
			return "ok", nil
		}
	}
	var l *taskqueue.Queue
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("claim.lua")))
	d.cond = func() bool {
		s, o, _ := advcState(context.Background(), l, "X")
		return s == "active" && o == taskqueue.ID(l)
	}
	d.during = func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			ls := advdLease(l, "job", "X")
			if ls > 0 && advdRedisNow(l) > ls+5 {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	l = advQueue(t, e, advcClient(t, d, -1), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	d.armed.Store(true)
	listen(t, l, []string{"job"}, 1)
	ctx := ctxT(t, 10*time.Second)
	sub := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis))
	if _, err := sub.Submit(ctx, "X", "job", nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "the listener's run of X", func() bool { return ov.runs.Load() >= 1 })
	lease, now := advdLease(l, "job", "X"), advdRedisNow(l)
	j := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fn))
	_, err := j.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(5*time.Second))
	time.Sleep(100 * time.Millisecond)
	if !d.didFire() {
		t.Fatal("the claim's reply was not lost")
	}
	if ov.overlaps.Load() > 0 {
		t.Errorf("the listener started X from its resent claim with a lease %d ms in the past; J's Query(Local) (%v) took the lapsed claim and X ran %d times, %d overlapping",
			now-lease, err, ov.runs.Load(), ov.overlaps.Load())
	} else {
		t.Logf("held: lease-now at start %d ms, runs %d, J: %v", lease-now, ov.runs.Load(), err)
	}
}
