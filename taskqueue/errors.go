package taskqueue

import (
	"context"
	"errors"
	"fmt"

	"github.com/redisallocator/redisallocator/internal/keys"
)

var (
	// ErrInvalidKey reports an empty or oversized task id or name, or a
	// namespace that cannot be used. Nothing is sent to Redis.
	ErrInvalidKey = errors.New("taskqueue: invalid key")

	// ErrInvalidArgument reports a bad argument other than a key: a
	// negative timeout, an unknown policy, params that are not JSON, a
	// worker count below 1. Nothing is sent to Redis.
	ErrInvalidArgument = errors.New("taskqueue: invalid argument")

	// ErrPayloadTooLarge reports params, or a task function's result,
	// larger than the queue's limit (WithMaxPayload). Params that are too
	// large are refused before anything is sent; a result that is too
	// large fails its task with this error.
	ErrPayloadTooLarge = errors.New("taskqueue: payload too large")

	// ErrNotFound is returned by GetTask, Wait and Requeue when there is
	// no such task: it never existed, its record expired, or a read with
	// WithOnce consumed it.
	ErrNotFound = errors.New("taskqueue: task not found")

	// ErrTimeout is wrapped by the error of Query and Wait when the
	// query's timeout passed before the task finished. It also wraps
	// context.DeadlineExceeded.
	ErrTimeout = fmt.Errorf("taskqueue: timed out: %w", context.DeadlineExceeded)

	// ErrExpired is returned by Task.Update once the task's expiry has
	// passed, and is the cause of a task context ended by its expiry. A
	// task that expired before a worker started it ends in state Expired.
	ErrExpired = fmt.Errorf("taskqueue: task expired: %w", context.DeadlineExceeded)

	// ErrClaimLost is returned by Task.Update, and is the cause of the task
	// context, when this worker's claim on the task ended: it stalled past
	// the visibility timeout and the task went to another worker, or the
	// caller took it over. Such a worker can store neither progress nor a
	// result for the task.
	ErrClaimLost = errors.New("taskqueue: claim lost")

	// ErrCancelled is the cause of a task context whose caller cancelled
	// the task, and is wrapped by the error of a query whose task was
	// cancelled.
	ErrCancelled = errors.New("taskqueue: task cancelled")

	// ErrNoTaskFunc is returned when a policy needs to run a task locally
	// and the Queue has no task function (WithTaskFunc), and by Listen.
	ErrNoTaskFunc = errors.New("taskqueue: no task function")

	// ErrSkipRetry, wrapped by the error a task function returns, makes the
	// task fail at once, without its remaining attempts.
	ErrSkipRetry = errors.New("taskqueue: skip retry")

	// ErrTaskFailed is matched (errors.Is) by every *TaskError.
	ErrTaskFailed = errors.New("taskqueue: task failed")

	// ErrClosed is returned by the methods of a closed Queue.
	ErrClosed = errors.New("taskqueue: closed")
)

// TaskError is the error of a task that failed: its function returned an
// error (in this process or on a remote listener), its worker was lost too
// often, or it expired before it started. Message is the error text as the
// worker reported it.
type TaskError struct {
	ID, Name string
	State    State
	Message  string
}

func (e *TaskError) Error() string {
	return fmt.Sprintf("taskqueue: task %q (%s) %s: %s", e.ID, e.Name, e.State, e.Message)
}

// Is reports ErrTaskFailed, and ErrCancelled or ErrExpired for a task in
// that state.
func (e *TaskError) Is(target error) bool {
	switch target {
	case ErrTaskFailed:
		return true
	case ErrCancelled:
		return e.State == Cancelled
	case ErrExpired:
		return e.State == Expired
	}
	return false
}

func checkKey(what, k string) error {
	if p := keys.Problem(k); p != "" {
		return fmt.Errorf("%w: task %s: %s", ErrInvalidKey, what, p)
	}
	return nil
}
