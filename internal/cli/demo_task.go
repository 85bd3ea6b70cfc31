package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/internal/keys"
	"github.com/redisallocator/redisallocator/taskqueue"
)

// demoTaskSuffix is the namespace suffix of the demo's task queue: its keys
// are {<prefix>|demo-tasks}|..., apart from any real queue of the prefix
// (whose default suffix is taskqueue.DefaultSuffix).
const demoTaskSuffix = "demo-tasks"

// The demo's task: "resize" makes a thumbnail of a photo in demoResizeSteps
// steps of demoTimings.taskStep, reporting its progress after each.
const (
	demoTaskName    = "resize"
	demoResizeSteps = 4
)

// demoTaskIDs are the ids of the tasks the demo queries: photo-1.jpg to
// photo-3.jpg in step 9, photo-4.jpg and photo-5.jpg in step 10 and
// photo-6.jpg in step 11.
var demoTaskIDs = []string{"photo-1.jpg", "photo-2.jpg", "photo-3.jpg", "photo-4.jpg", "photo-5.jpg", "photo-6.jpg"}

// resizeParams and resizeResult are the params and result of a resize task.
type (
	resizeParams struct {
		File  string `json:"file"`
		Width int    `json:"width"`
	}
	resizeResult struct {
		Thumb  string `json:"thumb"`
		Worker string `json:"worker"` // who ran it: worker-a, worker-b or caller
	}
)

// demoCaller is the name of the Queue value that queries the tasks; it
// runs them itself when policy Auto finds no listener.
const demoCaller = "caller"

// resetTasks deletes what an earlier run left in the demo's task queue
// (the demo's tasks, the queues, claims, listeners and doorbell of its task
// name) but the sequence counter. It goes through the key layout because
// the queue has no call that removes finished tasks before their results
// expire. It reports whether there was anything to delete.
func (d *demo) resetTasks(ctx context.Context) (bool, error) {
	tk := keys.NewTasks(d.a.Prefix(), demoTaskSuffix)
	del := []string{tk.Names()}
	for _, kind := range []string{"q", "d", "a", "x", "b", "l"} {
		del = append(del, tk.Name(kind, demoTaskName))
	}
	for _, id := range demoTaskIDs {
		del = append(del, tk.Task(id))
	}
	n, err := d.cn.client.Del(ctx, del...).Result()
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// taskWorker is one Queue value of the task demo, standing for a process:
// it has its own Redis client, so that closing it cuts that "process" off
// from Redis as a kill would.
type taskWorker struct {
	name   string
	client redis.UniversalClient // own client; nil for the caller, which uses the demo's
	q      *taskqueue.Queue

	mu     sync.Mutex
	cancel context.CancelFunc // of the running Listen
	done   chan error         // the running Listen's result
	killed bool               // its client was closed under it
}

// newTaskWorker returns a Queue value of the demo's task queue running fn;
// with own, on a client of its own.
func (d *demo) newTaskWorker(name string, own bool, fn taskqueue.TaskFunc) (*taskWorker, error) {
	w := &taskWorker{name: name}
	c := d.cn.client
	if own {
		var err error
		if c, err = cloneClient(d.cn.client); err != nil {
			return nil, err
		}
		w.client = c
	}
	q, err := taskqueue.New(c, d.a.Prefix(), taskqueue.WithSuffix(demoTaskSuffix), taskqueue.WithTaskFunc(fn),
		taskqueue.WithVisibilityTimeout(d.t.visibility), taskqueue.WithGracePeriod(d.t.visibility))
	if err != nil {
		if w.client != nil {
			_ = w.client.Close()
		}
		return nil, err
	}
	w.q = q
	return w, nil
}

// cloneClient returns a new client to the server of c.
func cloneClient(c redis.UniversalClient) (redis.UniversalClient, error) {
	switch c := c.(type) {
	case *redis.Client:
		o := *c.Options()
		return redis.NewClient(&o), nil
	case *redis.ClusterClient:
		o := *c.Options()
		return redis.NewClusterClient(&o), nil
	}
	return nil, fmt.Errorf("cannot open another client like a %T", c)
}

// listen starts w.q.Listen on the demo's task name with one worker
// goroutine, until stop or close.
func (w *taskWorker) listen(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	w.mu.Lock()
	w.cancel, w.done = cancel, done
	w.mu.Unlock()
	go func() { done <- w.q.Listen(ctx, []string{demoTaskName}, 1) }()
}

// stop ends the running Listen, if any, and waits for it: it withdraws
// its listener before it returns.
func (w *taskWorker) stop() error {
	w.mu.Lock()
	cancel, done, killed := w.cancel, w.done, w.killed
	w.cancel, w.done = nil, nil
	w.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !(killed && errors.Is(err, redis.ErrClosed)) {
			return fmt.Errorf("%s: Listen: %w", w.name, err)
		}
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s: Listen did not return within 10s of its context's end", w.name)
	}
}

