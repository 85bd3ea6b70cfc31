package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/script"
)

// Listen runs the tasks queued under names with the queue's task function
// (WithTaskFunc) on at most workers goroutines, until ctx ends or the
// Queue is closed; then it returns nil.
//
// While it runs, the queue advertises a listener for each name (what Auto
// checks), also while every worker is busy. It claims up to as many tasks
// as it has idle workers in one round trip and, when none is ready, blocks
// on Redis until one is queued: it does not poll. Every second (or quarter
// of the visibility timeout, when shorter) it also reclaims the tasks of
// dead workers and promotes due retries for its names.
//
// When ctx ends, Listen stops claiming and withdraws its listeners at once;
// running tasks get the grace period (WithGracePeriod) to finish. Then
// their context is cancelled and they are queued again for another
// worker, at the front and without counting an attempt; Listen waits up to
// one more grace period (at least a second) for them to return. Listen
// returns an error when its arguments are wrong, when its first heartbeat
// fails, or when the Redis client is closed under it.
func (q *Queue) Listen(ctx context.Context, names []string, workers int) error {
	switch {
	case q.cfg.fn == nil:
		return ErrNoTaskFunc
	case len(names) == 0:
		return fmt.Errorf("%w: no task names", ErrInvalidArgument)
	case workers < 1:
		return fmt.Errorf("%w: %d workers, must be ≥ 1", ErrInvalidArgument, workers)
	case q.isClosed():
		return ErrClosed
	}
	seen := map[string]bool{}
	var uniq []string
	for _, n := range names {
		if err := checkKey("name", n); err != nil {
			return err
		}
		if !seen[n] {
			seen[n] = true
			uniq = append(uniq, n)
		}
	}
	names = uniq
	if err := q.hub.ensure(ctx); err != nil {
		return err
	}
	unlisten := q.run.listen(names)
	var withdrawOnce sync.Once
	withdraw := func() { withdrawOnce.Do(func() { q.withdraw(names, unlisten) }) }
	defer withdraw()
	if err := q.run.beat(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	l := &listener{q: q, names: names, workers: workers, freed: make(chan struct{}, 1), inflight: map[string]*Task{}, id: randomID()}
	for _, n := range names {
		l.bellKeys = append(l.bellKeys, q.keys.Name("b", n))
	}
	runCtx, stopRuns := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopRuns(context.Canceled)
	stop, stopCancel := context.WithCancel(ctx)
	defer stopCancel()
	go func() {
		select {
		case <-q.done:
			stopCancel()
		case <-stop.Done():
		}
		withdraw() // at once, not after the grace period
	}()
	derr := l.dispatch(stop, runCtx)

	grace := q.cfg.grace
	if q.isClosed() {
		grace = 0
	}
	finished := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(finished)
	}()
	select {
	case <-finished:
		return derr
	case <-time.After(grace):
	}
	stopRuns(errShutdown)
	select {
	case <-finished:
	case <-time.After(max(grace, time.Second)):
		q.log.Warn("taskqueue: listener stopped with task functions still running; their tasks are queued again", "names", names)
		l.releaseStuck()
	}
	return derr
}

// withdraw stops advertising names that no other Listen of this Queue
// value serves.
func (q *Queue) withdraw(names []string, unlisten func()) {
	q.run.beating.Lock()
	defer q.run.beating.Unlock()
	unlisten()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	q.run.mu.Lock()
	var gone []string
	for _, n := range names {
		if q.run.names[n] == 0 {
			gone = append(gone, n)
		}
	}
	q.run.mu.Unlock()
	_, err := q.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, n := range gone {
			p.ZRem(ctx, q.keys.Name("l", n), q.id)
		}
		return nil
	})
	if err != nil {
		q.log.Warn("taskqueue: withdrawing listeners", "names", gone, "err", err)
	}
}

// listener is one Listen call.
type listener struct {
	q        *Queue
	names    []string
	bellKeys []string // the doorbells of names
	workers  int
	next     int       // where the claim order starts: names take turns first
	tidied   time.Time // when a claim last tidied up (see claim.lua); dispatch goroutine only
	resend   string    // the nonce of a claim of unknown outcome, to send again; dispatch goroutine only
	id       string    // this Listen call's id

	mu       sync.Mutex
	running  int
	inflight map[string]*Task // by id
	freed    chan struct{}    // a worker finished (buffered 1)
	wg       sync.WaitGroup
}

