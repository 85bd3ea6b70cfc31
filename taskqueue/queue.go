package taskqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/batch"
	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/internal/script"
)

// Queue is a task queue on Redis: callers query named tasks and wait for
// their results, which run in the caller's process or on listeners in any
// process (see Policy). Every structure of the queue lives under one hash
// tag, so it works on Redis Cluster.
//
// A Queue is safe for concurrent use. Close it to stop its background
// work.
type Queue struct {
	c      redis.UniversalClient
	p      script.Processor // c, or a batcher in front of it
	keys   keys.Tasks
	prefix string
	cfg    config
	log    *slog.Logger
	id     string // this value's id: owner of its claims, name of its channel
	hub    *hub
	run    *runner

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close
}

// New returns the task queue prefix (suffix DefaultSuffix unless WithSuffix
// is given) on client, which may be a plain, failover or cluster client. It
// returns ErrInvalidKey for an empty or oversized prefix or a prefix or
// suffix holding a brace.
func New(client redis.UniversalClient, prefix string, opts ...Option) (*Queue, error) {
	c, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if p := keys.NamespaceProblem(prefix, c.suffix, true); p != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidKey, p)
	}
	if client == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidArgument)
	}
	q := &Queue{
		c: client, p: client, keys: keys.NewTasks(prefix, c.suffix), prefix: prefix,
		cfg: c, log: c.logger, id: randomID(), done: make(chan struct{}),
	}
	if c.batch > 0 {
		b, err := batch.New(client, c.batch)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidArgument, err)
		}
		q.p = b
	}
	q.hub = newHub(q)
	q.run = newRunner(q)
	return q, nil
}

// Prefix returns the queue's prefix.
func (q *Queue) Prefix() string { return q.prefix }

// Suffix returns the queue's suffix.
func (q *Queue) Suffix() string { return q.cfg.suffix }

// Close stops the queue's background work: waiting Query and Wait calls
// return ErrClosed, Listen calls stop as when their context ends (without
// a grace period), and local runs have their context cancelled. Tasks in
// Redis stay as they are. Close is idempotent.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	close(q.done)
	q.mu.Unlock()
	q.run.close()
	q.hub.close()
	return nil
}

func (q *Queue) isClosed() bool {
	select {
	case <-q.done:
		return true
	default:
		return false
	}
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// exec runs a script through the batcher.
func (q *Queue) exec(ctx context.Context, s *script.Script, key string, args ...any) (any, error) {
	a := make([]any, 0, len(args)+1)
	a = append(a, q.keys.Tag())
	a = append(a, args...)
	v, err := s.Run(ctx, q.p, []string{key}, a...).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: %s: %w", strings.TrimSuffix(s.Name(), ".lua"), err)
	}
	return v, nil
}

