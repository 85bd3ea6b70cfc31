package taskqueue_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDExpireTickLate: runner.expire runs only on heartbeat ticks
// (every vis/3), so a run whose base (its start, when no heartbeat since
// confirmed it) falls 0.3..1 tick after a tick is cancelled at the 4th
// tick after it: up to 3.7 ticks = 1.23 vis after its claim, past the
// claim's lease. Here every heartbeat of A fails (Redis unreachable for
// it); A's Query(Local) run of X keeps running after X's lease lapsed,
// and B (another process) takes the lapsed task over and runs it too.
func TestAdvDExpireTickLate(t *testing.T) {
	e := advSingle(t)
	vis := 1500 * time.Millisecond
	P := vis / 3
	hook := newAdvdScriptHook("extend.lua")
	var xDone atomic.Int64 // when A's run of X saw its ctx end (unix ms)
	ov := newAdvcOverlap()
	fnA := func(ctx context.Context, task *taskqueue.Task) (any, error) {
		if task.ID == "R0" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		defer ov.enter(task.ID)()
		select {
		case <-ctx.Done():
			xDone.Store(time.Now().UnixMilli())
			return nil, context.Cause(ctx)
		case <-time.After(4 * time.Second):
			return "A", nil
		}
	}
	a := advQueue(t, e, hookedClient(t, hook), taskqueue.WithVisibilityTimeout(vis), taskqueue.WithTaskFunc(fnA))
	ctx := ctxT(t, 14*time.Second)
	// R0 keeps A's heartbeat loop busy, so that its ticks show on the wire.
	r0ctx, r0cancel := context.WithCancel(ctx)
	defer r0cancel()
	go func() { _, _ = a.Query(r0ctx, "R0", "warm", nil, taskqueue.WithPolicy(taskqueue.Local)) }()
	waitUntil(t, 5*time.Second, "two heartbeats of A", func() bool { return len(hook.sent()) >= 2 })
	// From now on A's heartbeats fail.
	hook.fail.Store(true)
	ts := hook.sent()
	tick := ts[len(ts)-1]
	for time.Until(tick) < 0 {
		tick = tick.Add(P)
	}
	time.Sleep(time.Until(tick.Add(P * 35 / 100))) // 0.35 tick after a tick
	xres := make(chan error, 1)
	go func() {
		_, err := a.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(10*time.Second))
		xres <- err
	}()
	waitUntil(t, 3*time.Second, "A's run of X", func() bool { return ov.runs.Load() == 1 })
	lease := advdLease(a, "job", "X")
	// B: another process, whose Query(Local) of X takes the lapsed claim over.
	b := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			defer ov.enter(task.ID)()
			time.Sleep(300 * time.Millisecond)
			return "B", nil
		}))
	waitUntil(t, 5*time.Second, "X's lease to lapse", func() bool { return advdRedisNow(a) > lease+10 })
	lapsedAt := time.Now().UnixMilli()
	stillRunning := xDone.Load() == 0
	_, berr := b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(5*time.Second))
	<-xres
	if stillRunning || ov.overlaps.Load() > 0 {
		t.Errorf("A's run of X (every heartbeat failing) was still running %d ms after its lease lapsed (its ctx ended %d ms after the lapse); "+
			"B's Query took the lapsed task over (%v): %d runs, %d overlapping. expire should cancel a run before its claim can lapse",
			time.Now().UnixMilli()-lapsedAt, xDone.Load()-lapsedAt, berr, ov.runs.Load(), ov.overlaps.Load())
	}
}
