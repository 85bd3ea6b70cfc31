package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redisallocator/redisallocator/internal/script"
)

// runner keeps the tasks a Queue value runs (locally for a query, or for a
// listener) and the names it listens to, and heartbeats them all in one
// round trip every third of the visibility timeout: the claims are
// extended, the listeners advertised. A claim found lost or a task found
// cancelled has its run's context cancelled.
type runner struct {
	q *Queue
	// beating is held for a whole heartbeat, and by withdraw: a heartbeat
	// that read a name before Listen stopped cannot advertise it again
	// after Listen withdrew it.
	beating sync.Mutex

	mu     sync.Mutex
	runs   map[string]*run // by task id
	names  map[string]int  // names listened to → number of Listen calls
	lastOK time.Time       // last successful heartbeat
	loop   bool            // the heartbeat loop runs
	paused bool            // tests: heartbeats are skipped, as in a long stall
	done   chan struct{}
	closed bool
}

// run is one task running here.
type run struct {
	id, name, token string
	since           time.Time // when it started: its claim was made before
	cancel          context.CancelCauseFunc
}

func newRunner(q *Queue) *runner {
	return &runner{q: q, runs: map[string]*run{}, names: map[string]int{}, done: make(chan struct{})}
}

// errShutdown is the cause of the context of a task whose listener stopped
// before it finished: it is queued again.
var errShutdown = errors.New("taskqueue: listener stopped")

// start registers the run of t (claimed with t.token) and returns its
// context, which ends at the task's expiry, and the function that ends the
// run.
func (r *runner) start(parent context.Context, t *Task) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, t.Expiry, ErrExpired)
	since := t.claimedAt
	if since.IsZero() {
		since = time.Now()
	}
	ru := &run{id: t.ID, name: t.Name, token: t.token, since: since, cancel: cancel}
	r.mu.Lock()
	if r.closed {
		cancel(ErrClosed)
	}
	if old := r.runs[t.ID]; old != nil {
		old.cancel(ErrClaimLost) // a newer claim of ours replaced it
	}
	r.runs[t.ID] = ru
	r.ensureLoop()
	r.mu.Unlock()
	return ctx, func() {
		cancelDeadline()
		cancel(context.Canceled)
		r.mu.Lock()
		if r.runs[t.ID] == ru {
			delete(r.runs, t.ID)
		}
		r.mu.Unlock()
	}
}

// running reports whether this Queue value runs t under its current claim.
func (r *runner) running(t *Task) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ru := r.runs[t.ID]
	return ru != nil && ru.token == t.token
}

// forget stops heartbeating the run of t (claimed with t.token), whose
// claim is given up while its function still runs.
func (r *runner) forget(t *Task) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ru := r.runs[t.ID]; ru != nil && ru.token == t.token {
		delete(r.runs, t.ID)
	}
}

// cancelRun cancels the run of task id with cause.
func (r *runner) cancelRun(id string, cause error) {
	r.mu.Lock()
	ru := r.runs[id]
	r.mu.Unlock()
	if ru != nil {
		ru.cancel(cause)
	}
}

// listen adds names to those advertised; the returned function removes
// them.
func (r *runner) listen(names []string) func() {
	r.mu.Lock()
	for _, n := range names {
		r.names[n]++
	}
	r.ensureLoop()
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		for _, n := range names {
			if r.names[n]--; r.names[n] <= 0 {
				delete(r.names, n)
			}
		}
		r.mu.Unlock()
	}
}

// ensureLoop starts the heartbeat loop; r.mu is held.
func (r *runner) ensureLoop() {
	if r.loop || r.closed {
		return
	}
	r.loop = true
	r.lastOK = time.Now()
	go r.heartbeats()
}

func (r *runner) heartbeats() {
	every := r.q.cfg.visibility / 3
	t := time.NewTicker(every)
	defer t.Stop()
	// Runs whose claims may lapse are looked for twenty times per
	// visibility timeout, so each is cancelled within 0.95 of it.
	check := time.NewTicker(max(r.q.cfg.visibility/20, time.Millisecond))
	defer check.Stop()
	var beating atomic.Bool // a heartbeat is on its way
	for {
		select {
		case <-r.done:
			return
		case <-check.C:
			r.expire()
			continue
		case <-t.C:
		}
		r.expire()
		if !beating.CompareAndSwap(false, true) {
			continue // a slow heartbeat: expire cancels the runs it fails to keep
		}
		go func() {
			defer beating.Store(false)
			// It may take up to the visibility timeout: the claims are
			// lost by then anyway.
			ctx, cancel := context.WithTimeout(context.Background(), r.q.cfg.visibility)
			defer cancel()
			if err := r.beat(ctx); err != nil {
				r.q.log.Warn("taskqueue: heartbeat failed", "err", err)
			}
		}()
	}
}

