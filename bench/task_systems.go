package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/taskqueue"
)

// Names shared by both systems.
const (
	taskName    = "noop"           // the task name (taskqueue) or type (asynq)
	taskPrefix  = "taskbench"      // taskqueue prefix
	asynqQueue  = "default"        // asynq queue
	asynqRetain = 5 * time.Minute  // asynq Retention of the RPC: taskqueue keeps results its timeout, 5 min by default
	settleLimit = 30 * time.Second // how long the harness waits for stored completions
	stallLimit  = 30 * time.Second // a phase that makes no progress this long fails
)

// taskHarnessCommands are sent by the harness's own client; the tables leave
// them out as they do adminCommands.
var taskHarnessCommands = map[string]bool{
	"flushall": true, "type": true, "config|resetstat": true, "info": true,
	"config|set": true, "config|get": true, "slowlog|reset": true, "slowlog|get": true,
}

// system says which queue a case drives: taskqueue, or asynq with a
// TaskCheckInterval (0: asynq's default, 1 s).
type system struct {
	asynq    bool
	interval time.Duration
}

func (s system) id() string {
	if !s.asynq {
		return "taskqueue"
	}
	return "asynq@" + s.intervalString()
}

func (s system) intervalString() string {
	if !s.asynq {
		return ""
	}
	if s.interval == 0 {
		return "1s (default)"
	}
	return s.interval.String()
}

// sentCounter is a go-redis hook that counts, while switched on, the
// commands its client sends (by their INFO commandstats name) and the
// round trips that carry them: a command sent on its own or a pipeline.
// Commands of pub/sub connections bypass hooks; SUBSCRIBE happens before
// the measured windows here.
type sentCounter struct {
	on    atomic.Bool
	mu    sync.Mutex
	n     map[string]int64
	trips int64
}

func (c *sentCounter) start() {
	c.mu.Lock()
	c.n, c.trips = map[string]int64{}, 0
	c.mu.Unlock()
	c.on.Store(true)
}

// stop switches counting off and returns the counts since start.
func (c *sentCounter) stop() (map[string]int64, int64) {
	c.on.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.trips
}

func (c *sentCounter) count(cmds ...redis.Cmder) {
	if !c.on.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trips++
	for _, cmd := range cmds {
		c.n[statName(cmd)]++
	}
}

// DialHook implements redis.Hook.
func (c *sentCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *sentCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *sentCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.count(cmds...)
		return next(ctx, cmds)
	}
}

// rig is the two clients of one run: the callers' (producers') and the
// workers', each with its own pool and counting hook, as two processes
// would have.
type rig struct {
	callers, workers *redis.Client
	hooks            []*sentCounter
}

func newRig(url string) (*rig, error) {
	r := &rig{}
	for _, c := range []**redis.Client{&r.callers, &r.workers} {
		client, err := NewClient(url)
		if err != nil {
			r.close()
			return nil, err
		}
		h := &sentCounter{}
		client.AddHook(h)
		*c = client
		r.hooks = append(r.hooks, h)
	}
	return r, nil
}

func (r *rig) close() {
	for _, c := range []*redis.Client{r.callers, r.workers} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// sink is the task function's side of a run: it notes when each task
// started (for the tasks whose call noted its beginning) and counts tasks
// for the current phase.
type sink struct {
	begun sync.Map // id → time.Time of the call
	mu    sync.Mutex
	lat   []time.Duration
	phase atomic.Pointer[phase]
}

// begin notes that the call for task id begins now.
func (s *sink) begin(id string) { s.begun.Store(id, time.Now()) }

// run is called by the task function of task id when it starts.
func (s *sink) run(id string) {
	now := time.Now()
	if v, ok := s.begun.LoadAndDelete(id); ok {
		d := now.Sub(v.(time.Time))
		s.mu.Lock()
		s.lat = append(s.lat, d)
		s.mu.Unlock()
	}
	if p := s.phase.Load(); p != nil {
		p.hit(now)
	}
}

// starts returns the call-to-start latencies noted since the last call
// and forgets them.
func (s *sink) starts() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.lat
	s.lat = nil
	return out
}

// phase counts the task function calls of a batch of target tasks.
type phase struct {
	target int64
	n      atomic.Int64
	first  atomic.Int64 // unix ns of the first call
	end    time.Time    // of the target-th call; read after done
	done   chan struct{}
}

func newPhase(target int) *phase { return &phase{target: int64(target), done: make(chan struct{})} }

func (p *phase) hit(now time.Time) {
	p.first.CompareAndSwap(0, now.UnixNano())
	if p.n.Add(1) == p.target {
		p.end = now
		close(p.done)
	}
}

// wait waits until the phase's target is reached; it fails when the count
// stops moving for stallLimit.
func (p *phase) wait(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if n := p.n.Load(); n != last {
				last, since = n, time.Now()
			} else if time.Since(since) > stallLimit {
				return fmt.Errorf("stalled: %d of %d tasks ran, none for %v", n, p.target, stallLimit)
			}
		}
	}
}

