package taskqueue_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// advcBig is a result larger than the 64 KiB inline limit: waiters must
// read the record.
var advcBig = strings.Repeat("r", 100<<10)

// TestAdvCOnceJoinerLosesToNextIncarnation: B waits (Wait, another
// process) for incarnation I1 of X, whose result is too large to travel
// in the message. A's WithOnce query consumes I1 (moved to T|g|X); a new
// Query of X creates I2, runs it and consumes it WithOnce too: T|g|X is
// overwritten by I2 (RENAME). B's read, slower than both, finds neither
// its incarnation's record nor its consumed copy: Wait fails with
// ErrNotFound although B waited for I1, which finished Done a moment ago
// ("callers that waited for that incarnation find it there" for a minute).
func TestAdvCOnceJoinerLosesToNextIncarnation(t *testing.T) {
	e := advSingle(t)
	ctx := ctxT(t, 15*time.Second)
	release := make(chan struct{})
	w := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
		<-release
		return advcBig, nil
	}))
	listenCtx(t, w, []string{"job"}, 1)
	a := advQueue(t, e, redistest.Client(t))
	aRes := make(chan error, 1)
	go func() {
		_, err := a.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
		aRes <- err
	}()
	waitUntil(t, 5*time.Second, "X running", func() bool { st, _, _ := advcState(ctx, a, "X"); return st == "active" })
	var on atomic.Bool
	hook := delayHook{on: &on, d: 600 * time.Millisecond, shas: map[string]bool{taskqueue.AdvBScriptHash("look"): true}}
	b := advQueue(t, e, hookedClient(t, hook))
	bRes := make(chan error, 1)
	go func() {
		task, err := b.Wait(ctx, "X")
		if err == nil && string(task.Result) != `"`+advcBig+`"` {
			err = errors.New("wrong result")
		}
		bRes <- err
	}()
	waitUntil(t, 5*time.Second, "B registered", func() bool { return registered(ctx, a, b, "X") })
	on.Store(true) // B's next read of X is slow
	close(release)
	if err := <-aRes; err != nil {
		t.Fatalf("A: %v", err)
	}
	c := advQueue(t, e, redistest.Client(t), taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return advcBig, nil }))
	if _, err := c.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithOnce()); err != nil {
		t.Fatalf("C: %v", err)
	}
	if err := <-bRes; err != nil {
		t.Errorf("B waited for X's first incarnation, which finished Done and was consumed WithOnce, then X ran and was consumed again: B's Wait: %v; want the first incarnation's result", err)
	}
}

// TestAdvCOnceConsistency (held): after a WithOnce read consumed a done
// task, a dead letter and a failed local run, GetTask, HasTask, Stats and
// DeadLetters all agree the task is gone, and a joiner in another process
// (registered before the end) gets the large result.
func TestAdvCOnceConsistency(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 15*time.Second)
		release := make(chan struct{})
		w := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if task.Name == "dies" {
				return nil, errors.New("boom")
			}
			<-release
			return advcBig, nil
		}))
		listen(t, w, []string{"job", "dies"}, 2)
		a := e.queue(t)
		aRes := make(chan error, 1)
		go func() {
			_, err := a.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithOnce())
			aRes <- err
		}()
		waitUntil(t, 5*time.Second, "X running", func() bool { st, _, _ := advcState(ctx, a, "X"); return st == "active" })
		b := e.queue(t)
		bRes := make(chan *taskqueue.Task, 1)
		go func() {
			task, _ := b.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote))
			bRes <- task
		}()
		waitUntil(t, 5*time.Second, "B registered", func() bool { return registered(ctx, a, b, "X") })
		close(release)
		if err := <-aRes; err != nil {
			t.Fatalf("A: %v", err)
		}
		if bt := <-bRes; bt == nil || len(bt.Result) != len(advcBig)+2 {
			t.Errorf("joiner B did not get the large result")
		}
		if _, err := a.Query(ctx, "D", "dies", nil, taskqueue.WithPolicy(taskqueue.Remote)); err == nil {
			t.Fatal("want a dead letter")
		}
		if _, err := a.Query(ctx, "D", "dies", nil, taskqueue.WithOnce()); err == nil {
			t.Fatal("the once read of a dead letter returns its failure")
		}
		for _, id := range []string{"X", "D"} {
			if _, err := a.GetTask(ctx, id); !errors.Is(err, taskqueue.ErrNotFound) {
				t.Errorf("GetTask(%s) after its once read: %v", id, err)
			}
			if ok, _ := a.HasTask(ctx, id); ok {
				t.Errorf("HasTask(%s) after its once read", id)
			}
		}
		st, _ := a.Stats(ctx, "job", "dies")
		dl, _ := a.DeadLetters(ctx, "dies", 10)
		if st[0].Pending+st[0].Running+st[0].Dead+st[1].Pending+st[1].Running+st[1].Dead != 0 || len(dl) != 0 {
			t.Errorf("after once reads: stats %+v, dead letters %d", st, len(dl))
		}
		if p, _ := invariants(ctx, a); len(p) > 0 {
			t.Errorf("invariants: %v", p)
		}
		// A new Query of X right after the consume runs it again.
		task, err := a.Query(ctx, "X", "dies", nil, taskqueue.WithPolicy(taskqueue.Remote))
		if task == nil || task.State != taskqueue.Dead {
			t.Errorf("a new Query of the consumed id: %v %v", task, err)
		}
	})
}
