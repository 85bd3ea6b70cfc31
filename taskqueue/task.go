package taskqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redisallocator/redisallocator/internal/script"
)

// State is where a task is in its life.
type State string

// The states of a task.
const (
	Pending   State = "pending"   // queued, or waiting out a retry back-off
	Active    State = "active"    // claimed by a worker, running
	Done      State = "done"      // finished with a result
	Failed    State = "failed"    // failed in its caller's process (Local), which got the error
	Dead      State = "dead"      // failed its last attempt, or its worker was lost too often: a dead letter
	Cancelled State = "cancelled" // withdrawn or stopped by its caller
	Expired   State = "expired"   // its expiry passed before a worker started it
)

// Terminal reports whether the task has finished: its record no longer
// changes (unless a dead letter is queued again).
func (s State) Terminal() bool {
	switch s {
	case Done, Failed, Dead, Cancelled, Expired:
		return true
	}
	return false
}

// Progress is a running task's last reported progress.
type Progress struct {
	Current, Total float64
	UpdatedAt      time.Time // zero when nothing was reported
}

// Task is one task: what a task function receives, and what Query, Wait
// and GetTask return.
type Task struct {
	ID     string
	Name   string
	Params json.RawMessage // JSON
	// Expiry is when the task expires: it never starts afterwards, and
	// its run's context ends then.
	Expiry time.Time
	State  State
	// Result is the JSON result of a Done task.
	Result json.RawMessage
	// Error is the error message of a failed task, as its worker reported
	// it (for a pending task being retried, the last attempt's).
	Error string
	// Attempts counts the failed attempts; Deliveries the runs started,
	// including the current one and those whose worker was lost.
	Attempts, Deliveries int
	Progress             Progress
	Created              time.Time
	Finished             time.Time // zero until terminal

	q      *Queue // set for a run: Update reports through it
	token  string // the claim's token (from a record: its current claim's)
	owner  string // the id of the Queue value holding the claim
	inc    string // its incarnation (field rq)
	handed bool   // its claim is a hand-off to its caller (field cn "handed")
	herr   string // the error of the remote run that led to the hand-off
	// claimedAt is when the request that claimed it was sent: its claim
	// lasts the visibility timeout from a moment after it.
	claimedAt time.Time
	progress  func(Progress)
}

// DecodeParams unmarshals the task's params into v.
func (t *Task) DecodeParams(v any) error {
	if err := json.Unmarshal(t.Params, v); err != nil {
		return fmt.Errorf("taskqueue: task %q params: %w", t.ID, err)
	}
	return nil
}

// DecodeResult unmarshals the task's result into v.
func (t *Task) DecodeResult(v any) error {
	if err := json.Unmarshal(t.Result, v); err != nil {
		return fmt.Errorf("taskqueue: task %q result: %w", t.ID, err)
	}
	return nil
}

// Err returns the task's failure as a *TaskError, or nil unless the task
// failed, died, was cancelled or expired.
func (t *Task) Err() error {
	switch t.State {
	case Failed, Dead, Cancelled, Expired:
		return &TaskError{ID: t.ID, Name: t.Name, State: t.State, Message: t.Error}
	}
	return nil
}

// Update saves the running task's progress and tells the callers waiting
// for it (a local run's caller, through WithProgress, on the goroutine that
// calls Update). Every update is saved. It returns ErrExpired once the task has
// expired and ErrClaimLost when this run no longer holds the task; nothing
// is saved then. It may only be called on the task a TaskFunc received.
func (t *Task) Update(ctx context.Context, current, total float64) error {
	if t.q == nil {
		return fmt.Errorf("%w: Update on a task that is not running here", ErrInvalidArgument)
	}
	if math.IsNaN(current) || math.IsInf(current, 0) || math.IsNaN(total) || math.IsInf(total, 0) {
		return fmt.Errorf("%w: progress %v/%v", ErrInvalidArgument, current, total)
	}
	if !time.Now().Before(t.Expiry) {
		return fmt.Errorf("taskqueue: task %q: %w", t.ID, ErrExpired)
	}
	v, err := progressScript.Run(ctx, t.q.p, []string{t.q.keys.Task(t.ID)}, t.q.keys.Tag(), t.ID, t.token,
		strconv.FormatFloat(current, 'g', -1, 64), strconv.FormatFloat(total, 'g', -1, 64)).Result()
	if err != nil {
		return fmt.Errorf("taskqueue: progress of %q: %w", t.ID, err)
	}
	switch v {
	case "ok":
		if t.progress != nil {
			t.progress(Progress{Current: current, Total: total, UpdatedAt: time.Now()})
		}
		return nil
	case "lost":
		return fmt.Errorf("taskqueue: task %q: %w", t.ID, ErrClaimLost)
	case "expired":
		return fmt.Errorf("taskqueue: task %q: %w", t.ID, ErrExpired)
	}
	return fmt.Errorf("%w: progress reply %v", script.ErrReply, v)
}

// taskFromFlat decodes a task record (HGETALL as a flat array).
func taskFromFlat(id string, v any) (*Task, error) {
	arr, err := script.Strings(v)
	if err != nil {
		return nil, err
	}
	if len(arr)%2 != 0 {
		return nil, fmt.Errorf("%w: task record of %d values", script.ErrReply, len(arr))
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		m[arr[i]] = arr[i+1]
	}
	return taskFromMap(id, m), nil
}

// taskFromMap decodes a task record. Fields that are missing or malformed
// stay zero.
func taskFromMap(id string, m map[string]string) *Task {
	t := &Task{ID: id, Name: m["n"], State: State(m["s"]), Error: m["err"], token: m["tk"], owner: m["o"], inc: m["rq"], handed: m["cn"] == "handed", herr: m["herr"]}
	if p := m["p"]; p != "" {
		t.Params = json.RawMessage(p)
	}
	if r := m["res"]; r != "" {
		t.Result = json.RawMessage(r)
	}
	t.Expiry = msTime(m["x"])
	t.Created = msTime(m["ct"])
	t.Finished = msTime(m["f"])
	t.Attempts, _ = strconv.Atoi(m["a"])
	t.Deliveries, _ = strconv.Atoi(m["dl"])
	if pu := m["pu"]; pu != "" {
		t.Progress.Current, _ = strconv.ParseFloat(m["pc"], 64)
		t.Progress.Total, _ = strconv.ParseFloat(m["pt"], 64)
		t.Progress.UpdatedAt = msTime(pu)
	}
	return t
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