// close closes the queue (Listen returns without a grace period), waits
// for Listen and closes the worker's own client.
func (w *taskWorker) close() error {
	cerr := w.q.Close()
	serr := w.stop()
	if w.client != nil {
		_ = w.client.Close() // already closed for a killed worker
	}
	return errors.Join(cerr, serr)
}

// closeWorkers closes ws, the clean-up of a step.
func closeWorkers(ws ...*taskWorker) error {
	var errs []error
	for _, w := range ws {
		if w != nil {
			errs = append(errs, w.close())
		}
	}
	return errors.Join(errs...)
}

// resizeFunc is the task function of worker name: demoResizeSteps steps
// of work, each followed by a progress update. onStart, when set, is told
// about every run first.
func (d *demo) resizeFunc(name string, onStart func(*taskqueue.Task)) taskqueue.TaskFunc {
	return func(ctx context.Context, t *taskqueue.Task) (any, error) {
		var p resizeParams
		if err := t.DecodeParams(&p); err != nil {
			return nil, fmt.Errorf("%w: %w", taskqueue.ErrSkipRetry, err)
		}
		if onStart != nil {
			onStart(t)
		}
		for i := 1; i <= demoResizeSteps; i++ {
			if err := sleepCtx(ctx, d.t.taskStep); err != nil {
				return nil, err
			}
			if err := t.Update(ctx, float64(i), demoResizeSteps); err != nil {
				return nil, err
			}
		}
		return resizeResult{Thumb: thumbName(p), Worker: name}, nil
	}
}

func thumbName(p resizeParams) string {
	base, ext, ok := strings.Cut(p.File, ".")
	if !ok {
		return fmt.Sprintf("%s-%d", p.File, p.Width)
	}
	return fmt.Sprintf("%s-%d.%s", base, p.Width, ext)
}

// progressLine prints the progress of task id, start being when the
// caller queried it.
func (d *demo) progressLine(id string, start time.Time, p taskqueue.Progress) {
	n := min(max(int(p.Current), 0), demoResizeSteps)
	d.p.line("    %5.2fs  %s  [%s%s] %g/%g", time.Since(start).Seconds(), id,
		strings.Repeat("#", n), strings.Repeat("-", demoResizeSteps-n), p.Current, p.Total)
}

// waitListeners waits until q sees n live listeners of the demo's task.
func waitListeners(ctx context.Context, q *taskqueue.Queue, n int64) error {
	for {
		st, err := q.Stats(ctx, demoTaskName)
		if err != nil {
			return err
		}
		if len(st) == 1 && st[0].Listeners == n {
			return nil
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for %d listeners (last stats %+v): %w", n, st, err)
		}
	}
}

// listenerCount returns the live listeners of the demo's task.
func listenerCount(ctx context.Context, q *taskqueue.Queue) (int64, error) {
	st, err := q.Stats(ctx, demoTaskName)
	if err != nil {
		return 0, err
	}
	if len(st) != 1 {
		return 0, fmt.Errorf("Stats(%s): %d rows", demoTaskName, len(st))
	}
	return st[0].Listeners, nil
}

