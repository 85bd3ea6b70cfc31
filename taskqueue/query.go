package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/script"
)

// Query runs task id of the given name with params (encoded as JSON) as
// policy says (WithPolicy; default Auto) and waits for its result, at most
// its timeout (WithTimeout). It returns the finished task; the error is
// nil when the task is Done, else a *TaskError carrying the message of the
// failure (wherever it ran), or the waiting's own error.
//
// Duplicate ids: the id names the task. When task id is pending or
// running, Query joins it: it waits for that task's result (the name,
// params and options of the second call are ignored). When task id has
// finished (done, failed or dead) and its record is still kept, Query
// returns it at once (with WithOnce, deleting it). Otherwise a new task is
// created.
//
// A task that was cancelled or expired is not a result: a query of its id
// replaces it with a new task.
//
// When ctx ends, or the timeout passes, before the task finished, a Query
// that created the task cancels it (a worker running it sees its context
// cancelled); a Query that joined one just stops waiting.
//
// Waiting costs no polling: the worker's completion wakes the caller
// through the Queue value's one subscription, shared by all its waiting
// calls.
func (q *Queue) Query(ctx context.Context, id, name string, params any, opts ...QueryOption) (*Task, error) {
	cfg, p, err := q.prepare(id, name, params, opts)
	if err != nil {
		return nil, err
	}
	var mode string
	switch cfg.policy {
	case Local:
		if q.cfg.fn == nil {
			return nil, ErrNoTaskFunc
		}
		mode = "l"
	case Remote, RemoteFirst:
		mode = "q"
	case LocalFirst:
		mode = "q"
		if q.cfg.fn != nil {
			mode = "l"
		}
	case Auto:
		mode = "q"
		if q.cfg.fn != nil {
			mode = "a"
		}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.timeout, ErrTimeout)
	defer cancel()
	if err := q.hub.ensure(ctx); err != nil {
		return nil, q.waitErr(ctx, id, err)
	}
	w := q.hub.watch(id)
	defer q.hub.unwatch(w)
	fallback := "0"
	if q.canFallBack(cfg) {
		fallback = "1"
	}
	nonce := randomID()
	cfg.inc = nonce
	sent := time.Now()
	v, err := q.exec(ctx, submitScript, q.keys.Task(id), id, name, p, millis(cfg.timeout), cfg.maxAttempts, q.id, mode, q.id,
		millis(q.cfg.visibility), fallback, nonce, q.cfg.maxLost, millis(q.cfg.deadTTL))
	if err != nil {
		if unknownOutcome(err) {
			// The task may have been created, perhaps claimed for this
			// caller, who will not run it: withdraw it.
			q.giveBack(ctx, id, nonce, nonce)
		}
		return nil, q.waitErr(ctx, id, err)
	}
	code, rest, err := reply(v)
	if err != nil {
		return nil, err
	}
	switch code {
	case "done":
		return q.finished(ctx, w, id, rest, cfg)
	case "join":
		if len(rest) == 2 {
			cfg.inc, _ = rest[1].(string)
		}
		return q.await(ctx, w, id, cfg, false)
	case "q":
		return q.await(ctx, w, id, cfg, true)
	case "lj":
		// Joined a task whose claim had lapsed, and claimed it to run it
		// here: its own name and params.
		if len(rest) != 1 {
			return nil, fmt.Errorf("%w: submit reply", script.ErrReply)
		}
		t, err := taskFromFlat(id, rest[0])
		if err != nil {
			return nil, err
		}
		cfg.inc, cfg.joined = t.inc, true
		t.claimedAt = sent
		return q.runHere(ctx, w, t, cfg)
	case "l":
		t, err := localTask(id, name, p, rest)
		if err != nil {
			return nil, err
		}
		t.claimedAt = sent

		return q.runHere(ctx, w, t, cfg)
	}
	return nil, fmt.Errorf("%w: submit reply %q", script.ErrReply, code)
}

// Submit queues task id of the given name with params for listeners,
// without waiting; Wait, GetTask or a Query with the same id get its
// result. It reports whether it created the task: false, with nothing
// changed, when task id already exists (pending, running, or finished and
// still kept). WithPolicy, WithFallbackAfter, WithOnce and WithProgress do
// not apply.
func (q *Queue) Submit(ctx context.Context, id, name string, params any, opts ...QueryOption) (bool, error) {
	cfg, p, err := q.prepare(id, name, params, opts)
	if err != nil {
		return false, err
	}
	v, err := q.exec(ctx, submitScript, q.keys.Task(id), id, name, p, millis(cfg.timeout), cfg.maxAttempts, "", "q", q.id,
		millis(q.cfg.visibility), "0", randomID(), q.cfg.maxLost, millis(q.cfg.deadTTL))
	if err != nil {
		return false, err
	}
	code, _, err := reply(v)
	if err != nil {
		return false, err
	}
	return code == "q", nil
}

