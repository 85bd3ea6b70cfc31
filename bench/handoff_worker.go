package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"

	"github.com/redisallocator/redisallocator/lock"
)

// Parameters of the hand-off scenario.
const (
	// handoffTTL is the TTL of every lock taken: far longer than any hold,
	// so no lock ever expires.
	handoffTTL = 10 * time.Second
	// handoffDrain bounds how long an acquisition that started before the
	// end of a run may still wait for its turn. Every acquisition's context
	// ends then, and bsm/redislock retries until its context ends.
	handoffDrain = 30 * time.Second
	// HandoffChildEnv marks a process started by RunHandoff as one of the
	// processes of a run (see IsHandoffChild).
	HandoffChildEnv = "REDISALLOCATOR_HANDOFF_CHILD"
)

// acquirer takes the lock on key, waiting as long as ctx allows, and returns
// its fence (0 for a library without fences) and the function that
// releases it.
type acquirer func(ctx context.Context, key string) (fence int64, release func(context.Context) error, err error)

// handoffCase is one compared way of waiting for a contended lock.
type handoffCase struct {
	id     string // short name, used in progress lines and JSON
	name   string // what the tables print
	fenced bool   // the library hands out fences, which must rise in hold order
	// open returns the acquirer of one process, on that process's client.
	// Every case works on the Redis key (*lock.Lock).Key(key) of the lock
	// namespace prefix.
	open func(client *redis.Client, prefix string) (acquirer, error)
}

// handoffCases are the compared cases in their forward order.
var handoffCases = []handoffCase{
	{
		id:     "redisallocator-notify",
		name:   "redisallocator Acquire, WithReleaseNotify, default retry",
		fenced: true,
		open:   oursAcquirer(lock.WithReleaseNotify()),
	},
	{
		id:   "bsm-poll-1ms",
		name: "bsm/redislock Obtain, LinearBackoff(1ms)",
		open: bsmAcquirer,
	},
	{
		id:     "redisallocator-poll-1ms",
		name:   "redisallocator Acquire, WithRetry(LinearRetry(1ms))",
		fenced: true,
		open:   oursAcquirer(lock.WithRetry(lock.LinearRetry(time.Millisecond))),
	},
}

// handoffCaseByID returns the case named id.
func handoffCaseByID(id string) (handoffCase, error) {
	for _, c := range handoffCases {
		if c.id == id {
			return c, nil
		}
	}
	return handoffCase{}, fmt.Errorf("unknown hand-off case %q", id)
}

// oursAcquirer returns the open function of a redisallocator case that
// calls Acquire with opts.
func oursAcquirer(opts ...lock.AcquireOption) func(*redis.Client, string) (acquirer, error) {
	return func(client *redis.Client, prefix string) (acquirer, error) {
		l, err := lock.New(client, prefix)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context, key string) (int64, func(context.Context) error, error) {
			h, err := l.Acquire(ctx, key, handoffTTL, opts...)
			if err != nil {
				return 0, nil, err
			}
			return h.Fence(), h.Release, nil
		}, nil
	}
}

// bsmAcquirer is the open function of the bsm/redislock case: Obtain
// polling every millisecond on the Redis key that redisallocator would use.
func bsmAcquirer(client *redis.Client, prefix string) (acquirer, error) {
	l, err := lock.New(client, prefix)
	if err != nil {
		return nil, err
	}
	c := redislock.New(client)
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Millisecond)}
	return func(ctx context.Context, key string) (int64, func(context.Context) error, error) {
		// ctx has a deadline, so Obtain retries until it gets the lock or
		// the deadline passes, instead of giving up after the TTL.
		lk, err := c.Obtain(ctx, l.Key(key), handoffTTL, opt)
		if err != nil {
			return 0, nil, err
		}
		return 0, lk.Release, nil
	}, nil
}

// holdSpan is one acquisition as its holder saw it, in wall-clock Unix
// nanoseconds, which all processes on the machine share. The lock is held
// on the server from before From until after To, so in a correct run no
// two spans overlap, even across processes.
type holdSpan struct {
	From  int64 `json:"f"`           // when Acquire returned
	To    int64 `json:"t"`           // just before Release was called
	Fence int64 `json:"n,omitempty"` // the fence of the acquisition, 0 for none
	// Holder numbers the goroutine within its process; the parent makes it
	// unique over the processes of a run.
	Holder int `json:"g"`
}