// reapEvery is how often an idle or busy listener reclaims lost claims.
func (l *listener) reapEvery() time.Duration {
	return min(time.Second, l.q.cfg.visibility/4)
}

// dispatch claims tasks and starts their runs until ctx ends, or until
// the Redis client is closed, which it returns.
func (l *listener) dispatch(ctx, runCtx context.Context) error {
	errWait := 50 * time.Millisecond
	for ctx.Err() == nil {
		l.mu.Lock()
		free := l.workers - l.running
		l.mu.Unlock()
		if free == 0 {
			select {
			case <-l.freed:
			case <-ctx.Done():
			case <-time.After(l.reapEvery()):
				_, _, _, _ = l.claim(ctx, 0) // reclaim lost claims while busy
			}
			continue
		}
		tasks, _, next, err := l.claim(ctx, free)
		if errors.Is(err, redis.ErrClosed) {
			return err
		}
		if err != nil {
			if ctx.Err() == nil {
				l.q.log.Warn("taskqueue: claim failed", "names", l.names, "err", err)
				sleep(ctx, errWait)
				errWait = min(2*errWait, 2*time.Second)
			}
			continue
		}
		errWait = 50 * time.Millisecond
		for _, t := range tasks {
			l.mu.Lock()
			l.running++
			l.inflight[t.ID] = t
			l.mu.Unlock()
			l.wg.Add(1)
			go l.work(runCtx, t)
		}
		if len(tasks) == free {
			continue // there may be more
		}
		wait := l.reapEvery()
		if next >= 0 && next < wait {
			wait = max(next, 5*time.Millisecond)
		}
		if err := l.block(ctx, wait); err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			l.q.log.Warn("taskqueue: waiting for tasks failed", "names", l.names, "err", err)
			sleep(ctx, errWait)
		}
	}
	return nil
}

// block waits on the doorbells of the listener's names for at most wait.
// Whole seconds go through BLPop, which also lifts the client's read
// timeout for the wait; shorter waits (short visibility timeouts, retries
// due soon) send a fractional timeout, within the read timeout.
func (l *listener) block(ctx context.Context, wait time.Duration) error {
	if wait >= time.Second && wait%time.Second == 0 {
		return l.q.c.BLPop(ctx, wait, l.bellKeys...).Err()
	}
	args := make([]any, 0, len(l.bellKeys)+2)
	args = append(args, "blpop")
	for _, k := range l.bellKeys {
		args = append(args, k)
	}
	return l.q.c.Do(ctx, append(args, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))...).Err()
}

// claim claims up to n tasks (0: only reclaims lost claims and promotes
// retries). next is how long until the earliest retry is due (-1: none).
func (l *listener) claim(ctx context.Context, n int) ([]*Task, []string, time.Duration, error) {
	q := l.q
	args := make([]any, 0, 7+len(l.names))
	args = append(args, q.id, n, millis(q.cfg.visibility), 64, q.cfg.maxLost, millis(q.cfg.deadTTL), len(l.names))
	for i := range l.names {
		args = append(args, l.names[(l.next+i)%len(l.names)])
	}
	tidy := "0"
	if time.Since(l.tidied) >= time.Second || n == 0 {
		tidy, l.tidied = "1", time.Now()
	}
	// A claim whose outcome is unknown is sent again with its nonce, and
	// gets the tasks it took (see claim.lua).
	nonce := l.resend
	if nonce == "" {
		nonce = randomID()
	}
	args = append(args, nonce, tidy, l.id)
	l.next++
	sent := time.Now()
	v, err := q.exec(ctx, claimScript, q.keys.Seq(), args...)
	if err != nil {
		l.resend = ""
		if unknownOutcome(err) && n > 0 {
			l.resend = nonce
		}
		return nil, nil, 0, err
	}
	l.resend = ""
	arr, ok := v.([]any)
	if !ok || len(arr) != 3 {
		return nil, nil, 0, fmt.Errorf("%w: claim reply %T", script.ErrReply, v)
	}
	flat, err1 := script.Strings(arr[0])
	skipped, err2 := script.Strings(arr[1])
	nextMs, err3 := script.Int64(arr[2])
	if err := errors.Join(err1, err2, err3); err != nil || len(flat)%8 != 0 {
		return nil, nil, 0, fmt.Errorf("%w: claim reply: %v", script.ErrReply, err)
	}
	for _, s := range skipped {
		id, why, _ := strings.Cut(s, " ")
		q.log.Warn("taskqueue: skipped a queued task", "id", id, "reason", why)
	}
	tasks := make([]*Task, 0, len(flat)/8)
	for i := 0; i < len(flat); i += 8 {
		t := &Task{ID: flat[i], token: flat[i+1], Name: flat[i+2], State: Active, q: q, claimedAt: sent}
		if flat[i+3] != "" {
			t.Params = []byte(flat[i+3])
		}
		t.Expiry = msTime(flat[i+4])
		t.Attempts, _ = strconv.Atoi(flat[i+5])
		t.Deliveries, _ = strconv.Atoi(flat[i+6])
		tasks = append(tasks, t)
	}
	next := time.Duration(-1)
	if nextMs >= 0 {
		next = time.Duration(nextMs) * time.Millisecond
	}
	return tasks, skipped, next, nil
}