// Wait waits for the result of task id, submitted by any process, until
// ctx ends, on the same wake-up path as Query. It returns ErrNotFound when
// there is no such task. WithOnce and WithProgress apply; the other
// options do not. Ending ctx does not cancel the task.
func (q *Queue) Wait(ctx context.Context, id string, opts ...QueryOption) (*Task, error) {
	if err := checkKey("id", id); err != nil {
		return nil, err
	}
	cfg, err := q.queryConfig(opts)
	if err != nil {
		return nil, err
	}
	if q.isClosed() {
		return nil, ErrClosed
	}
	if err := q.hub.ensure(ctx); err != nil {
		return nil, err
	}
	w := q.hub.watch(id)
	defer q.hub.unwatch(w)
	return q.await(ctx, w, id, cfg, false)
}

// prepare validates a query's arguments and encodes its params.
func (q *Queue) prepare(id, name string, params any, opts []QueryOption) (queryConfig, string, error) {
	if err := checkKey("id", id); err != nil {
		return queryConfig{}, "", err
	}
	if err := checkKey("name", name); err != nil {
		return queryConfig{}, "", err
	}
	cfg, err := q.queryConfig(opts)
	if err != nil {
		return cfg, "", err
	}
	p, err := q.encode(params)
	if err != nil {
		return cfg, "", err
	}
	if q.isClosed() {
		return cfg, "", ErrClosed
	}
	return cfg, p, nil
}

// encode turns params into JSON: raw JSON (json.RawMessage or []byte) must
// be valid, anything else is marshalled.
func (q *Queue) encode(params any) (string, error) {
	var b []byte
	switch v := params.(type) {
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(params); err != nil {
			return "", fmt.Errorf("%w: params: %w", ErrInvalidArgument, err)
		}
	}
	if len(b) == 0 {
		b = []byte("null")
	}
	if len(b) > q.cfg.maxPayload {
		return "", fmt.Errorf("%w: params of %d bytes, limit %d", ErrPayloadTooLarge, len(b), q.cfg.maxPayload)
	}
	if !json.Valid(b) {
		return "", fmt.Errorf("%w: params are not valid JSON", ErrInvalidArgument)
	}
	return string(b), nil
}

// reply splits a script reply {code, rest...}.
func reply(v any) (string, []any, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return "", nil, fmt.Errorf("%w: reply %T", script.ErrReply, v)
	}
	code, ok := arr[0].(string)
	if !ok {
		return "", nil, fmt.Errorf("%w: reply code %T", script.ErrReply, arr[0])
	}
	return code, arr[1:], nil
}

// localTask builds the task a local run gets from an {"l", token, expiry,
// created} reply: its first delivery unless the caller says otherwise.
func localTask(id, name, params string, rest []any) (*Task, error) {
	ss, err := script.Strings(rest)
	if err != nil || len(ss) != 3 {
		return nil, fmt.Errorf("%w: claim for a local run: %v", script.ErrReply, rest)
	}
	return &Task{
		ID: id, Name: name, Params: json.RawMessage(params), State: Active, Deliveries: 1,
		Expiry: msTime(ss[1]), Created: msTime(ss[2]), token: ss[0],
	}, nil
}

// finished returns a terminal task from its record, deleting it first
// when once is asked.
func (q *Queue) finished(ctx context.Context, w *watch, id string, rest []any, cfg queryConfig) (*Task, error) {
	if len(rest) != 1 {
		return nil, fmt.Errorf("%w: record reply", script.ErrReply)
	}
	t, err := taskFromFlat(id, rest[0])
	if err != nil {
		return nil, err
	}
	if cfg.once {
		cfg.inc = t.inc
		switch got, err := q.look(ctx, id, cfg, ""); {
		case err == nil || errors.As(err, new(*TaskError)):
			t = got
		case errors.Is(err, errPending), errors.Is(err, ErrNotFound):
			// Queued again (a dead letter requeued), or consumed by
			// another caller, since: the finished record stands, not
			// deleted by this call.
		default:
			return nil, err
		}
	}
	return t, t.Err()
}

// errPending is look's error when the task is not finished yet.
var errPending = errors.New("pending")