// expire cancels (cause ErrClaimLost) the runs whose claims may have
// lapsed: no heartbeat that extended them, nor their claim, was sent
// within nine tenths of the visibility timeout. Another worker may have
// the task by then.
func (r *runner) expire() {
	limit := r.q.cfg.visibility * 9 / 10
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ru := range r.runs {
		base := r.lastOK
		if ru.since.After(base) {
			base = ru.since
		}
		if time.Since(base) >= limit {
			ru.cancel(ErrClaimLost)
		}
	}
}

// beat sends one heartbeat, when there is anything to beat for.
func (r *runner) beat(ctx context.Context) error {
	r.beating.Lock()
	defer r.beating.Unlock()
	r.mu.Lock()
	names := make([]string, 0, len(r.names))
	for n := range r.names {
		names = append(names, n)
	}
	runs := make([]*run, 0, len(r.runs))
	for _, ru := range r.runs {
		runs = append(runs, ru)
	}
	paused := r.paused
	r.mu.Unlock()
	if paused {
		return nil
	}
	if len(names) == 0 && len(runs) == 0 {
		r.mu.Lock()
		r.lastOK = time.Now()
		r.mu.Unlock()
		return nil
	}
	vis := r.q.cfg.visibility
	args := make([]any, 0, 4+len(names)+3*len(runs))
	args = append(args, r.q.id, millis(vis), millis(vis), len(names))
	for _, n := range names {
		args = append(args, n)
	}
	for _, ru := range runs {
		args = append(args, ru.name, ru.id, ru.token)
	}
	sent := time.Now()
	v, err := r.q.exec(ctx, extendScript, r.q.keys.Seq(), args...)
	if err != nil {
		return err // expire cancels the runs whose claims may lapse
	}
	r.mu.Lock()
	r.lastOK = sent
	r.mu.Unlock()
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return fmt.Errorf("%w: extend reply %v", script.ErrReply, v)
	}
	lost, err1 := script.Strings(arr[0])
	cancelled, err2 := script.Strings(arr[1])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	for _, id := range lost {
		r.cancelToken(id, runs, ErrClaimLost)
	}
	for _, id := range cancelled {
		r.cancelToken(id, runs, ErrCancelled)
	}
	return nil
}

// cancelToken cancels the run of id among runs (the one the heartbeat
// was about, not a newer one).
func (r *runner) cancelToken(id string, runs []*run, cause error) {
	for _, ru := range runs {
		if ru.id == id {
			ru.cancel(cause)
		}
	}
}

func (r *runner) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.done)
	for _, ru := range r.runs {
		ru.cancel(ErrClosed)
	}
}

// call runs the task function on t, turning a panic into an error and the
// result into JSON.
func (q *Queue) call(ctx context.Context, t *Task) (res json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			q.log.Error("taskqueue: task function panicked", "id", t.ID, "name", t.Name, "panic", p, "stack", string(debug.Stack()))
			res, err = nil, fmt.Errorf("taskqueue: task function panicked: %v", p)
		}
	}()
	v, err := q.cfg.fn(ctx, t)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: result: %w", ErrSkipRetry, err)
	}
	if len(b) > q.cfg.maxPayload {
		return nil, fmt.Errorf("%w: %w: result of %d bytes, limit %d", ErrSkipRetry, ErrPayloadTooLarge, len(b), q.cfg.maxPayload)
	}
	return b, nil
}

// complete reports the end of a run: outcome and val as complete.lua takes
// them, and the back-off before a retry. It returns the script's verdict ("lost", "done", …).
func (q *Queue) complete(ctx context.Context, t *Task, outcome, val string, backoff time.Duration) (string, error) {
	nonce := randomID()
	var v any
	var err error
	for try := 0; ; try++ {
		v, err = q.exec(ctx, completeScript, q.keys.Task(t.ID), t.ID, t.token, outcome, val, millis(backoff),
			millis(q.cfg.deadTTL), millis(q.cfg.visibility), nonce)
		if err == nil || !unknownOutcome(err) || ctx.Err() != nil || try == 2 {
			break
		}
		// The same request again: it gets the first one's answer.
		sleep(ctx, 50*time.Millisecond<<try)
	}
	if err != nil {
		return "", err
	}
	arr, err := script.Strings(v)
	if err != nil || len(arr) != 1 {
		return "", fmt.Errorf("%w: complete reply %v", script.ErrReply, v)
	}
	return arr[0], nil
}

// detached returns a context for reporting a run's end: it survives the
// caller's cancellation but not forever.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
