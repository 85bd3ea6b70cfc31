package taskqueue_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// TestAdvANonUTF8SurvivesTheMessage: the completion message carries the
// record as JSON built by cjson, which passes bytes that are not UTF-8
// through; Go's json.Unmarshal replaces them with U+FFFD. Names, error
// messages and raw JSON results holding such bytes reach a waiting caller
// altered, while GetTask (and a caller that read the record) sees the
// stored bytes: two readers of one task see different values. (Odd ids
// and names are otherwise promised to pass through unchanged.)
func TestAdvANonUTF8SurvivesTheMessage(t *testing.T) {
	forTargets(t, func(t *testing.T, tg target) {
		e := tg.env(t)
		ctx := ctxT(t, 20*time.Second)
		name := "n\xff\xfe"
		worker := e.queue(t, taskqueue.WithTaskFunc(func(ctx context.Context, task *taskqueue.Task) (any, error) {
			if task.ID == "err" {
				return nil, errors.New("bad byte \xff here")
			}
			return json.RawMessage("\"r\xff\""), nil
		}))
		listen(t, worker, []string{name}, 1)
		caller := e.queue(t)
		task, err := caller.Query(ctx, "ok", name, nil, taskqueue.WithPolicy(taskqueue.Remote))
		if err != nil {
			t.Fatal(err)
		}
		stored, _ := caller.GetTask(ctx, "ok")
		_, qerr := caller.Query(ctx, "err", name, nil, taskqueue.WithPolicy(taskqueue.Remote))
		var te *taskqueue.TaskError
		errors.As(qerr, &te)
		storedErr, _ := caller.GetTask(ctx, "err")
		if task.Name != stored.Name || string(task.Result) != string(stored.Result) || te == nil || te.Message != storedErr.Error || te.Name != storedErr.Name {
			t.Fatalf("the waiting caller got name %q result %q error %q name %q; stored: name %q result %q error %q",
				task.Name, task.Result, te.Message, te.Name, stored.Name, stored.Result, storedErr.Error)
		}
	})
}