// look reads task id (registering this Queue value to be told about it
// when qid is set): a terminal task is returned (and deleted with once),
// errPending when it runs, ErrNotFound when there is none.
func (q *Queue) look(ctx context.Context, id string, cfg queryConfig, qid string) (*Task, error) {
	once := "0"
	if cfg.once {
		once = "1"
	}
	v, err := q.exec(ctx, lookScript, q.keys.Task(id), qid, once, id, randomID(), cfg.inc)
	if err != nil {
		return nil, err
	}
	code, rest, err := reply(v)
	if err != nil {
		return nil, err
	}
	switch code {
	case "none":
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	case "done", "wait":
		if len(rest) != 1 {
			return nil, fmt.Errorf("%w: look reply", script.ErrReply)
		}
		t, err := taskFromFlat(id, rest[0])
		if err != nil {
			return nil, err
		}
		if code == "wait" {
			return t, errPending
		}
		return t, t.Err()
	}
	return nil, fmt.Errorf("%w: look reply %q", script.ErrReply, code)
}

// canFallBack reports whether a query with cfg runs its queued task here
// should no listener start it in time or its remote runs fail.
func (q *Queue) canFallBack(cfg queryConfig) bool {
	return q.cfg.fn != nil && (cfg.policy == RemoteFirst || cfg.policy == Auto)
}

// await waits for task id to finish. owner is set for the query that
// queued the task: it cancels the task when it gives up, and runs it here
// as its policy says (RemoteFirst, Auto): when no listener started it by
// the fallback point, when its worker's claim lapsed, or when its remote
// runs failed (the task is then handed to it, see die in queue.lua).
func (q *Queue) await(ctx context.Context, w *watch, id string, cfg queryConfig, owner bool) (*Task, error) {
	fallBack := owner && q.canFallBack(cfg)
	var fallback <-chan time.Time
	if fallBack {
		timer := time.NewTimer(cfg.fallback)
		defer timer.Stop()
		fallback = timer.C
	}
	check := !owner // a joiner or Wait reads the state first (and registers)
	pastFallback := false
	var lastProg time.Time
	report := func(p Progress) {
		if cfg.progress != nil && !p.UpdatedAt.IsZero() && !p.UpdatedAt.Before(lastProg) {
			lastProg = p.UpdatedAt
			cfg.progress(p)
		}
	}
	reportMsg := func(p progressMsg) {
		if p.token != cfg.ranToken { // not the progress of this call's own failed local run
			report(p.Progress)
		}
	}
	for {
		var done *Task // the task, once it is known to have finished
		if check {
			check = false
			t, err := q.look(ctx, id, queryConfig{inc: cfg.inc}, q.id)
			if t != nil && cfg.inc == "" {
				cfg.inc = t.inc // Wait: the incarnation found
			}
			switch {
			case errors.Is(err, errPending):
				if t.token != cfg.ranToken {
					report(t.Progress)
				}
				if fallBack && t.State == Active && t.handed && t.owner == q.id && !q.run.running(t) {
					// Handed to this caller after its remote runs failed.
					return q.runHere(ctx, w, t, cfg)
				}
				if fallBack && pastFallback && t.State == Pending {
					// Pending again (its listener stopped or died) after
					// the fallback point: take it over now.
					fallback = time.After(0)
				}
			case err == nil || errors.As(err, new(*TaskError)):
				done = t
			case errors.Is(err, ErrNotFound):
				// Another call of this process may have read it once and
				// shared it just before deleting it.
				select {
				case t := <-w.hint:
					if t != nil {
						return t, t.Err()
					}
				default:
				}
				return nil, err
			case errors.Is(err, redis.ErrClosed):
				return nil, fmt.Errorf("taskqueue: task %q: %w", id, err)
			default:
				if ctx.Err() != nil {
					return nil, q.giveUp(ctx, id, owner, cfg.inc)
				}
				q.log.Warn("taskqueue: reading a task failed", "id", id, "err", err)
			}
		}
		if done == nil {
			kick := q.hub.kicked()
			select {
			case t := <-w.hint:
				// Progress sent before the end is reported first.
				select {
				case p := <-w.prog:
					reportMsg(p)
				default:
				}
				if t != nil && cfg.inc != "" && t.inc != cfg.inc {
					t = nil // about an earlier incarnation of the id: read the state
				}
				if t == nil {
					check = true
				}
				done = t
			case p := <-w.prog:
				reportMsg(p)
			case <-kick:
				check = true
			case <-fallback:
				pastFallback = true
				t, again, err := q.takeOver(ctx, w, id, cfg)
				if again > 0 {
					// A live listener runs it: look again when its claim
					// would lapse, should its worker die.
					fallback = time.After(again)
					continue
				}
				return t, err
			case <-ctx.Done():
				return nil, q.giveUp(ctx, id, owner, cfg.inc)
			case <-q.done:
				if fallBack {
					q.detach(ctx, id, cfg.inc) // no more hand-offs to a closed Queue
				}
				return nil, ErrClosed
			}
			if done == nil {
				continue
			}
		}
		if fallBack && done.State == Dead {
			// Its remote runs failed and it was not handed over (its hand-off
			// was used up): run it here.
			t, again, err := q.takeOver(ctx, w, id, cfg)
			if again > 0 {
				fallback = time.After(again)
				continue
			}
			return t, err
		}
		q.hub.share(w, done)
		if cfg.once {
			// Shared first: a call of this process reading it after the
			// delete gets it from the share.
			if _, err := q.look(ctx, id, cfg, ""); err != nil && !errors.As(err, new(*TaskError)) && !errors.Is(err, ErrNotFound) {
				q.log.Warn("taskqueue: deleting a read-once result failed", "id", id, "err", err)
			}
		}
		return done, done.Err()
	}
}