// consumer is one system set up on a rig: its callers' side and its
// workers, running.
type consumer struct {
	sys system
	// rpc runs task id and waits for its result.
	rpc func(ctx context.Context, id string) error
	// submit queues task id without waiting.
	submit func(ctx context.Context, id string) error
	// idle reports whether no task is pending or running, from the keys'
	// types (TYPE, which neither system sends, on the harness's client).
	idleKeys []string
	// verify checks, through the system's own API, that nothing is left
	// pending, running or failed.
	verify func(ctx context.Context) error
	stop   func()
}

// start sets sys up on r with workers workers whose task function calls
// s.run.
func start(sys system, r *rig, s *sink, workers int, poll time.Duration) (*consumer, error) {
	if sys.asynq {
		return startAsynq(sys, r, s, workers, poll), nil
	}
	return startTaskqueue(r, s, workers)
}

func startTaskqueue(r *rig, s *sink, workers int) (*consumer, error) {
	caller, err := taskqueue.New(r.callers, taskPrefix)
	if err != nil {
		return nil, err
	}
	worker, err := taskqueue.New(r.workers, taskPrefix, taskqueue.WithTaskFunc(func(ctx context.Context, t *taskqueue.Task) (any, error) {
		s.run(t.ID)
		return nil, nil
	}))
	if err != nil {
		caller.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	listened := make(chan error, 1)
	go func() { listened <- worker.Listen(ctx, []string{taskName}, workers) }()
	c := &consumer{
		sys: system{},
		rpc: func(ctx context.Context, id string) error {
			t, err := caller.Query(ctx, id, taskName, nil, taskqueue.WithPolicy(taskqueue.Remote))
			if err == nil && t.State != taskqueue.Done {
				err = fmt.Errorf("task %s ended %s", id, t.State)
			}
			return err
		},
		submit: func(ctx context.Context, id string) error {
			created, err := caller.Submit(ctx, id, taskName, nil)
			if err == nil && !created {
				err = fmt.Errorf("task %s already existed", id)
			}
			return err
		},
		idleKeys: taskqueueIdleKeys(),
		verify: func(ctx context.Context) error {
			st, err := caller.Stats(ctx, taskName)
			if err != nil {
				return err
			}
			for _, x := range st {
				if x.Pending+x.Delayed+x.Running+x.Dead != 0 {
					return fmt.Errorf("taskqueue left %+v", x)
				}
			}
			return nil
		},
		stop: func() {
			cancel()
			if err := <-listened; err != nil {
				fmt.Fprintln(os.Stderr, "taskbench: Listen:", err)
			}
			worker.Close()
			caller.Close()
		},
	}
	return c, nil
}

func startAsynq(sys system, r *rig, s *sink, workers int, poll time.Duration) *consumer {
	cl := asynq.NewClientFromRedisClient(r.callers)
	insp := asynq.NewInspectorFromRedisClient(r.callers)
	srv := asynq.NewServerFromRedisClient(r.workers, asynq.Config{
		Concurrency:       workers,
		TaskCheckInterval: sys.interval,
		LogLevel:          asynq.WarnLevel,
	})
	c := &consumer{
		sys: sys,
		rpc: func(ctx context.Context, id string) error {
			if _, err := cl.EnqueueContext(ctx, asynq.NewTask(taskName, nil), asynq.TaskID(id), asynq.Retention(asynqRetain)); err != nil {
				return err
			}
			for {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(poll):
				}
				ti, err := insp.GetTaskInfo(asynqQueue, id)
				if err != nil {
					return err
				}
				switch ti.State {
				case asynq.TaskStateCompleted:
					return nil
				case asynq.TaskStateArchived, asynq.TaskStateRetry:
					return fmt.Errorf("asynq task %s is %s: %s", id, ti.State, ti.LastErr)
				}
			}
		},
		submit: func(ctx context.Context, id string) error {
			_, err := cl.EnqueueContext(ctx, asynq.NewTask(taskName, nil), asynq.TaskID(id))
			return err
		},
		idleKeys: asynqIdleKeys(),
		verify: func(ctx context.Context) error {
			qi, err := insp.GetQueueInfo(asynqQueue)
			if err != nil {
				return err
			}
			if qi.Pending+qi.Active+qi.Retry+qi.Archived+qi.Scheduled != 0 {
				return fmt.Errorf("asynq left pending %d, active %d, retry %d, archived %d, scheduled %d",
					qi.Pending, qi.Active, qi.Retry, qi.Archived, qi.Scheduled)
			}
			return nil
		},
		stop: srv.Shutdown,
	}
	// Start cannot fail on a new server with a handler.
	_ = srv.Start(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		s.run(id)
		return nil
	}))
	return c
}