// workerSpec tells one process what to run; a child reads it from stdin.
type workerSpec struct {
	URL        string        `json:"url"`
	Prefix     string        `json:"prefix"`
	Case       string        `json:"case"`
	Key        string        `json:"key"`
	WarmupKey  string        `json:"warmup_key"`
	Goroutines int           `json:"goroutines"`
	Duration   time.Duration `json:"duration"`
	Warmup     time.Duration `json:"warmup"`
	Hold       time.Duration `json:"hold"`
}

// workerResult is one process's part of a run.
type workerResult struct {
	Start        int64      `json:"start"` // wall clock, Unix ns, when the timed loop began
	End          int64      `json:"end"`   // when its last goroutine finished
	PerGoroutine []int64    `json:"per_goroutine"`
	Waits        []int64    `json:"waits"` // ns from calling Acquire/Obtain to its return, per acquisition
	Spans        []holdSpan `json:"spans"`
	MaxHolders   int64      `json:"max_holders"` // most goroutines of this process holding the lock at once
	Violations   int64      `json:"violations"`  // acquisitions that found another goroutine of this process holding it
	// Sent counts the commands this process's client sent during the timed
	// loop, by commandstats name (see cmdCounter).
	Sent map[string]int64 `json:"sent"`
}

// contend runs goroutines goroutines that, until dur has passed, acquire
// key, hold it for hold and release it. An acquisition under way when the
// time is up completes (within handoffDrain) and counts. The first error
// stops all goroutines and is returned.
func contend(ctx context.Context, acq acquirer, key string, goroutines int, dur, hold time.Duration) (workerResult, error) {
	var (
		holders    atomic.Int64
		maxHolders atomic.Int64
		violations atomic.Int64
		errOnce    sync.Once
		firstErr   error
		wg         sync.WaitGroup
	)
	type log struct {
		waits []int64
		spans []holdSpan
	}
	logs := make([]log, goroutines)

	start := time.Now()
	deadline := start.Add(dur)
	actx, cancel := context.WithDeadline(ctx, deadline.Add(handoffDrain))
	defer cancel()
	fail := func(err error) {
		errOnce.Do(func() {
			firstErr = err
			cancel()
		})
	}
	for g := range goroutines {
		wg.Go(func() {
			l := &logs[g]
			for time.Now().Before(deadline) && actx.Err() == nil {
				t0 := time.Now()
				fence, release, err := acq(actx, key)
				t1 := time.Now()
				if err != nil {
					fail(fmt.Errorf("acquire %q: %w", key, err))
					return
				}
				n := holders.Add(1)
				if n > 1 {
					violations.Add(1)
				}
				for m := maxHolders.Load(); n > m; m = maxHolders.Load() {
					if maxHolders.CompareAndSwap(m, n) {
						break
					}
				}
				time.Sleep(hold)
				t2 := time.Now()
				holders.Add(-1) // before the release: the next holder may return as soon as it is sent
				if err := release(actx); err != nil {
					fail(fmt.Errorf("release %q: %w", key, err))
					return
				}
				l.waits = append(l.waits, int64(t1.Sub(t0)))
				l.spans = append(l.spans, holdSpan{From: t1.UnixNano(), To: t2.UnixNano(), Fence: fence, Holder: g})
			}
		})
	}
	wg.Wait()
	end := time.Now()
	if firstErr != nil {
		return workerResult{}, firstErr
	}
	res := workerResult{
		Start:      start.UnixNano(),
		End:        end.UnixNano(),
		MaxHolders: maxHolders.Load(),
		Violations: violations.Load(),
	}
	for _, l := range logs {
		res.PerGoroutine = append(res.PerGoroutine, int64(len(l.waits)))
		res.Waits = append(res.Waits, l.waits...)
		res.Spans = append(res.Spans, l.spans...)
	}
	return res, nil
}