// giveUp ends a wait whose ctx ended; the owner cancels the task (its
// incarnation inc).
func (q *Queue) giveUp(ctx context.Context, id string, owner bool, inc string) error {
	if owner {
		q.giveBack(ctx, id, inc, "")
	}
	return q.waitErr(ctx, id, ctx.Err())
}

// giveBack cancels incarnation inc of task id, which its caller no longer
// waits for, in the background of ctx; a claim for this caller by request
// own, or a hand-off to it, ends at once.
func (q *Queue) giveBack(ctx context.Context, id, inc, own string) {
	dctx, cancel := detached(ctx)
	defer cancel()
	if _, err := q.cancel(dctx, id, inc, own, q.id); err != nil {
		q.log.Warn("taskqueue: cancelling an abandoned task failed", "id", id, "err", err)
	}
}

// unknownOutcome reports whether err leaves it unknown if Redis ran the
// command: anything but an error reply from Redis.
func unknownOutcome(err error) bool {
	var rerr redis.Error
	return !errors.As(err, &rerr)
}

// waitErr describes err of a wait for task id: ErrTimeout when the query's
// timeout passed.
func (q *Queue) waitErr(ctx context.Context, id string, err error) error {
	if errors.Is(context.Cause(ctx), ErrTimeout) {
		return fmt.Errorf("taskqueue: task %q: %w", id, ErrTimeout)
	}
	return fmt.Errorf("taskqueue: task %q: %w", id, err)
}

// takeOver claims task id for a local run (RemoteFirst's fallback) unless
// a live listener runs it: it can then no longer run anywhere else. When a
// listener runs it, it returns how long until that claim would lapse.
func (q *Queue) takeOver(ctx context.Context, w *watch, id string, cfg queryConfig) (*Task, time.Duration, error) {
	nonce := randomID()
	var v any
	var err error
	var sent time.Time
	for try := 0; ; try++ {
		sent = time.Now()
		v, err = q.exec(ctx, stealScript, q.keys.Task(id), id, q.id, millis(q.cfg.visibility), nonce, q.cfg.maxLost, millis(q.cfg.deadTTL))
		if err == nil || !unknownOutcome(err) || ctx.Err() != nil || try == 2 {
			break
		}
		sleep(ctx, 50*time.Millisecond<<try) // the same request again: it finds its claim
	}
	if err != nil {
		if unknownOutcome(err) {
			q.giveBack(ctx, id, cfg.inc, nonce)
		}
		return nil, 0, q.waitErr(ctx, id, err)
	}
	code, rest, err := reply(v)
	if err != nil {
		return nil, 0, err
	}
	switch code {
	case "none":
		return nil, 0, fmt.Errorf("%w: %q", ErrNotFound, id)
	case "done":
		t, err := q.finished(ctx, w, id, rest, cfg)
		return t, 0, err
	case "active":
		ss, err := script.Strings(rest)
		if err != nil || len(ss) != 1 {
			return nil, 0, fmt.Errorf("%w: steal reply %v", script.ErrReply, rest)
		}
		ms, err := strconv.ParseInt(ss[0], 10, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: steal reply %v", script.ErrReply, rest)
		}
		return nil, time.Duration(ms)*time.Millisecond + 20*time.Millisecond, nil
	case "l":
		if len(rest) != 1 {
			return nil, 0, fmt.Errorf("%w: steal reply", script.ErrReply)
		}
		t, err := taskFromFlat(id, rest[0])
		if err != nil {
			return nil, 0, err
		}
		t.claimedAt = sent
		t, err = q.runHere(ctx, w, t, cfg)
		return t, 0, err
	}
	return nil, 0, fmt.Errorf("%w: steal reply %q", script.ErrReply, code)
}