// GetTask returns task id as it is in Redis, or ErrNotFound.
func (q *Queue) GetTask(ctx context.Context, id string) (*Task, error) {
	if err := checkKey("id", id); err != nil {
		return nil, err
	}
	m, err := q.c.HGetAll(ctx, q.keys.Task(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: get %q: %w", id, err)
	}
	if len(m) == 0 || m["s"] == "" {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return taskFromMap(id, m), nil
}

// HasTask reports whether task id exists: pending, running, or finished
// and not yet expired or consumed.
func (q *Queue) HasTask(ctx context.Context, id string) (bool, error) {
	if err := checkKey("id", id); err != nil {
		return false, err
	}
	n, err := q.c.Exists(ctx, q.keys.Task(id)).Result()
	if err != nil {
		return false, fmt.Errorf("taskqueue: has %q: %w", id, err)
	}
	return n == 1, nil
}

// Cancel cancels task id: a pending task is withdrawn and ends Cancelled;
// a running one has its context cancelled (cause ErrCancelled) on its
// worker, which then records it Cancelled. It reports false, with no
// change, when the task is unknown or already finished.
func (q *Queue) Cancel(ctx context.Context, id string) (bool, error) {
	if err := checkKey("id", id); err != nil {
		return false, err
	}
	return q.cancel(ctx, id, "", "", "")
}

// cancel cancels incarnation inc ("" any) of task id. When the task is
// claimed for owner (this Queue value's id, or "") by request own, or
// handed to it, it ends at once: no run is to be stopped.
func (q *Queue) cancel(ctx context.Context, id, inc, own, owner string) (bool, error) {
	v, err := q.exec(ctx, cancelScript, q.keys.Task(id), id, randomID(), inc, own, owner, "", 0)
	if err != nil {
		return false, err
	}
	switch v {
	case "cancelled", "signalled":
		return true, nil
	case "requeued", "detached":
		return false, nil
	case "terminal", "none":
		return false, nil
	}
	return false, fmt.Errorf("%w: cancel reply %v", script.ErrReply, v)
}

// detach makes this Queue value, closing, stop being the fallback of
// incarnation inc of task id (see die in queue.lua): a hand-off to it
// fails the task as its remote run did.
func (q *Queue) detach(ctx context.Context, id, inc string) {
	dctx, cancel := detached(ctx)
	defer cancel()
	if _, err := q.exec(dctx, cancelScript, q.keys.Task(id), id, randomID(), inc, "", q.id, "detach", millis(q.cfg.deadTTL)); err != nil {
		q.log.Warn("taskqueue: detaching from a task failed", "id", id, "err", err)
	}
}

// Stats is the state of one task name.
type Stats struct {
	Name      string
	Pending   int64 // ready to run
	Delayed   int64 // waiting out a retry back-off
	Running   int64 // claimed by a worker
	Dead      int64 // dead letters
	Listeners int64 // live listeners
}

// Stats returns the counts of the given task names, or of every name used
// when none is given, in one round trip.
func (q *Queue) Stats(ctx context.Context, names ...string) ([]Stats, error) {
	args := make([]any, 0, len(names)+1)
	args = append(args, millis(q.cfg.deadTTL))
	for _, n := range names {
		if err := checkKey("name", n); err != nil {
			return nil, err
		}
		args = append(args, n)
	}
	v, err := q.exec(ctx, statsScript, q.keys.Seq(), args...)
	if err != nil {
		return nil, err
	}
	rows, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: stats reply %T", script.ErrReply, v)
	}
	out := make([]Stats, 0, len(rows))
	for _, r := range rows {
		a, ok := r.([]any)
		if !ok || len(a) != 6 {
			return nil, fmt.Errorf("%w: stats row %v", script.ErrReply, r)
		}
		name, _ := a[0].(string)
		ns, err := script.Ints(a[1:], 5)
		if err != nil {
			return nil, err
		}
		out = append(out, Stats{Name: name, Pending: ns[0], Delayed: ns[1], Running: ns[2], Dead: ns[3], Listeners: ns[4]})
	}
	return out, nil
}

// DeadLetters returns up to n dead letters of task name, oldest first.
func (q *Queue) DeadLetters(ctx context.Context, name string, n int) ([]*Task, error) {
	if err := checkKey("name", name); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: count %d, must be ≥ 1", ErrInvalidArgument, n)
	}
	v, err := q.exec(ctx, deadScript, q.keys.Name("x", name), name, millis(q.cfg.deadTTL), n)
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr)%2 != 0 {
		return nil, fmt.Errorf("%w: dead letters reply %T", script.ErrReply, v)
	}
	out := make([]*Task, 0, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		id, ok := arr[i].(string)
		if !ok {
			return nil, fmt.Errorf("%w: dead letter id %T", script.ErrReply, arr[i])
		}
		t, err := taskFromFlat(id, arr[i+1])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// Requeue queues dead letter id again, with its attempts reset and a new
// expiry one timeout away. It returns ErrNotFound when there is no such
// task, and an ErrInvalidArgument when the task is not a dead letter.
func (q *Queue) Requeue(ctx context.Context, id string) error {
	if err := checkKey("id", id); err != nil {
		return err
	}
	v, err := q.exec(ctx, requeueScript, q.keys.Task(id), id, randomID())
	if err != nil {
		return err
	}
	switch v {
	case "queued":
		return nil
	case "none":
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return fmt.Errorf("%w: task %q is %v, not a dead letter", ErrInvalidArgument, id, v)
}

// millis converts d to whole milliseconds for a script, at least 1.
func millis(d time.Duration) int64 { return max(d.Milliseconds(), 1) }