// ranBy decodes the worker that ran task t.
func ranBy(t *taskqueue.Task) (string, error) {
	var r resizeResult
	if err := t.DecodeResult(&r); err != nil {
		return "", err
	}
	return r.Worker, nil
}

// remoteTasks has two listeners, worker-a and worker-b, run three tasks
// the caller queries at once with policy Remote, and prints their progress
// while the caller waits.
func (d *demo) remoteTasks(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	var a, b, caller *taskWorker
	defer func() { err = errors.Join(err, closeWorkers(a, b, caller)) }()
	if a, err = d.newTaskWorker("worker-a", true, d.resizeFunc("worker-a", nil)); err != nil {
		return err
	}
	if b, err = d.newTaskWorker("worker-b", true, d.resizeFunc("worker-b", nil)); err != nil {
		return err
	}
	if caller, err = d.newTaskWorker(demoCaller, false, nil); err != nil {
		return err
	}
	a.listen(ctx)
	b.listen(ctx)
	if err := waitListeners(ctx, caller.q, 2); err != nil {
		return err
	}
	ids := demoTaskIDs[:3]
	d.p.line("  worker-a and worker-b (a Queue and a Redis client each) Listen([%s], 1 worker);", demoTaskName)
	d.p.line("  the caller Queries %s..%s at once, WithPolicy(Remote) and WithProgress:", ids[0], ids[len(ids)-1])

	type outcome struct {
		t       *taskqueue.Task
		elapsed time.Duration
		err     error
	}
	results := make([]outcome, len(ids))
	start := time.Now()
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			t, err := caller.q.Query(ctx, id, demoTaskName, resizeParams{File: id, Width: 320},
				taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(d.t.step),
				taskqueue.WithProgress(func(p taskqueue.Progress) { d.progressLine(id, start, p) }))
			results[i] = outcome{t, time.Since(start), err}
			if err != nil {
				return
			}
			r := resizeResult{}
			_ = t.DecodeResult(&r)
			d.p.line("    %5.2fs  %s  done by %s (delivery %d) -> %s", time.Since(start).Seconds(), id, r.Worker, t.Deliveries, r.Thumb)
		})
	}
	wg.Wait()
	ran := map[string]int{}
	for i, r := range results {
		if r.err != nil {
			return fmt.Errorf("query %s: %w", ids[i], r.err)
		}
		w, err := ranBy(r.t)
		if err != nil {
			return err
		}
		if r.t.State != taskqueue.Done || r.t.Deliveries != 1 || (w != "worker-a" && w != "worker-b") {
			return fmt.Errorf("task %s: state %s, delivery %d, ran by %q; want done, 1, a listener", ids[i], r.t.State, r.t.Deliveries, w)
		}
		ran[w]++
	}
	elapsed := time.Since(start)
	d.p.line("  %d tasks done in %v, each delivered once: worker-a ran %d, worker-b ran %d.",
		len(ids), fmtDur(elapsed), ran["worker-a"], ran["worker-b"])
	d.summary = append(d.summary, fmt.Sprintf(
		"remote tasks: %d queries ran on 2 listeners (worker-a %d, worker-b %d), progress shown while the caller waited",
		len(ids), ran["worker-a"], ran["worker-b"]))
	return nil
}