// runWorker is one process's part of a run: it connects with its own
// client, warms up on spec.WarmupKey, calls ready, waits until waitStart
// returns and runs the timed loop on spec.Key.
func runWorker(ctx context.Context, spec workerSpec, ready, waitStart func() error) (workerResult, error) {
	c, err := handoffCaseByID(spec.Case)
	if err != nil {
		return workerResult{}, err
	}
	client, err := NewClient(spec.URL)
	if err != nil {
		return workerResult{}, err
	}
	defer client.Close()
	counter := &cmdCounter{}
	client.AddHook(counter)
	acq, err := c.open(client, spec.Prefix)
	if err != nil {
		return workerResult{}, fmt.Errorf("%s: %w", c.id, err)
	}
	if spec.Warmup > 0 {
		if _, err := contend(ctx, acq, spec.WarmupKey, spec.Goroutines, spec.Warmup, spec.Hold); err != nil {
			return workerResult{}, fmt.Errorf("%s warm-up: %w", c.id, err)
		}
	}
	if err := ready(); err != nil {
		return workerResult{}, err
	}
	if err := waitStart(); err != nil {
		return workerResult{}, err
	}
	counter.start()
	res, err := contend(ctx, acq, spec.Key, spec.Goroutines, spec.Duration, spec.Hold)
	res.Sent = counter.stop()
	if err != nil {
		return workerResult{}, fmt.Errorf("%s: %w", c.id, err)
	}
	return res, nil
}

// cmdCounter is a go-redis hook that counts, while switched on, the
// commands its client sends, by the name INFO commandstats gives them
// (evalsha, hello, client|setinfo, ...), pipelined ones included. Commands
// of pub/sub connections (SUBSCRIBE, ...) bypass hooks and are not counted.
type cmdCounter struct {
	on atomic.Bool
	mu sync.Mutex
	n  map[string]int64
}

// start clears the counts and switches counting on.
func (c *cmdCounter) start() {
	c.mu.Lock()
	c.n = map[string]int64{}
	c.mu.Unlock()
	c.on.Store(true)
}

