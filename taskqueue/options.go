package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Defaults of a Queue's options.
const (
	// DefaultSuffix is the namespace suffix when WithSuffix is not given,
	// as in the Python redis-allocator.
	DefaultSuffix = "task-queue"
	// DefaultTimeout is a task's timeout when neither WithTimeout nor
	// WithDefaultTimeout is given.
	DefaultTimeout = 300 * time.Second
	// DefaultVisibilityTimeout is how long a claim lasts without a
	// heartbeat before the task is delivered again.
	DefaultVisibilityTimeout = 10 * time.Second
	// DefaultGracePeriod is how long Listen lets running tasks finish
	// after its context ends.
	DefaultGracePeriod = 5 * time.Second
	// DefaultMaxPayload is the largest params or result, in bytes.
	DefaultMaxPayload = 1 << 20
	// DefaultMaxLost is how many times a task's claim may expire (its
	// worker died or stalled) before the task is a dead letter.
	DefaultMaxLost = 5
	// DefaultDeadLetterTTL is how long dead letters are kept.
	DefaultDeadLetterTTL = 7 * 24 * time.Hour
	// DefaultBatching is the number of commands per Redis node a Queue
	// sends on their own before it batches further ones (WithBatching).
	DefaultBatching = 8
)

// TaskFunc runs a task and returns its result, which is stored as JSON
// (nil is stored as null). ctx ends when the task's expiry passes (cause
// ErrExpired), its caller cancels it (ErrCancelled), the claim is lost
// (ErrClaimLost) or the listener shuts down; context.Cause tells which.
type TaskFunc func(ctx context.Context, t *Task) (any, error)

// Option configures New.
type Option func(*config)

type config struct {
	suffix     string
	timeout    time.Duration
	visibility time.Duration
	grace      time.Duration
	maxPayload int
	maxLost    int
	deadTTL    time.Duration
	batch      int
	fn         TaskFunc
	logger     *slog.Logger
	backoff    func(attempt int) time.Duration
}