// runHere runs t, claimed for this Queue value, with the local task
// function, and records its end. LocalFirst hands a failed run to the
// listeners and waits for them.
func (q *Queue) runHere(ctx context.Context, w *watch, t *Task, cfg queryConfig) (*Task, error) {
	t.q, t.progress = q, cfg.progress
	t.State = Active
	rctx, end := q.run.start(ctx, t)
	res, err := q.call(rctx, t)
	ended, cause := rctx.Err() != nil, context.Cause(rctx)
	end()
	t.progress = nil
	// The messages of this run (its progress, told to this process too)
	// are not news to its caller.
	drain(w)
	outcome, val := "ok", string(res)
	switch {
	case err == nil:
	case ended && errors.Is(cause, ErrClaimLost):
		// Someone else has the task now: wait for their result.
		return q.await(ctx, w, t.ID, cfg, false)
	case ended && errors.Is(cause, ErrClosed) && t.handed:
		// Closing while running a hand-off: the task fails as its remote
		// run did, as if this caller had never been its fallback.
		outcome, val = "dead", t.herr
	case ended && errors.Is(cause, ErrClosed), cfg.joined && ctx.Err() != nil:
		// Closing, or a joiner that stops waiting: others may want it.
		outcome, val = "front", ""
	case ctx.Err() != nil || ended && errors.Is(cause, ErrCancelled):
		outcome, val = "cancel", ""
	case cfg.joined && errors.Is(err, ErrSkipRetry):
		outcome, val = "dead", err.Error()
	case cfg.joined:
		// A joiner's run is an attempt like a listener's: retried while
		// attempts are left.
		outcome, val = "fail", err.Error()
	case cfg.policy == LocalFirst && !errors.Is(err, ErrSkipRetry):
		outcome, val = "requeue", ""
	default:
		outcome, val = "failed", err.Error()
	}
	var backoff time.Duration
	if outcome == "fail" {
		backoff = q.cfg.backoff(t.Attempts + 1)
	}
	dctx, cancel := detached(ctx)
	defer cancel()
	verdict, cerr := q.complete(dctx, t, outcome, val, backoff)
	if cerr != nil {
		return nil, fmt.Errorf("taskqueue: recording the end of task %q: %w", t.ID, cerr)
	}
	switch {
	case verdict == "retry":
		time.AfterFunc(backoff, func() { q.ring(t.Name) })
		return q.await(ctx, w, t.ID, cfg, false)
	case ended && errors.Is(cause, ErrClosed) && verdict != "lost":
		return nil, ErrClosed
	case verdict == "lost", outcome == "fail", outcome == "dead":
		return q.await(ctx, w, t.ID, cfg, false)
	case outcome == "front" && ctx.Err() != nil:
		return nil, q.waitErr(ctx, t.ID, ctx.Err())
	case outcome == "front":
		return nil, ErrClosed
	case outcome == "requeue":
		q.log.Info("taskqueue: local run failed; the task goes to listeners", "id", t.ID, "err", err)
		cfg.policy, cfg.ranToken = Remote, t.token
		return q.await(ctx, w, t.ID, cfg, !cfg.joined)
	case outcome == "cancel":
		return nil, q.waitErr(ctx, t.ID, cmpErr(ctx.Err(), ErrCancelled))
	}
	t.q, t.token, t.owner = nil, "", ""
	t.Finished = time.Now()
	if outcome == "ok" {
		t.State, t.Result = Done, res
	} else {
		t.State, t.Error = Failed, val
	}
	q.hub.share(w, t)
	if cfg.once {
		if _, err := q.look(dctx, t.ID, cfg, ""); err != nil && !errors.As(err, new(*TaskError)) && !errors.Is(err, ErrNotFound) {
			q.log.Warn("taskqueue: deleting a read-once result failed", "id", t.ID, "err", err)
		}
	}
	return t, t.Err()
}

// drain empties w's buffers.
func drain(w *watch) {
	for {
		select {
		case <-w.hint:
		case <-w.prog:
		default:
			return
		}
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