// stop switches counting off and returns the counts since start.
func (c *cmdCounter) stop() map[string]int64 {
	c.on.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (c *cmdCounter) count(cmds ...redis.Cmder) {
	if !c.on.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cmd := range cmds {
		c.n[statName(cmd)]++
	}
}

// DialHook implements redis.Hook.
func (c *cmdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (c *cmdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.count(cmd)
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (c *cmdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.count(cmds...)
		return next(ctx, cmds)
	}
}

// containerCommands are the commands whose subcommands INFO commandstats
// lists as <command>|<subcommand>.
var containerCommands = []string{
	"acl", "client", "cluster", "command", "config", "function", "latency", "memory",
	"module", "object", "pubsub", "script", "slowlog", "xgroup", "xinfo",
}

// statName returns the name under which INFO commandstats lists cmd.
func statName(cmd redis.Cmder) string {
	name := strings.ToLower(cmd.Name())
	if args := cmd.Args(); len(args) > 1 && slices.Contains(containerCommands, name) {
		if sub, ok := args[1].(string); ok {
			name += "|" + strings.ToLower(sub)
		}
	}
	return name
}

// worker is the parent's handle on one process of a run.
type worker interface {
	// waitReady blocks until the process has warmed up.
	waitReady() error
	// start lets the process begin its timed loop.
	start() error
	// result blocks until the process has finished and returns its part.
	result() (workerResult, error)
	// stop ends the process if it still runs and frees its resources.
	stop()
}

// localWorker runs a worker in this process (the runs with one process).
type localWorker struct {
	ready, begin, done chan struct{}
	cancel             context.CancelFunc
	res                workerResult
	err                error // read only after done is closed
}

func startLocal(ctx context.Context, spec workerSpec) *localWorker {
	ctx, cancel := context.WithCancel(ctx)
	w := &localWorker{
		ready:  make(chan struct{}),
		begin:  make(chan struct{}),
		done:   make(chan struct{}),
		cancel: cancel,
	}
	go func() {
		defer close(w.done)
		w.res, w.err = runWorker(ctx, spec,
			func() error { close(w.ready); return nil },
			func() error {
				select {
				case <-w.begin:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
	}()
	return w
}

func (w *localWorker) waitReady() error {
	select {
	case <-w.ready:
		return nil
	case <-w.done:
		if w.err == nil {
			return errors.New("worker ended before it was ready")
		}
		return w.err
	}
}

func (w *localWorker) start() error { close(w.begin); return nil }

func (w *localWorker) result() (workerResult, error) {
	<-w.done
	return w.res, w.err
}

func (w *localWorker) stop() {
	w.cancel()
	<-w.done
}

// childMsg is what a child writes to its stdout, one JSON value each:
// first {"ready":true} after the warm-up, then its result, or an error
// at any point.
type childMsg struct {
	Ready  bool          `json:"ready,omitempty"`
	Result *workerResult `json:"result,omitempty"`
	Err    string        `json:"error,omitempty"`
}

// startMsg is what the parent writes to a ready child to start its timed
// loop.
type startMsg struct {
	Start bool `json:"start"`
}

// childWorker is a child process of a run: this program's own binary
// started again with HandoffChildEnv set. It reads its workerSpec and then
// the start message from stdin and writes childMsgs to stdout; closing its
// stdin before the start makes it exit.
type childWorker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	enc    *json.Encoder
	dec    *json.Decoder
	cancel context.CancelFunc
	waited bool
}

func startChild(ctx context.Context, exe string, spec workerSpec) (*childWorker, error) {
	ctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), HandoffChildEnv+"=1")
	cmd.Stderr = os.Stderr
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start child %s: %w", exe, err)
	}
	w := &childWorker{cmd: cmd, stdin: stdin, enc: json.NewEncoder(stdin), dec: json.NewDecoder(stdout), cancel: cancel}
	if err := w.enc.Encode(spec); err != nil {
		w.stop()
		return nil, fmt.Errorf("send spec to child: %w", err)
	}
	return w, nil
}

// read decodes the child's next message.
func (w *childWorker) read() (childMsg, error) {
	var m childMsg
	if err := w.dec.Decode(&m); err != nil {
		werr := w.wait()
		return m, fmt.Errorf("read from child (exit: %v): %w", werr, err)
	}
	if m.Err != "" {
		return m, fmt.Errorf("child: %s", m.Err)
	}
	return m, nil
}

func (w *childWorker) waitReady() error {
	m, err := w.read()
	if err != nil {
		return err
	}
	if !m.Ready {
		return errors.New("child sent something else than ready")
	}
	return nil
}

func (w *childWorker) start() error {
	if err := w.enc.Encode(startMsg{Start: true}); err != nil {
		return fmt.Errorf("start child: %w", err)
	}
	return nil
}

func (w *childWorker) result() (workerResult, error) {
	m, err := w.read()
	if err != nil {
		return workerResult{}, err
	}
	if m.Result == nil {
		return workerResult{}, errors.New("child sent no result")
	}
	if err := w.wait(); err != nil {
		return workerResult{}, fmt.Errorf("child: %w", err)
	}
	return *m.Result, nil
}

// wait closes the child's stdin and waits for it to exit.
func (w *childWorker) wait() error {
	if w.waited {
		return nil
	}
	w.waited = true
	_ = w.stdin.Close()
	return w.cmd.Wait()
}

func (w *childWorker) stop() {
	w.cancel() // kills the process unless it has exited
	_ = w.wait()
}

// IsHandoffChild reports whether RunHandoff started this process as one of
// the processes of a run (HandoffChildEnv is set). Such a process must call
// RunHandoffChild instead of doing its usual work; a program that runs
// RunHandoff with more than one process must check this first thing in
// main (or TestMain).
func IsHandoffChild() bool { return os.Getenv(HandoffChildEnv) != "" }

// RunHandoffChild is a child process's side of a run: it reads its task
// from in (normally os.Stdin), warms up, reports ready on out (normally
// os.Stdout), waits for the start message on in, runs the timed loop and
// writes its result to out. Nothing else may write to out meanwhile.
func RunHandoffChild(ctx context.Context, in io.Reader, out io.Writer) error {
	dec, enc := json.NewDecoder(in), json.NewEncoder(out)
	var spec workerSpec
	if err := dec.Decode(&spec); err != nil {
		return fmt.Errorf("read the task: %w", err)
	}
	res, err := runWorker(ctx, spec,
		func() error { return enc.Encode(childMsg{Ready: true}) },
		func() error {
			var m startMsg
			if err := dec.Decode(&m); err != nil {
				return fmt.Errorf("wait for the start: %w", err)
			}
			if !m.Start {
				return errors.New("got something else than the start message")
			}
			return nil
		})
	if err != nil {
		_ = enc.Encode(childMsg{Err: err.Error()})
		return err
	}
	return enc.Encode(childMsg{Result: &res})
}