// autoPolicy queries with policy Auto twice: while listeners are alive the
// task runs on one of them, once they stopped listening it runs in the
// caller.
func (d *demo) autoPolicy(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	var a, b, caller *taskWorker
	defer func() { err = errors.Join(err, closeWorkers(a, b, caller)) }()
	if a, err = d.newTaskWorker("worker-a", true, d.resizeFunc("worker-a", nil)); err != nil {
		return err
	}
	if b, err = d.newTaskWorker("worker-b", true, d.resizeFunc("worker-b", nil)); err != nil {
		return err
	}
	if caller, err = d.newTaskWorker(demoCaller, false, d.resizeFunc(demoCaller, nil)); err != nil {
		return err
	}
	a.listen(ctx)
	b.listen(ctx)
	if err := waitListeners(ctx, caller.q, 2); err != nil {
		return err
	}
	d.p.line("  the caller has the task function too (WithTaskFunc), so Auto may run tasks itself.")
	query := func(id string, listeners int64) (string, error) {
		start := time.Now()
		t, err := caller.q.Query(ctx, id, demoTaskName, resizeParams{File: id, Width: 320},
			taskqueue.WithPolicy(taskqueue.Auto), taskqueue.WithTimeout(d.t.step))
		if err != nil {
			return "", fmt.Errorf("query %s: %w", id, err)
		}
		w, err := ranBy(t)
		if err != nil {
			return "", err
		}
		where := "remotely, on " + w
		if w == demoCaller {
			where = "locally, in the caller's own process"
		}
		d.p.line("    Stats -> %d listeners; Query(%s, WithPolicy(Auto)) -> ran %s (%v)",
			listeners, id, where, fmtDur(time.Since(start)))
		return w, nil
	}
	remote, err := query(demoTaskIDs[3], 2)
	if err != nil {
		return err
	}
	if remote != "worker-a" && remote != "worker-b" {
		return fmt.Errorf("policy Auto with 2 listeners alive ran on %q, want a listener", remote)
	}
	if err := errors.Join(a.stop(), b.stop()); err != nil {
		return err
	}
	n, err := listenerCount(ctx, caller.q)
	if err != nil {
		return err
	}
	d.p.line("  worker-a and worker-b stop listening (their Listen's context ends; they withdraw at once).")
	local, err := query(demoTaskIDs[4], n)
	if err != nil {
		return err
	}
	if n != 0 || local != demoCaller {
		return fmt.Errorf("policy Auto with %d listeners alive ran on %q, want the caller", n, local)
	}
	d.summary = append(d.summary, fmt.Sprintf(
		"policy Auto: ran on %s while 2 listeners were alive, in the caller once none was", remote))
	return nil
}

