package taskqueue_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

func echo(ctx context.Context, t *taskqueue.Task) (any, error) {
	var p map[string]any
	if err := t.DecodeParams(&p); err != nil {
		return nil, err
	}
	switch t.Name {
	case "fail":
		return nil, errors.New("boom: " + fmt.Sprint(p["x"]))
	case "nil":
		return nil, nil
	}
	return map[string]any{"echo": p["x"], "name": t.Name}, nil
}

func TestRemoteQuery(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		worker := e.queue(t, taskqueue.WithTaskFunc(echo))
		listen(t, worker, []string{"echo", "fail", "nil"}, 4)
		caller := e.queue(t)
		ctx := ctxT(t, 20*time.Second)
		task, err := caller.Query(ctx, "t1", "echo", map[string]any{"x": 7}, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Echo float64
			Name string
		}
		if err := task.DecodeResult(&out); err != nil || out.Echo != 7 || out.Name != "echo" {
			t.Fatalf("result %s (%v)", task.Result, err)
		}
		if task.State != taskqueue.Done {
			t.Fatalf("state %s", task.State)
		}
		_, err = caller.Query(ctx, "t2", "fail", map[string]any{"x": "y"}, taskqueue.WithPolicy(taskqueue.Remote))
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.Message != "boom: y" || !errors.Is(err, taskqueue.ErrTaskFailed) {
			t.Fatalf("failing task: %v", err)
		}
		task, err = caller.Query(ctx, "t3", "nil", nil, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil || string(task.Result) != "null" {
			t.Fatalf("nil task: %v %s", err, task.Result)
		}
	})
}

func TestLocalQuery(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		q := e.queue(t, taskqueue.WithTaskFunc(echo))
		ctx := ctxT(t, 20*time.Second)
		task, err := q.Query(ctx, "l1", "echo", map[string]any{"x": "a"}, taskqueue.WithPolicy(taskqueue.Local))
		if err != nil || task.State != taskqueue.Done {
			t.Fatal(err, task)
		}
		got, err := q.GetTask(ctx, "l1")
		if err != nil || got.State != taskqueue.Done || string(got.Result) != string(task.Result) {
			t.Fatalf("GetTask: %v %+v", err, got)
		}
		// Auto with no listener runs locally.
		task, err = q.Query(ctx, "l2", "fail", map[string]any{"x": 1})
		var te *taskqueue.TaskError
		if !errors.As(err, &te) || te.State != taskqueue.Failed || te.Message != "boom: 1" {
			t.Fatalf("local failure: %v", err)
		}
		_ = task
	})
}
