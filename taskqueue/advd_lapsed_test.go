package taskqueue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/internal/redistest"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvDLapsedJoinUnknownOutcomeStrands: a Query(Local) joining a task
// whose claim lapsed claims it ("lj"), but the reply is lost and not
// resent (MaxRetries -1). Query's give-back cancels incarnation <its own
// nonce>, which is not the task's (rq is the creator's): cancel.lua
// answers "none" and the joiner's claim stays, owned by a Queue value that
// does not run nor heartbeat it. The task is stuck until that claim lapses
// too (one more visibility timeout, one more "lost").
func TestAdvDLapsedJoinUnknownOutcomeStrands(t *testing.T) {
	e := advSingle(t)
	vis := 400 * time.Millisecond
	advcStall(t, e, "X", "job", nil, vis)
	d := newAdvcDialer(hasAll(taskqueue.ScriptHash("submit.lua")))
	j := advQueue(t, e, advcClient(t, d, -1), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return "J", nil }))
	ctx := ctxT(t, 10*time.Second)
	d.armed.Store(true)
	_, err := j.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	if !d.didFire() {
		t.Fatalf("the submit reply was not lost (Query: %v)", err)
	}
	if err == nil {
		t.Fatalf("Query succeeded although its submit's reply was lost")
	}
	st, owner, _ := advcState(ctx, j, "X")
	if st == "active" && owner == taskqueue.ID(j) {
		l, _ := j.Raw().HGet(ctx, taskqueue.TaskKey(j, "X"), "l").Result()
		t.Errorf("after J's Query failed (%v), task X is left active, claimed by J (which neither runs nor heartbeats it; lost count %s): "+
			"nobody can run it until that claim lapses; the give-back should have queued it again (front)", err, l)
	}
}

// TestAdvDLapsedJoinFailureIsFinal: a task queued by a Remote caller with
// 3 attempts; its worker hangs and its claim lapses. A Query(Local) of
// another process joins it, claims it ("lj") and its run fails: runHere
// records outcome "failed" (terminal, a local caller's own failure),
// so the creator gets that error with 2 attempts still left, and no
// listener ever retries it. A listener's run failing would count an
// attempt and retry.
func TestAdvDLapsedJoinFailureIsFinal(t *testing.T) {
	e := advSingle(t)
	vis := 400 * time.Millisecond
	ctx := ctxT(t, 14*time.Second)
	// The worker process: it claims X, then hangs (heartbeats and claims stop).
	hang := newAdvdScriptHook("claim.lua")
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	w := advQueue(t, e, hookedClient(t, hang), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			started <- struct{}{}
			<-release
			return "W", nil
		}))
	defer close(release)
	stopW := listenCtx(t, w, []string{"job"}, 1)
	c := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis))
	cres := make(chan error, 1)
	go func() {
		_, err := c.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithMaxAttempts(3), taskqueue.WithTimeout(12*time.Second))
		cres <- err
	}()
	<-started
	hang.hang.Store(true)
	taskqueue.PauseHeartbeats(w, true)
	waitUntil(t, 5*time.Second, "X's claim to lapse", func() bool {
		l := advdLease(c, "job", "X")
		return l > 0 && advdRedisNow(c) > l+5
	})
	// A healthy listener comes later; meanwhile a local caller joins.
	j := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			return nil, errors.New("J's transient failure")
		}))
	_, jerr := j.Query(ctx, "X", "job", nil, taskqueue.WithPolicy(taskqueue.Local), taskqueue.WithTimeout(3*time.Second))
	ok := advQueue(t, e, redistest.Client(t), taskqueue.WithVisibilityTimeout(vis),
		taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) { return "fine", nil }))
	listen(t, ok, []string{"job"}, 1)
	var cerr error
	select {
	case cerr = <-cres:
	case <-time.After(5 * time.Second):
	}
	rec, _ := c.GetTask(ctx, "X")
	if rec != nil && rec.State == taskqueue.Failed {
		t.Errorf("task X (Remote, 3 attempts) ended %v after one failed run of a Query(Local) joiner (joiner: %v; creator: %v; attempts %d): "+
			"a joiner's failure should count one attempt and leave the task to be retried", rec.State, jerr, cerr, rec.Attempts)
	}
	_ = stopW
}