func newConfig(opts []Option) (config, error) {
	c := config{
		suffix: DefaultSuffix, timeout: DefaultTimeout, visibility: DefaultVisibilityTimeout,
		grace: DefaultGracePeriod, maxPayload: DefaultMaxPayload, maxLost: DefaultMaxLost,
		deadTTL: DefaultDeadLetterTTL, batch: DefaultBatching, backoff: DefaultBackoff,
	}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	switch {
	case c.timeout < time.Millisecond:
		return c, fmt.Errorf("%w: default timeout %v, must be ≥ 1ms", ErrInvalidArgument, c.timeout)
	case c.visibility < 100*time.Millisecond:
		return c, fmt.Errorf("%w: visibility timeout %v, must be ≥ 100ms", ErrInvalidArgument, c.visibility)
	case c.grace < 0:
		return c, fmt.Errorf("%w: negative grace period %v", ErrInvalidArgument, c.grace)
	case c.maxPayload < 1:
		return c, fmt.Errorf("%w: max payload %d, must be ≥ 1", ErrInvalidArgument, c.maxPayload)
	case c.maxLost < 1:
		return c, fmt.Errorf("%w: max lost %d, must be ≥ 1", ErrInvalidArgument, c.maxLost)
	case c.deadTTL < time.Second:
		return c, fmt.Errorf("%w: dead letter TTL %v, must be ≥ 1s", ErrInvalidArgument, c.deadTTL)
	case c.batch < 0:
		return c, fmt.Errorf("%w: negative batching %d", ErrInvalidArgument, c.batch)
	case c.backoff == nil:
		return c, fmt.Errorf("%w: nil retry back-off", ErrInvalidArgument)
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

// WithSuffix sets the namespace suffix (default DefaultSuffix). Every key
// of the queue shares the hash tag {<prefix>|<suffix>}.
func WithSuffix(suffix string) Option { return func(c *config) { c.suffix = suffix } }

// WithDefaultTimeout sets the timeout of tasks whose query or submission
// gives none (default DefaultTimeout). See WithTimeout.
func WithDefaultTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithTaskFunc sets the function that runs tasks in this process: for the
// policies that run locally, and on the listeners Listen starts.
func WithTaskFunc(f TaskFunc) Option { return func(c *config) { c.fn = f } }

// WithLogger sets the logger of background work (listeners, heartbeats,
// skipped tasks); the default discards.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithVisibilityTimeout sets how long a claim on a task lasts without a
// heartbeat (default DefaultVisibilityTimeout). A live worker extends the
// claims of its running tasks every third of it; the task of a worker that
// died is delivered again soon after its claim ends. It is also how long a
// listener stays visible to Auto after its last heartbeat. It must be at
// least 100 ms: a run whose heartbeat is not confirmed within nine tenths
// of it is cancelled (cause ErrClaimLost), which shorter timeouts would do
// to healthy runs on a loaded machine.
func WithVisibilityTimeout(d time.Duration) Option { return func(c *config) { c.visibility = d } }

// WithGracePeriod sets how long Listen lets running tasks finish after its
// context ends (default DefaultGracePeriod). Tasks still running then have
// their context cancelled and are queued again for another worker, without
// counting as an attempt.
func WithGracePeriod(d time.Duration) Option { return func(c *config) { c.grace = d } }

// WithMaxPayload sets the largest params and result, in bytes (default
// DefaultMaxPayload); see ErrPayloadTooLarge.
func WithMaxPayload(n int) Option { return func(c *config) { c.maxPayload = n } }

// WithMaxLost sets how many times a task's claim may expire before the
// task becomes a dead letter (default DefaultMaxLost), so that a task that
// kills its workers stops being delivered. Lost claims do not count as
// failed attempts.
func WithMaxLost(n int) Option { return func(c *config) { c.maxLost = n } }

// WithDeadLetterTTL sets how long dead letters are kept (default
// DefaultDeadLetterTTL).
func WithDeadLetterTTL(d time.Duration) Option { return func(c *config) { c.deadTTL = d } }

// WithBatching sets how the queue batches the commands of concurrent
// operations, as lock.WithBatching does: while maxInFlight commands to a
// node are on their way, further ones queue and leave together in one
// pipeline. Every operation is still one round trip. The default is
// DefaultBatching; 0 sends every command on its own.
func WithBatching(maxInFlight int) Option { return func(c *config) { c.batch = maxInFlight } }

// WithRetryBackoff sets the delay before the retry of a task that failed
// its attempt-th time (attempt ≥ 1); the default is DefaultBackoff.
func WithRetryBackoff(f func(attempt int) time.Duration) Option {
	return func(c *config) { c.backoff = f }
}

// DefaultBackoff waits 1 s before the first retry and doubles the delay
// with every further failure up to 1 min, with ±20 % jitter.
func DefaultBackoff(attempt int) time.Duration {
	d := time.Second << min(max(attempt-1, 0), 6)
	d = min(d, time.Minute)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Policy says where a query runs its task.
type Policy int

const (
	// Auto runs the task remotely when a listener of its name is alive
	// (as RemoteFirst), else locally. The check and the enqueue are one
	// atomic step.
	Auto Policy = iota
	// Local runs the task function in this process. The run is recorded
	// in Redis like a remote one (GetTask, progress, duplicate ids).
	Local
	// Remote queues the task for listeners and waits for its result.
	Remote
	// LocalFirst runs the task locally; when the local function fails,
	// the task is queued for listeners, from a clean state, and the query
	// waits for their result.
	LocalFirst
	// RemoteFirst queues the task for listeners; when no listener has
	// started it by the fallback point (WithFallbackAfter), or their run
	// fails, the query takes the task over and runs it locally. Taking
	// over and a listener's claim exclude each other atomically, so every
	// attempt runs in one place only: a task a listener started is left to
	// it (and its result awaited).
	RemoteFirst
)

func (p Policy) String() string {
	switch p {
	case Auto:
		return "auto"
	case Local:
		return "local"
	case Remote:
		return "remote"
	case LocalFirst:
		return "local-first"
	case RemoteFirst:
		return "remote-first"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// QueryOption configures Query and Submit.
type QueryOption func(*queryConfig)

type queryConfig struct {
	timeout     time.Duration
	policy      Policy
	once        bool
	maxAttempts int
	fallback    time.Duration
	progress    func(Progress)
	ranToken    string // the claim of this call's own failed local run (LocalFirst)
	inc         string // the incarnation of the task waited for (field rq; "" unknown)
	joined      bool   // the call joined the task (it did not create it)
}

// WithTimeout sets the task's timeout (default: the queue's, see
// WithDefaultTimeout). The task expires that long after it is created: it
// never starts afterwards, its context ends then, and Query waits at most
// that long. Its result is kept for as long again after it finishes.
func WithTimeout(d time.Duration) QueryOption { return func(c *queryConfig) { c.timeout = d } }

// WithPolicy sets where Query runs the task (default Auto; Submit always
// queues it for listeners).
func WithPolicy(p Policy) QueryOption { return func(c *queryConfig) { c.policy = p } }

// WithOnce consumes the task's record, and so its result, once the caller
// has read it: a later GetTask or Wait finds nothing, and a later
// query with the same id runs the task again. The calls that were waiting
// for that task when it was consumed, in any process, still get its
// result.
func WithOnce() QueryOption { return func(c *queryConfig) { c.once = true } }

// WithMaxAttempts sets how many times the task function may fail before
// the task is a dead letter (default 1: no retry). Failed attempts are
// retried by listeners after the queue's back-off (WithRetryBackoff).
func WithMaxAttempts(n int) QueryOption { return func(c *queryConfig) { c.maxAttempts = n } }

// WithFallbackAfter sets how long RemoteFirst (and Auto, when it queued
// the task) waits for a listener to start the task before it takes the
// task over to run it locally; the default is half the timeout.
func WithFallbackAfter(d time.Duration) QueryOption { return func(c *queryConfig) { c.fallback = d } }

// WithProgress calls f with the task's progress while Query or Wait waits:
// once with the progress saved so far, when there is any, and after every
// update. Updates that arrive faster than f returns are coalesced: f
// always sees the latest. f runs on the waiting goroutine.
func WithProgress(f func(Progress)) QueryOption { return func(c *queryConfig) { c.progress = f } }

func (q *Queue) queryConfig(opts []QueryOption) (queryConfig, error) {
	c := queryConfig{timeout: q.cfg.timeout, policy: Auto, maxAttempts: 1}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	switch {
	case c.timeout < time.Millisecond:
		return c, fmt.Errorf("%w: timeout %v, must be ≥ 1ms", ErrInvalidArgument, c.timeout)
	case c.policy < Auto || c.policy > RemoteFirst:
		return c, fmt.Errorf("%w: unknown policy %d", ErrInvalidArgument, int(c.policy))
	case c.maxAttempts < 1:
		return c, fmt.Errorf("%w: max attempts %d, must be ≥ 1", ErrInvalidArgument, c.maxAttempts)
	case c.fallback < 0:
		return c, fmt.Errorf("%w: negative fallback %v", ErrInvalidArgument, c.fallback)
	}
	if c.fallback == 0 || c.fallback > c.timeout {
		c.fallback = c.timeout / 2
	}
	return c, nil
}