// killedListener has worker-c take a task, report some progress and be
// killed: its Redis client is closed, so its claim is no longer extended,
// and its task function never returns. Once the claim lapses (the
// visibility timeout), a listener that is alive gets the task again and
// the caller, which waited all along, gets its result.
func (d *demo) killedListener(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, d.t.step)
	defer cancel()
	id := demoTaskIDs[5]
	var a, b, c, caller *taskWorker
	hung := make(chan struct{}) // worker-c's task function is stuck until the step ends
	defer func() {
		close(hung)
		err = errors.Join(err, closeWorkers(c, a, b, caller))
	}()

	midTask := make(chan struct{})
	cfn := func(ctx context.Context, t *taskqueue.Task) (any, error) {
		if err := sleepCtx(ctx, d.t.taskStep); err != nil {
			return nil, err
		}
		if err := t.Update(ctx, 1, demoResizeSteps); err != nil {
			return nil, err
		}
		close(midTask)
		<-hung // killed: it never returns, never heartbeats, never reports
		return nil, errors.New("worker-c was killed")
	}
	if c, err = d.newTaskWorker("worker-c", true, cfn); err != nil {
		return err
	}
	var killed time.Time // set before worker-a and worker-b listen
	type redelivery struct {
		worker     string
		deliveries int
		after      time.Duration
	}
	redelivered := make(chan redelivery, 2)
	onStart := func(name string) func(*taskqueue.Task) {
		return func(t *taskqueue.Task) {
			r := redelivery{name, t.Deliveries, time.Since(killed)}
			select {
			case redelivered <- r:
			default:
			}
			d.p.line("  the claim lapsed: %s got %s %v after the kill (delivery %d)",
				r.worker, t.ID, fmtDur(r.after), r.deliveries)
		}
	}
	if a, err = d.newTaskWorker("worker-a", true, d.resizeFunc("worker-a", onStart("worker-a"))); err != nil {
		return err
	}
	if b, err = d.newTaskWorker("worker-b", true, d.resizeFunc("worker-b", onStart("worker-b"))); err != nil {
		return err
	}
	if caller, err = d.newTaskWorker(demoCaller, false, nil); err != nil {
		return err
	}
	c.listen(ctx)
	if err := waitListeners(ctx, caller.q, 1); err != nil {
		return err
	}
	d.p.line("  worker-c listens alone (visibility timeout %v: a live worker heartbeats every %v);",
		d.t.visibility, fmtDur(d.t.visibility/3))
	d.p.line("  the caller Queries %s, WithPolicy(Remote) and WithProgress:", id)

	type outcome struct {
		t   *taskqueue.Task
		err error
	}
	res := make(chan outcome, 1)
	firstProgress := make(chan struct{})
	var once sync.Once
	start := time.Now()
	go func() {
		t, err := caller.q.Query(ctx, id, demoTaskName, resizeParams{File: id, Width: 320},
			taskqueue.WithPolicy(taskqueue.Remote), taskqueue.WithTimeout(d.t.step),
			taskqueue.WithProgress(func(p taskqueue.Progress) {
				d.progressLine(id, start, p)
				once.Do(func() { close(firstProgress) })
			}))
		res <- outcome{t, err}
	}()
	for _, ch := range []chan struct{}{midTask, firstProgress} {
		select {
		case <-ch:
		case r := <-res:
			return fmt.Errorf("query %s returned before worker-c was killed: %v", id, r.err)
		case <-ctx.Done():
			return fmt.Errorf("waiting for worker-c to start %s: %w", id, ctx.Err())
		}
	}
	killed = time.Now()
	c.mu.Lock()
	c.killed = true
	c.mu.Unlock()
	_ = c.client.Close()
	d.p.line("  worker-c is killed mid-task: its Redis client is closed, it never heartbeats again")
	d.p.line("  and its task function hangs. worker-a and worker-b start listening.")
	a.listen(ctx)
	b.listen(ctx)

	var r outcome
	select {
	case r = <-res:
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", id, ctx.Err())
	}
	if r.err != nil {
		return fmt.Errorf("query %s: %w", id, r.err)
	}
	w, err := ranBy(r.t)
	if err != nil {
		return err
	}
	var rd redelivery
	select {
	case rd = <-redelivered:
	default:
		return fmt.Errorf("task %s done without being delivered to worker-a or worker-b", id)
	}
	d.p.line("    %5.2fs  %s  done by %s (delivery %d): the caller waited %v in all, through the kill",
		time.Since(start).Seconds(), id, w, r.t.Deliveries, fmtDur(time.Since(start)))
	if r.t.State != taskqueue.Done || r.t.Deliveries != 2 || w != rd.worker {
		return fmt.Errorf("task %s: state %s, delivery %d, ran by %q; want done, 2, %s", id, r.t.State, r.t.Deliveries, w, rd.worker)
	}
	st, err := caller.q.Stats(ctx, demoTaskName)
	if err != nil {
		return err
	}
	if len(st) != 1 {
		return fmt.Errorf("Stats(%s): %d rows", demoTaskName, len(st))
	}
	s := st[0]
	d.p.line("  Stats(%s) -> %d pending, %d delayed, %d running, %d dead, %d listeners (worker-c's has lapsed)",
		s.Name, s.Pending, s.Delayed, s.Running, s.Dead, s.Listeners)
	if s.Pending != 0 || s.Delayed != 0 || s.Running != 0 || s.Dead != 0 || s.Listeners != 2 {
		return fmt.Errorf("stats after the redelivery: %+v, want only 2 listeners", s)
	}
	d.summary = append(d.summary, fmt.Sprintf(
		"redelivery: a killed listener's task went to %s %v after the kill (visibility timeout %v); the caller got its result",
		w, fmtDur(rd.after), d.t.visibility))
	return nil
}