// work runs one claimed task and reports its end.
func (l *listener) work(runCtx context.Context, t *Task) {
	defer func() {
		l.mu.Lock()
		l.running--
		if l.inflight[t.ID] == t {
			delete(l.inflight, t.ID)
		}
		l.mu.Unlock()
		select {
		case l.freed <- struct{}{}:
		default:
		}
		l.wg.Done()
	}()
	q := l.q
	ctx, end := q.run.start(runCtx, t)
	res, err := q.call(ctx, t)
	ended, cause := ctx.Err() != nil, context.Cause(ctx)
	end()
	var outcome, val string
	switch {
	case err == nil:
		outcome, val = "ok", string(res)
	case ended && errors.Is(cause, ErrClaimLost):
		q.log.Warn("taskqueue: claim lost while the task ran", "id", t.ID, "name", t.Name)
		return
	case ended && errors.Is(cause, ErrCancelled):
		outcome = "cancel"
	case ended && (errors.Is(cause, errShutdown) || errors.Is(cause, ErrClosed)):
		outcome = "front"
	case ended && errors.Is(cause, ErrExpired), errors.Is(err, ErrSkipRetry):
		outcome, val = "dead", err.Error()
	default:
		outcome, val = "fail", err.Error()
	}
	var backoff time.Duration
	if outcome == "fail" {
		backoff = q.cfg.backoff(t.Attempts + 1)
	}
	dctx, cancel := detached(runCtx)
	defer cancel()
	verdict, cerr := q.complete(dctx, t, outcome, val, backoff)
	switch {
	case verdict == "retry":
		// Wake a listener when the retry is due, rather than at its next
		// reclaim tick.
		time.AfterFunc(backoff, func() { q.ring(t.Name) })
	case cerr != nil:
		q.log.Warn("taskqueue: reporting a task's end failed; it will be delivered again", "id", t.ID, "err", cerr)
	case verdict == "lost":
		q.log.Warn("taskqueue: claim lost before the task's end was stored", "id", t.ID, "name", t.Name)
	}
}

// releaseStuck gives up the claims of the runs whose functions ignored
// the end of their context: their tasks are queued again at the front, and
// their late results are refused.
func (l *listener) releaseStuck() {
	l.mu.Lock()
	stuck := make([]*Task, 0, len(l.inflight))
	for _, t := range l.inflight {
		stuck = append(stuck, t)
	}
	l.mu.Unlock()
	for _, t := range stuck {
		l.q.run.forget(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := l.q.complete(ctx, t, "front", "", 0); err != nil {
			l.q.log.Warn("taskqueue: releasing a stuck task failed; its claim will lapse", "id", t.ID, "err", err)
		}
		cancel()
	}
}

// ring rings the doorbell of name, waking a listener blocked on it; the
// bell keeps at most one ring.
func (q *Queue) ring(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	bell := q.keys.Name("b", name)
	_, err := q.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, bell, "1")
		p.LTrim(ctx, bell, 0, 0)
		return nil
	})
	if err != nil {
		q.log.Warn("taskqueue: ringing for a retry failed; a listener finds it within a second", "name", name, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