// taskqueueIdleKeys are taskqueue's sets of the task name's ready,
// retrying and running tasks (see internal/keys); Redis deletes a set when
// it empties.
func taskqueueIdleKeys() []string {
	tag := "{" + taskPrefix + "|" + taskqueue.DefaultSuffix + "}"
	return []string{tag + "|q|" + taskName, tag + "|d|" + taskName, tag + "|a|" + taskName}
}

// asynqIdleKeys are asynq's lists of the queue's pending and active tasks.
func asynqIdleKeys() []string {
	return []string{"asynq:{" + asynqQueue + "}:pending", "asynq:{" + asynqQueue + "}:active"}
}

// settle waits until c's pending and active keys are gone: every task's
// completion is stored.
func (b *taskBench) settle(ctx context.Context, c *consumer) error {
	deadline := time.Now().Add(settleLimit)
	for {
		idle := true
		for _, k := range c.idleKeys {
			t, err := b.admin.Type(ctx, k).Result()
			if err != nil {
				return err
			}
			if t != "none" {
				idle = false
				break
			}
		}
		if idle {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: tasks still pending or running %v after the last one started", c.sys.id(), settleLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

// window is a measured stretch: the server's command stats and CPU, the
// clients' hooks and this process's CPU.
type window struct {
	w      *statWindow
	r      *rig
	cpu0   time.Duration
	mBusy0 float64 // machineCPU at the start
	mAll0  float64
	t0     time.Time
}

func (b *taskBench) open(ctx context.Context, r *rig) (*window, error) {
	w, err := beginStats(ctx, b.admin)
	if err != nil {
		return nil, err
	}
	for _, h := range r.hooks {
		h.start()
	}
	busy, all := machineCPU()
	return &window{w: w, r: r, cpu0: processCPU(), mBusy0: busy, mAll0: all, t0: time.Now()}, nil
}

// close ends the window and returns its figures per op.
func (w *window) close(ctx context.Context, ops int64) (TaskRedis, TaskWindowStats, error) {
	cpu := processCPU() - w.cpu0
	busy, all := machineCPU()
	wall := time.Since(w.t0)
	sent := map[string]int64{}
	var trips int64
	for _, h := range w.r.hooks {
		n, t := h.stop()
		trips += t
		for k, v := range n {
			sent[k] += v
		}
	}
	st, rcpu, err := w.w.end(ctx)
	if err != nil {
		return TaskRedis{}, TaskWindowStats{}, err
	}
	for k := range st {
		if adminCommands[k] || taskHarnessCommands[k] {
			delete(st, k)
		}
	}
	for k := range sent {
		if adminCommands[k] {
			delete(sent, k)
		}
	}
	red := perOp(st, sent, trips, rcpu, cpu, ops)
	// Cores busy on the whole machine: this process, Redis and anything
	// else running.
	if all > w.mAll0 {
		red.MachineCores = (busy - w.mBusy0) / (all - w.mAll0) * float64(runtime.NumCPU())
	}
	red.RedisCores = rcpu / wall.Seconds()
	red.ClientCores = cpu.Seconds() / wall.Seconds()
	return red, TaskWindowStats{Commands: st, Sent: sent}, nil
}

// perOp divides a window's figures by ops. The execution time of a
// command name that the clients sent and scripts also ran is split in
// proportion to the calls.
func perOp(st CmdStats, sent map[string]int64, trips int64, redisCPU float64, clientCPU time.Duration, ops int64) TaskRedis {
	var r TaskRedis
	if ops <= 0 {
		return r
	}
	var nSent, nRun int64
	var exec, all float64
	for k, s := range st {
		nRun += s.Calls
		all += float64(s.Usec)
		if n := min(sent[k], s.Calls); n > 0 {
			exec += float64(s.Usec) * float64(n) / float64(s.Calls)
		}
	}
	for _, n := range sent {
		nSent += n
	}
	f := float64(ops)
	r.Sent, r.RoundTrips = float64(nSent)/f, float64(trips)/f
	r.Scripts = float64(sent["evalsha"]+sent["eval"]) / f
	r.Run = float64(nRun) / f
	r.ExecUsec, r.AllLinesUsec = exec/f, all/f
	r.CPUUsec = redisCPU * 1e6 / f
	r.ClientCPUUsec = float64(clientCPU.Microseconds()) / f
	return r
}

// flush deletes everything on the server before a run.
func (b *taskBench) flush(ctx context.Context) error {
	if err := b.admin.FlushAll(ctx).Err(); err != nil {
		return fmt.Errorf("FLUSHALL: %w", err)
	}
	return nil
}

// produce submits n tasks (ids prefix0, prefix1, ...) from producers
// goroutines and returns when all were submitted.
func produce(ctx context.Context, submit func(context.Context, string) error, producers, n int, prefix string) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= int64(n) {
					return
				}
				if err := submit(ctx, prefix+fmt.Sprint(k)); err != nil {
					errOnce.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}
